/**
 * Composes the proxy from its parts (listener, HTTP routing, plugins, sessions), prints the
 * start-up banner, and owns the lifecycle: `--run-once`, `--timeout`, `--idle-timeout` and
 * graceful shutdown (stop accepting, close sessions with 1001, wait briefly, exit).
 *
 * @module
 */

import type { Config } from "./config.ts";
import { checkOrigin } from "./auth/origin.ts";
import { errorMessage, HttpError } from "./errors.ts";
import { closeHttpServer, createHttpServer, serveConnection } from "./http/http.ts";
import { connectionInfo, Listener } from "./listen/listener.ts";
import { getLog, type Log, TRAFFIC_LEGEND, TrafficLog } from "./ops/log.ts";
import type { HandshakeFailure, Metrics } from "./ops/metrics.ts";
import { Admission } from "./ops/admission.ts";
import { LiveList } from "./ops/live_list.ts";
import type { PumpHandle } from "./session/pump.ts";
import { runSession } from "./session/session.ts";
import { parseTrustedProxies } from "./listen/client_address.ts";
import { describeTarget } from "./targets/target.ts";
import type { AuthPlugin, RequestInfo, Target, TokenPlugin } from "./types.ts";
import { extractToken, lookupTarget } from "./tokens/mod.ts";
import { createWebHandler } from "./http/web.ts";
import {
  ProgramConnection,
  programEnv,
  runningPrograms,
  type StdioConfig,
  stopPrograms,
} from "./stdio/mod.ts";

/** A running proxy. */
export interface RunningServer {
  /** The bound address: `host:port` or the unix socket path. */
  readonly address: string;
  /** Resolves with the exit code once the server has stopped. */
  readonly finished: Promise<number>;
  /**
   * Stops gracefully: no new connections, sessions closed with 1001. With `delayMs`
   * (`--shutdown-delay`), `/healthz` answers 503 at once and the drain starts `delayMs` later; a
   * further call during the delay ends it.
   */
  shutdown(reason: string, delayMs?: number): Promise<void>;
}

/** Plugins and providers the server is built with (loaded by `main.ts`). */
export interface ServerParts {
  readonly tokens?: TokenPlugin | undefined;
  readonly auth?: AuthPlugin | undefined;
  readonly tls?: import("./listen/listener.ts").TlsProvider | undefined;
  /** Extra banner lines from the parts (e.g. TLS status). */
  readonly bannerLines?: readonly string[];
  /** Wrap mode: the loopback port the wrapped command was moved to (`src/wrap/mod.ts`). */
  readonly wrap?: WrapTarget | undefined;
  /** `--metrics`: the counters sessions and refusals feed (absent: nothing is counted). */
  readonly metrics?: Metrics | undefined;
  /** `--metrics`: the bound metrics address, for the banner. */
  readonly metricsAddress?: string | undefined;
}

/** What an admitted upgrade carries to its session. */
interface Admitted {
  readonly target: Target | undefined;
  /** Gives the admission slot back; safe to call more than once. */
  readonly release: () => void;
}

/** Where a wrapped command listens, and how log lines name it. */
export interface WrapTarget {
  /** `127.0.0.1:<port>`. */
  readonly target: Target;
  /** `'<command line>' (port N)`. */
  readonly description: string;
}

/** How long sessions get to close after a shutdown starts. */
const SHUTDOWN_GRACE_MS = 3000;
/**
 * In a drain, a connection that has sent nothing this long after its accept is closed (a
 * preconnect or a TCP check): a client's request follows its connect within a round trip.
 */
const SILENT_GRACE_MS = 1000;

/** How a process of a `--workers` group starts its server. */
export interface StartOptions {
  /** Bind with `SO_REUSEPORT` (every process of a `--workers` group). @default false */
  readonly reusePort?: boolean;
  /** Print the start-up banner (only the first process of a group does). @default true */
  readonly banner?: boolean;
}

