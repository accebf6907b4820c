/**
 * One WebSocket session: dial the target (close 1011 "Failed to connect to downstream server"
 * when that fails, as upstream), open the recording, run the pump, log the end: one info line per
 * session, with its bytes both ways, duration and close code.
 *
 * @module
 */

import type { WebSocketChannel } from "../websocket/channel.ts";
import type { Config } from "../config.ts";
import { errorMessage } from "../errors.ts";
import type { Log, TrafficLog } from "../ops/log.ts";
import type { ByteCounts } from "../ops/metrics.ts";
import { pump, type PumpEnd, type PumpHandle } from "./pump.ts";
import { Recording } from "./record.ts";
import { describeTarget, dialTarget } from "../targets/target.ts";
import type { Target, TargetConnection } from "../types.ts";

/** Options of {@link runSession}. */
export interface SessionOptions {
  readonly config: Config;
  /** Where this session goes; `undefined` with `program`. */
  readonly target: Target | undefined;
  /** `--stdio`: the session's program instead of a target (`src/stdio/`). */
  readonly program?: { readonly name: string; start(): TargetConnection } | undefined;
  /** Sequence number of the connection (names the `--record` file). */
  readonly id: number;
  /** Session-scoped logger. */
  readonly log: Log;
  /** Shared traffic legend writer, when `--traffic` is on. */
  readonly traffic: TrafficLog | undefined;
  /** The "connecting to" log line, when the target has a better name (wrap mode). */
  readonly connectingMessage?: string | undefined;
  /** Called with the pump's handle once the target is connected. */
  readonly onStart?: (handle: PumpHandle) => void;
  /** Payload byte counters, when `--metrics` is on. */
  readonly bytes?: ByteCounts | undefined;
}

/** Runs a session to its end; never throws. */
export async function runSession(
  channel: WebSocketChannel,
  options: SessionOptions,
): Promise<PumpEnd | "connect-failed"> {
  const { config, target, program } = options;
  const started = performance.now();
  const name = program?.name ?? (target ? describeTarget(target) : "");
  const log = options.log.child({ session: options.id, target: name });
  const ended = (fromClient: number, fromTarget: number, closeCode: number) =>
    logSessionEnd(log, name, {
      bytes_client_to_target: fromClient,
      bytes_target_to_client: fromTarget,
      duration_s: Math.round(performance.now() - started) / 1000,
      close_code: closeCode,
    });
  const tlsSuffix = config.targetTls.enabled && target?.kind === "tcp" ? " (using SSL)" : "";
  log.infoBatched(
    program !== undefined
      ? `starting program: ${name}`
      : options.connectingMessage !== undefined
      ? `${options.connectingMessage}${tlsSuffix}`
      : target?.kind === "unix"
      ? `connecting to unix socket: ${target.path}${tlsSuffix}`
      : `connecting to: ${name}${tlsSuffix}`,
  );
  // Client frames that arrive while dialling wait in the paused socket until the pump starts.
  let connection: TargetConnection;
  try {
    connection = program !== undefined ? program.start() : await dialTarget(target as Target, {
      timeoutMs: config.limits.connectTimeout * 1000,
      tls: config.targetTls,
    });
  } catch (error) {
    log.info(`Failed to connect to ${name}: ${errorMessage(error)}`);
    channel.start({ onData() {}, onPong() {}, onClose() {} });
    channel.close(1011, "Failed to connect to downstream server");
    ended(0, 0, 1011);
    return "connect-failed";
  }
  if (!channel.isOpen) {
    connection.close();
    // The client left while the target was dialled, without a close the session could read.
    ended(0, 0, 1006);
    return "client";
  }
  let recording: Recording | undefined;
  if (config.log.record !== undefined) {
    const path = `${config.log.record}.${options.id}`;
    recording = await Recording.open(path).catch((error) => {
      log.error(`Cannot record to '${path}': ${errorMessage(error)}`);
      return undefined;
    });
  }
  const handle = pump(channel, connection, {
    strictBinary: config.strictBinary,
    heartbeat: config.limits.heartbeat,
    inactivityTimeout: config.limits.inactivityTimeout,
    recording,
    traffic: options.traffic,
    log,
    targetName: name,
    totals: options.bytes,
  });
  options.onStart?.(handle);
  const end = await handle.done;
  await recording?.close();
  log.debug(`${name}: Closed target (${end})`);
  ended(handle.bytesFromClient, handle.bytesFromTarget, handle.closeCode);
  return end;
}

/** The end of a session, in both log formats. */
interface SessionEnd {
  readonly bytes_client_to_target: number;
  readonly bytes_target_to_client: number;
  readonly duration_s: number;
  readonly close_code: number;
}

function logSessionEnd(log: Log, name: string, end: SessionEnd): void {
  // Batched: one line per session is on the set-up path (see src/ops/log.ts).
  log.infoBatched(
    `${name}: session ended after ${end.duration_s.toFixed(1)} s, ` +
      `${end.bytes_client_to_target} bytes from client, ` +
      `${end.bytes_target_to_client} bytes from target, close ${end.close_code}`,
    { ...end },
  );
}
