/**
 * The two-way copy between a WebSocket client and a target connection, with backpressure in both
 * directions: a slow target pauses reading from the client socket, a slow client pauses
 * reading from the target (the read loop waits for the client socket's `drain`). Either side
 * ending tears down both; no queue grows past its high-water mark.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { WebSocketChannel } from "./channel.ts";
import { SocketConnection } from "./socket_target.ts";
import type { DataOpcode } from "./framer.ts";
import type { Log, TrafficLog } from "./log.ts";
import type { Recording } from "./record.ts";
import type { TargetConnection } from "./types.ts";

/** Largest binary message sent to the client: one target read, as upstream (`recv(65536)`). */
export const MAX_CLIENT_MESSAGE = 64 * 1024;

/** Bytes queued towards the target before the client is paused. */
const TARGET_HIGH_WATER = 1024 * 1024;
/** Bytes queued towards the target at which the client is resumed. */
const TARGET_LOW_WATER = 256 * 1024;
/** Bytes buffered towards the client before target reads wait for `drain`. */
const CLIENT_HIGH_WATER = 1024 * 1024;
/** Pieces at least this large are written on their own, never copied into a batch. */
const COALESCE_PIECE = 16 * 1024;
/** Largest single write to the target when several small messages are queued. */
const COALESCE_LIMIT = 256 * 1024;

/** Options of {@link pump}. */
export interface PumpOptions {
  /** Close text messages with 1003 instead of forwarding their UTF-8 bytes. */
  readonly strictBinary: boolean;
  /** Ping interval in seconds (0: off); a peer silent for twice that is dropped. */
  readonly heartbeat: number;
  /** Session recording, when `--record` is on. */
  readonly recording: Recording | undefined;
  /** Traffic legend, when `--traffic` is on. */
  readonly traffic: TrafficLog | undefined;
  /** Session-scoped logger. */
  readonly log: Log;
  /** Description of the target for log lines. */
  readonly targetName: string;
}

/** How a session ended. */
export type PumpEnd = "client" | "target" | "target-error" | "shutdown" | "heartbeat";

/** A running session's handle. */
export interface PumpHandle {
  /** Resolves when both sides are closed. */
  readonly done: Promise<PumpEnd>;
  /** Closes the session with 1001 (server going away). */
  shutdown(): void;
}