/** Starts the proxy described by `config`. */
export async function startServer(
  config: Config,
  parts: ServerParts = {},
  start: StartOptions = {},
): Promise<RunningServer> {
  const log = getLog("proxy");
  const traffic = config.log.traffic ? new TrafficLog() : undefined;
  /** An array, not a Set: src/ops/live_list.ts says why. */
  const sessions = new LiveList<PumpHandle>();
  let stopping = false;
  let resolveFinished: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => (resolveFinished = resolve));
  let sessionCount = 0;
  const admission = new Admission({
    ...config.admission,
    ...(parts.metrics ? { onRefused: parts.metrics.connectionRefused.bind(parts.metrics) } : {}),
  });

  const auth = parts.auth;
  const metrics = parts.metrics;
  const web = config.web.root === undefined ? undefined : createWebHandler(
    config.web,
    config.web.auth && auth ? { authorize: (request) => auth.authenticate(request) } : {},
  );
  const http = createHttpServer({
    ...(web ? { onRequest: web } : {}),
    maxMessageSize: config.limits.maxMessageSize,
    permessageDeflate: config.permessageDeflate,
    log,
    ...(metrics
      ? { onRefused: (reason: HandshakeFailure) => metrics.handshakeFailed(reason) }
      : {}),
    async admit(request): Promise<Admitted> {
      // Before the token lookup and the dial: a refused client costs neither.
      const release = admission.acquire(request);
      try {
        return { target: await admit(config, parts, request), release };
      } catch (error) {
        release();
        throw error;
      }
    },
    onAbandoned: (admitted) => (admitted as Admitted).release(),
    onWebSocket(channel, request, admitted, sessionLog) {
      const { target, release } = admitted as Admitted;
      const id = connectionInfo(channel.socket)?.id ?? 0;
      sessionCount++;
      void runSession(channel, {
        config,
        target,
        program: config.stdio &&
          programStarter(config.stdio, request, listener.address, sessionLog),
        id,
        log: sessionLog,
        traffic,
        ...(parts.wrap
          ? { connectingMessage: `connecting to command: ${parts.wrap.description}` }
          : {}),
        bytes: metrics?.bytes,
        onStart: (handle) => {
          const slot = sessions.add(handle);
          const ended = metrics?.sessionStarted();
          void handle.done.then((end) => {
            sessions.remove(slot);
            ended?.(end);
          });
          if (stopping) handle.shutdown();
        },
      }).finally(release).then((end) => {
        if (end === "connect-failed") metrics?.targetConnectFailed();
        sessionCount--;
        if (config.limits.runOnce) void shutdown("--run-once: the session has ended");
        checkDrained();
      });
    },
  }, config.limits.headerTimeout * 1000);

  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  const armIdleTimer = (count: number) => {
    clearTimeout(idleTimer);
    if (config.limits.idleTimeout <= 0 || count > 0 || stopping) return;
    idleTimer = setTimeout(
      () => void shutdown(`No connections for ${config.limits.idleTimeout} s (--idle-timeout)`),
      config.limits.idleTimeout * 1000,
    );
  };

  const listener = await Listener.start({
    listen: config.listen,
    headerTimeoutMs: config.limits.headerTimeout * 1000,
    tls: parts.tls,
    certPath: config.tls.cert,
    sslOnly: config.tls.sslOnly,
    ...(config.trustedProxy
      ? { trustedProxies: parseTrustedProxies(config.trustedProxy.join(",")) }
      : {}),
    proxyProtocol: config.proxyProtocol,
    log,
    onConnection: (socket, _info, head) => {
      serveConnection(http, socket, head);
    },
    reusePort: start.reusePort ?? false,
    ...(metrics
      ? {
        onTlsFailure: metrics.tlsFailed.bind(metrics),
        onHeaderTimeout: metrics.handshakeFailed.bind(metrics),
      }
      : {}),
    onCountChange: (count) => {
      armIdleTimer(count);
      checkDrained();
    },
  });
  armIdleTimer(0);
  // /healthz answers 200 only from here on: a balancer never sends to a port not yet listening.
  if (metrics) metrics.listening = true;

  if (start.banner ?? true) printBanner(log, config, listener.address, parts);

  let acceptTimer: ReturnType<typeof setTimeout> | undefined;
  if (config.limits.timeout > 0) {
    acceptTimer = setTimeout(() => {
      log.info(`--timeout: no new connections after ${config.limits.timeout} s`);
      stopping = true;
      listener.stopAccepting();
      closeHttpServer(http);
      checkDrained();
    }, config.limits.timeout * 1000);
  }

  function checkDrained(): void {
    if (!stopping || sessionCount > 0 || listener.connectionCount > 0) return;
    void finish();
  }

  let finishing: Promise<void> | undefined;
  function finish(): Promise<void> {
    finishing ??= (async () => {
      clearTimeout(idleTimer);
      clearTimeout(acceptTimer);
      listener.stopAccepting();
      closeHttpServer(http);
      listener.destroyAll();
      traffic?.flush();
      // --stdio: every program is killed (SIGTERM, then SIGKILL after the grace) and reaped.
      await stopPrograms();
      await parts.tokens?.close?.().catch((error) =>
        log.error(`Closing the token plugin failed: ${errorMessage(error)}`)
      );
      resolveFinished(0);
    })();
    return finishing;
  }

  let delayed: Promise<void> | undefined;
  let endDelay: (() => void) | undefined;
  function shutdown(reason: string, delayMs = 0): Promise<void> {
    if (delayed) {
      endDelay?.();
      return delayed;
    }
    if (delayMs <= 0 || stopping) return drain(reason);
    // --shutdown-delay: still serving while the balancer's health check sees the 503.
    if (metrics) metrics.draining = true;
    log.info(`${reason} in ${delayMs / 1000} s (--shutdown-delay); /healthz answers 503 now`);
    delayed = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, delayMs);
      endDelay = () => {
        clearTimeout(timer);
        resolve();
      };
    }).then(() => drain(reason));
    return delayed;
  }

  async function drain(reason: string): Promise<void> {
    if (stopping && finishing) return finishing;
    stopping = true;
    if (metrics) metrics.draining = true;
    log.info(reason);
    listener.stopAccepting();
    listener.closeSilent(SILENT_GRACE_MS);
    // Kept-alive `--web` connections: idle ones close now, busy ones after their response.
    closeHttpServer(http);
    for (const session of sessions.values()) session.shutdown();
    // Connections accepted just before the listener closed can still become sessions (closed
    // with 1001 as they start): the drain waits for every connection, not only today's sessions,
    // so none is reset mid-handshake or before its close frame is out (tests/takeover_test.ts).
    checkDrained();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      finished,
      new Promise((resolve) => (timer = setTimeout(resolve, SHUTDOWN_GRACE_MS))),
    ]);
    clearTimeout(timer);
    await finish();
  }

  return { address: listener.address, finished, shutdown };
}

/** Origin, token and auth checks of an upgrade; resolves to the session's target. */
async function admit(
  config: Config,
  parts: ServerParts,
  request: RequestInfo,
): Promise<Target | undefined> {
  const refused = (reason: HandshakeFailure) => (error: unknown): never => {
    parts.metrics?.handshakeFailed(reason);
    throw error;
  };
  try {
    if (config.auth.origins.length > 0) checkOrigin(config.auth.origins, request);
  } catch (error) {
    refused("origin")(error);
  }
  const target = await findTarget(config, parts, request).catch(refused("token"));
  await parts.auth?.authenticate(request, target).catch(refused("auth"));
  return target;
}

/**
 * The target of an upgrade: fixed, looked up by token, or the wrapped command; `undefined` with
 * `--stdio` (the session starts a program instead).
 */
async function findTarget(
  config: Config,
  parts: ServerParts,
  request: RequestInfo,
): Promise<Target | undefined> {
  let target: Target;
  if (config.target.kind === "fixed") {
    target = config.target.target;
  } else if (config.target.kind === "tokens" && parts.tokens) {
    const token = extractToken(request.path, request.headers, config.target.hostToken);
    if (token === undefined) throw new HttpError(404, "Token not present");
    const found = await lookupTarget(parts.tokens, token, request);
    if (found === null) throw new HttpError(404, `Token '${token}' not found`);
    target = found;
  } else if (config.target.kind === "wrap" && parts.wrap) {
    target = parts.wrap.target;
  } else if (config.stdio) {
    const max = config.stdio.maxForks;
    if (max > 0 && runningPrograms() >= max) {
      throw new HttpError(503, `Too many programs running (--max-forks ${max})`);
    }
    return undefined;
  } else {
    throw new HttpError(503, "No target configured");
  }
  return target;
}

/** `--stdio`: starts the session's program with its CGI environment. */
function programStarter(stdio: StdioConfig, request: RequestInfo, address: string, log: Log) {
  const port = Number(/:(\d+)$/.exec(address)?.[1] ?? 0);
  return {
    name: `'${stdio.command.join(" ")}'`,
    start: () =>
      ProgramConnection.spawn({
        config: stdio,
        env: programEnv(request, port, stdio.envPass),
        log,
      }),
  };
}

function printBanner(log: Log, config: Config, address: string, parts: ServerParts): void {
  const lines = ["WebSocket server settings:"];
  lines.push(
    config.listen.kind === "unix"
      ? `  - Listen on unix socket ${address}`
      : `  - Listen on ${address}`,
  );
  if (config.web.root !== undefined) {
    lines.push(
      config.web.fileOnly
        ? `  - Web server (no directory listings). Web root: ${config.web.root}`
        : `  - Web server. Web root: ${config.web.root}`,
    );
  }
  if (parts.bannerLines) lines.push(...parts.bannerLines);
  else if (!parts.tls) lines.push("  - No SSL/TLS support (no cert file)");
  if (parts.metricsAddress !== undefined) {
    lines.push(`  - Metrics on ${parts.metricsAddress} (/metrics, /healthz)`);
  }
  if (config.log.record !== undefined) lines.push(`  - Recording to '${config.log.record}.*'`);
  const ssl = config.targetTls.enabled ? " (using SSL)" : "";
  const target = config.target;
  if (target.kind === "fixed") {
    const destination = target.target.kind === "unix"
      ? `unix socket ${target.target.path}`
      : describeTarget(target.target);
    lines.push(`  - proxying from ${address} to ${destination}${ssl}`);
  } else if (target.kind === "tokens") {
    lines.push(`  - proxying from ${address} to targets generated by ${target.plugin}${ssl}`);
  } else if (target.kind === "stdio") {
    lines.push(
      `  - proxying from ${address} to '${target.command.join(" ")}' over stdio, one per session`,
    );
  } else {
    const command = parts.wrap?.description ?? `'${target.command.join(" ")}'`;
    lines.push(`  - proxying from ${address} to ${command}${ssl}`);
  }
  if (config.log.traffic) lines.push(TRAFFIC_LEGEND);
  for (const line of lines) log.info(line);
}