/** Copies data both ways between the client `channel` and `target` until either side ends. */
export function pump(
  channel: WebSocketChannel,
  target: TargetConnection,
  options: PumpOptions,
): PumpHandle {
  const { log, traffic, recording } = options;
  let end: PumpEnd | undefined;
  let targetClosed = false;
  const finish = (reason: PumpEnd) => (end ??= reason);

  // Client → target: a queue drained by one writer; the client is paused above the high-water
  // mark, and small pieces queued together go out in one write. Pieces are views into the
  // socket's chunks (unmasked in place), so nothing is copied unless coalesced.
  const queue: Uint8Array[] = [];
  let queued = 0;
  let writing: Promise<void> | undefined;
  let paused = false;

  const closeTarget = () => {
    if (targetClosed) return;
    targetClosed = true;
    try {
      target.close();
    } catch {
      // Already closed by the peer.
    }
  };

  const writeQueue = async () => {
    try {
      while (queue.length > 0 && !targetClosed) {
        const data = takeBatch(queue);
        await writeAll(target, data);
        queued -= data.length;
        traffic?.mark(">");
        if (paused && queued <= TARGET_LOW_WATER) {
          paused = false;
          channel.resume();
        }
      }
    } catch (error) {
      if (!targetClosed) {
        log.debug(`${options.targetName}: Target write failed: ${String(error)}`);
        finish("target-error");
        channel.close(1011, "Target connection failed");
        closeTarget();
      }
    } finally {
      writing = undefined;
    }
  };

  // Heartbeat: ping every N seconds; no pong (or any other sign of life) within 2N drops the peer.
  let lastSeen = performance.now();
  const heartbeat = options.heartbeat > 0
    ? setInterval(() => {
      if (performance.now() - lastSeen > 2 * options.heartbeat * 1000) {
        log.info(`Client sent no pong for ${2 * options.heartbeat} s: closing the session`);
        finish("heartbeat");
        channel.terminate();
        return;
      }
      channel.ping();
    }, options.heartbeat * 1000)
    : undefined;

  const clientClosed = new Promise<void>((resolve) => {
    channel.start({
      onData(payload: Uint8Array, opcode: DataOpcode, fin: boolean) {
        if (options.heartbeat > 0) lastSeen = performance.now();
        if (opcode === 1 && options.strictBinary) {
          channel.close(1003, "Unsupported: Text frames are not supported");
          return;
        }
        if (fin) traffic?.mark("}");
        if (payload.length === 0 || targetClosed) return;
        recording?.fromClient(payload);
        queue.push(payload);
        queued += payload.length;
        if (!paused && queued > TARGET_HIGH_WATER) {
          paused = true;
          channel.pause();
        }
        writing ??= writeQueue();
      },
      onPong() {
        lastSeen = performance.now();
      },
      onClose(code: number) {
        finish("client");
        log.debug(`${options.targetName}: Client closed connection (code ${code})`);
        clearInterval(heartbeat);
        // Deliver what the client sent before its close, then close the target.
        void (async () => {
          while (writing) await writing;
          closeTarget();
          resolve();
        })();
      },
    });
  });

  // Target → client: each chunk the target delivers (at most 64 KiB) becomes one binary message;
  // reads wait while the client is slow. No buffer is held while the target is quiet.
  const targetDone = (async () => {
    const reader = chunkReader(target);
    try {
      while (!targetClosed) {
        const chunk = await reader();
        if (chunk === null) break;
        traffic?.mark("{");
        recording?.toClient(chunk);
        if (!channel.isOpen) break;
        // The chunk is ours alone (see chunkReader): its memory goes back as soon as it is sent.
        channel.send(chunk, true);
        traffic?.mark("<");
        if (channel.bufferedAmount > CLIENT_HIGH_WATER) await channel.drained();
      }
      if (!targetClosed) {
        log.debug(`${options.targetName}: Target closed connection`);
        finish("target");
        channel.close(1000, "Target closed");
      }
    } catch (error) {
      if (!targetClosed) {
        log.debug(`${options.targetName}: Target read failed: ${String(error)}`);
        finish("target-error");
        channel.close(1011, "Target connection failed");
      }
    }
  })();

  const done = Promise.all([clientClosed, targetDone]).then(() => {
    closeTarget();
    return end ?? "client";
  });

  return {
    done,
    shutdown() {
      finish("shutdown");
      channel.close(1001, "Server shutting down");
    },
  };
}

/**
 * Reads the target a chunk at a time: without copying from a {@link SocketConnection}, otherwise
 * through a per-session buffer (copied out, since the chunk outlives the next read).
 */
function chunkReader(target: TargetConnection): () => Promise<Uint8Array | null> {
  if (target instanceof SocketConnection) return () => target.readChunk(MAX_CLIENT_MESSAGE);
  let buffer: Uint8Array | undefined;
  return async () => {
    buffer ??= new Uint8Array(MAX_CLIENT_MESSAGE);
    const count = await target.read(buffer);
    return count === null ? null : buffer.slice(0, count);
  };
}

function takeBatch(queue: Uint8Array[]): Uint8Array {
  const first = queue.shift() as Uint8Array;
  // Large pieces go out as they are: copying them costs more than the extra write.
  if (queue.length === 0 || first.length >= COALESCE_PIECE) return first;
  let size = first.length;
  let count = 0;
  while (count < queue.length) {
    const length = (queue[count] as Uint8Array).length;
    if (length >= COALESCE_PIECE || size + length > COALESCE_LIMIT) break;
    size += length;
    count++;
  }
  if (count === 0) return first;
  const batch = Buffer.allocUnsafe(size);
  batch.set(first, 0);
  let offset = first.length;
  for (const part of queue.splice(0, count)) {
    batch.set(part, offset);
    offset += part.length;
  }
  return batch;
}

async function writeAll(target: TargetConnection, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await target.write(data.subarray(offset));
}
