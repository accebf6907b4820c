/**
 * The two-way copy between a WebSocket client and a target connection, with backpressure in both
 * directions: a slow target pauses reading from the client socket, a slow client pauses
 * reading from the target (until the client socket's `drain`). Either side ending tears down
 * both; no queue grows past its high-water mark. With node:net targets (the usual TCP case) both
 * directions are event-driven, without a promise per message.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { WebSocketChannel } from "../websocket/channel.ts";
import { releaseBuffer } from "../websocket/buffers.ts";
import { COALESCE_LIMIT, COALESCE_PIECE, SocketConnection } from "../targets/socket_target.ts";
import type { DataOpcode } from "../websocket/framer.ts";
import type { Log, TrafficLog } from "../ops/log.ts";
import type { ByteCounts as ByteTotals, SessionEnd } from "../ops/metrics.ts";
import type { Recording } from "./record.ts";
import type { TargetConnection } from "../types.ts";

/**
 * Largest binary message sent to the client, as upstream's `recv(65536)`: a larger target read
 * (the epoll loop reads up to 256 KiB while the target is ahead) goes out as several.
 */
export const MAX_CLIENT_MESSAGE = 64 * 1024;

/** Bytes queued towards the target before the client is paused. */
const TARGET_HIGH_WATER = 1024 * 1024;
/** Bytes queued towards the target at which the client is resumed. */
const TARGET_LOW_WATER = 256 * 1024;
/** Bytes buffered towards the client before target reads wait for `drain`. */
const CLIENT_HIGH_WATER = 1024 * 1024;
/**
 * Bytes in the splice pipe towards the client before target reads wait for `drain`: room is left
 * for one more move of 64 KiB in the 256 KiB pipe (src/ops/epoll.ts).
 */
const SPLICE_HIGH_WATER = 128 * 1024;
/** Client chunks at least this large are released as soon as their pieces are written. */
const RELEASE_CHUNK = 16 * 1024;

/** Ends each client message in line mode (`--stdio-text`). */
const NEWLINE = new Uint8Array([0x0a]);

/** Options of {@link pump}. */
export interface PumpOptions {
  /** Close text messages with 1003 instead of forwarding their UTF-8 bytes. */
  readonly strictBinary: boolean;
  /** Ping interval in seconds (0: off); a peer silent for twice that is dropped. */
  readonly heartbeat: number;
  /** Seconds without payload either way after which the session is closed with 1001 (0: off). */
  readonly inactivityTimeout: number;
  /** Session recording, when `--record` is on. */
  readonly recording: Recording | undefined;
  /** Traffic legend, when `--traffic` is on. */
  readonly traffic: TrafficLog | undefined;
  /** Session-scoped logger. */
  readonly log: Log;
  /** Description of the target for log lines. */
  readonly targetName: string;
  /** Payload byte counters, when `--metrics` is on. */
  readonly totals?: ByteTotals | undefined;
}

/** How a session ended: the reasons of `websockify_sessions_ended_total` (src/ops/metrics.ts). */
export type PumpEnd = SessionEnd;

/** A running session's handle. */
export interface PumpHandle {
  /** Resolves when both sides are closed. */
  readonly done: Promise<PumpEnd>;
  /** Closes the session with 1001 (server going away). */
  shutdown(): void;
  /** Payload bytes forwarded from the client to the target so far. */
  readonly bytesFromClient: number;
  /** Bytes forwarded from the target to the client so far. */
  readonly bytesFromTarget: number;
  /**
   * The session's close code: the one the proxy sent when it closed first, else the client's
   * (1005 none, 1006 dropped without a close frame). Final once `done` has resolved.
   */
  readonly closeCode: number;
}

/** Bytes forwarded each way: a plain add per chunk on the hot path. */
interface ByteCounts {
  fromClient: number;
  fromTarget: number;
}

/** Copies data both ways between the client `channel` and `target` until either side ends. */
export function pump(
  channel: WebSocketChannel,
  target: TargetConnection,
  options: PumpOptions,
): PumpHandle {
  const { log, traffic, recording, totals } = options;
  let end: PumpEnd | undefined;
  let targetClosed = false;
  const finish = (reason: PumpEnd) => (end ??= reason);
  const bytes: ByteCounts = { fromClient: 0, fromTarget: 0 };
  const codes: CloseCodes = { sent: undefined, client: 1006 };
  const closeClient = (code: number, reason: string) => {
    if (channel.isOpen) codes.sent ??= code;
    channel.close(code, reason);
  };

  const closeTarget = () => {
    if (targetClosed) return;
    targetClosed = true;
    try {
      target.close();
    } catch {
      // Already closed by the peer.
    }
  };
  const targetFailed = (what: string, error: unknown) => {
    if (targetClosed) return;
    log.debug(`${options.targetName}: Target ${what} failed: ${String(error)}`);
    finish("target_error");
    closeClient(1011, "Target connection failed");
    closeTarget();
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

  const seconds = options.inactivityTimeout;
  const inactivity = inactivityTimer(seconds, bytes, () => {
    // A session already ending for another reason (in its close handshake) is left to it.
    if (end !== undefined) return;
    log.info(`No data either way for ${seconds} s: closing the session (--inactivity-timeout)`);
    finish("inactivity");
    closeClient(1001, `Idle for ${seconds} s`);
    // Nothing is in flight; a vanished client must not hold the target for the close timeout.
    closeTarget();
  });

  // Client data is read into the unmask's memory and written to the target from there where
  // nothing keeps a view of it past its chunk: the target socket copies what it must queue (set
  // first: reads are borrowed only once it holds), the channel a fragmented message's held
  // pieces; --record keeps what it is given. releaseBuffer leaves borrowed chunks alone (they
  // never span their buffer).
  if (target instanceof SocketConnection && recording === undefined && target.copyQueuedWrites()) {
    channel.borrowReads();
  }
  const toTarget = target instanceof SocketConnection
    ? socketWriter(target, channel, traffic, targetFailed)
    : queueWriter(target, channel, traffic, targetFailed, () => targetClosed);

  const clientClosed = new Promise<void>((resolve) => {
    channel.start({
      onData(payload: Uint8Array, opcode: DataOpcode, fin: boolean, owned?: boolean) {
        if (options.heartbeat > 0) lastSeen = performance.now();
        if (opcode === 1 && options.strictBinary) {
          closeClient(1003, "Unsupported: Text frames are not supported");
          return;
        }
        if (fin) traffic?.mark("}");
        recording?.fromClient(payload, fin);
        if (targetClosed) return;
        if (payload.length > 0) {
          if (totals) totals.clientToTarget += payload.length;
          bytes.fromClient += payload.length;
          toTarget.add(payload, owned);
        }
        if (fin && target.lines) toTarget.add(NEWLINE);
      },
      onChunkEnd(chunk: Uint8Array | undefined) {
        if (!targetClosed) toTarget.flush(chunk);
      },
      onPong() {
        lastSeen = performance.now();
      },
      onClose(code: number) {
        codes.client = code;
        finish("client");
        log.debug(`${options.targetName}: Client closed connection (code ${code})`);
        clearInterval(heartbeat);
        // Deliver what the client sent before its close, then close the target.
        void toTarget.settled().then(() => {
          closeTarget();
          resolve();
        });
      },
    });
  });

  const targetEnded = (error: Error | undefined) => {
    if (targetClosed) return;
    if (error) return targetFailed("read", error);
    log.debug(`${options.targetName}: Target closed connection`);
    finish("target");
    const frame = target.endFrame?.() ?? { code: 1000, reason: "Target closed" };
    closeClient(frame.code, frame.reason);
  };
  const targetDone = target instanceof SocketConnection
    ? streamTarget(target, channel, options, bytes, targetEnded)
    : readTarget(target, channel, options, bytes, targetEnded, () => targetClosed);

  const done = Promise.all([clientClosed, targetDone]).then(() => {
    clearInterval(inactivity);
    closeTarget();
    return end ?? "client";
  });

  return new Handle(done, bytes, codes, () => {
    finish("shutdown");
    closeClient(1001, "Server shutting down");
  });
}

/** The close codes of a session: the one the proxy sent first, and the client's. */
interface CloseCodes {
  sent: number | undefined;
  client: number;
}

/**
 * A session's {@link PumpHandle}: a class, because an object literal with getters costs V8 a map
 * of its own per object, in the old generation, and that map's getters hold the whole session
 * there until the next full GC (docs/decisions.md, "Set-up: what each connection leaves to the
 * full GC").
 */
class Handle implements PumpHandle {
  readonly done: Promise<PumpEnd>;
  readonly #bytes: ByteCounts;
  readonly #codes: CloseCodes;
  readonly #shutdown: () => void;

  constructor(done: Promise<PumpEnd>, bytes: ByteCounts, codes: CloseCodes, shutdown: () => void) {
    this.done = done;
    this.#bytes = bytes;
    this.#codes = codes;
    this.#shutdown = shutdown;
  }

  shutdown(): void {
    this.#shutdown();
  }

  get bytesFromClient(): number {
    return this.#bytes.fromClient;
  }

  get bytesFromTarget(): number {
    return this.#bytes.fromTarget;
  }

  get closeCode(): number {
    return this.#codes.sent ?? this.#codes.client;
  }
}

/** Checks per timeout: the session closes between 1 and 1.25 timeouts after its last payload. */
const INACTIVITY_CHECKS = 4;

/**
 * `--inactivity-timeout`: a timer that compares the byte counts every quarter of the timeout, so
 * that the hot path pays nothing (no clock read per message); calls `expired` once the counts have
 * not moved for `seconds`.
 */
function inactivityTimer(
  seconds: number,
  bytes: ByteCounts,
  expired: () => void,
): ReturnType<typeof setInterval> | undefined {
  if (seconds <= 0) return undefined;
  const period = (seconds * 1000) / INACTIVITY_CHECKS;
  let seen = bytes.fromClient + bytes.fromTarget;
  let quiet = 0;
  const timer = setInterval(() => {
    const now = bytes.fromClient + bytes.fromTarget;
    quiet = now === seen ? quiet + 1 : 0;
    seen = now;
    if (quiet < INACTIVITY_CHECKS) return;
    clearInterval(timer);
    expired();
  }, period);
  return timer;
}

/** Client → target: pieces are added as they are parsed and written at the end of each chunk. */
interface TargetWriter {
  /** Adds a piece to write; `owned`: a buffer of its own, released once written when large. */
  add(piece: Uint8Array, owned?: boolean): void;
  /** Writes what was added; `chunk` (when given) may be released once written. */
  flush(chunk: Uint8Array | undefined): void;
  /** Resolves when what was added has been handed to the target (or failed). */
  settled(): Promise<void>;
}

type Failed = (what: string, error: unknown) => void;

/**
 * Writes to a node:net target without a promise per message: the pieces of one client chunk go
 * out in one corked write (one `writev`, no copy), and the client is paused while the target's
 * socket holds more than the high-water mark. Once written, the client's chunk is released.
 */
function socketWriter(
  target: SocketConnection,
  channel: WebSocketChannel,
  traffic: TrafficLog | undefined,
  failed: Failed,
): TargetWriter {
  const pending: Uint8Array[] = [];
  // Large pieces with buffers of their own (inflated messages), released once written.
  let owned: Uint8Array[] | undefined;
  let paused = false;
  return {
    add(piece, isOwned) {
      pending.push(piece);
      if (isOwned && piece.length >= RELEASE_CHUNK) (owned ??= []).push(piece);
    },
    flush(chunk) {
      // Releasing pays off for large chunks only (see docs/decisions.md).
      const release = chunk !== undefined && chunk.length >= RELEASE_CHUNK ? chunk : undefined;
      if (pending.length === 0) {
        if (release) releaseBuffer(release);
        return;
      }
      if (chunk !== undefined && pending.length > 1) compactInto(chunk, pending);
      // The owned pieces go back with the chunk, once all of them are written.
      const theirs = owned;
      owned = undefined;
      const written = theirs
        ? () => {
          theirs.forEach(releaseBuffer);
          if (release) releaseBuffer(release);
        }
        : release
        ? () => releaseBuffer(release)
        : undefined;
      let below: boolean;
      try {
        below = target.writePieces(pending, TARGET_HIGH_WATER, written);
      } catch (error) {
        pending.length = 0;
        return failed("write", error);
      }
      pending.length = 0;
      traffic?.mark(">");
      if (below || paused) return;
      paused = true;
      channel.pause();
      target.drained().then(() => {
        paused = false;
        channel.resume();
      }, (error) => failed("write", error));
    },
    // SocketConnection.close() still delivers what the socket accepted.
    settled: () => Promise.resolve(),
  };
}

/**
 * Moves `pieces` (payloads of the frames in `chunk`, in order) together at the start of `chunk`,
 * over the frame headers between them, and leaves one piece in the list: a chunk of many small
 * frames goes out as one write without a new buffer (writePieces would join them by a copy into
 * one). Only for a chunk nothing else refers to, with two or more small pieces; pieces from
 * elsewhere leave the list as it is.
 */
function compactInto(chunk: Uint8Array, pieces: Uint8Array[]): void {
  const buffer = chunk.buffer;
  const start = chunk.byteOffset;
  const end = start + chunk.length;
  let small = 0;
  for (const piece of pieces) {
    if (piece.buffer !== buffer || piece.byteOffset < start || piece.byteOffset > end) return;
    if (piece.length < COALESCE_PIECE) small++;
  }
  // writePieces joins only pieces under COALESCE_PIECE by a copy and writes large ones as they
  // are: with fewer than two small ones, moving them would cost more than it saves.
  if (small < 2) return;
  const bytes = new Uint8Array(buffer);
  let at = start;
  for (const piece of pieces) {
    // Each destination lies at or before its source: copyWithin moves like memmove.
    if (piece.byteOffset !== at) {
      bytes.copyWithin(at, piece.byteOffset, piece.byteOffset + piece.length);
    }
    at += piece.length;
  }
  pieces.length = 1;
  pieces[0] = bytes.subarray(start, at);
}

/**
 * Writes to any other target through a queue drained by one async writer; the client is paused
 * above the high-water mark, and small pieces queued together go out in one write.
 */
function queueWriter(
  target: TargetConnection,
  channel: WebSocketChannel,
  traffic: TrafficLog | undefined,
  failed: Failed,
  isClosed: () => boolean,
): TargetWriter {
  const queue: Uint8Array[] = [];
  let queued = 0;
  let writing: Promise<void> | undefined;
  let paused = false;
  const writeQueue = async () => {
    try {
      while (queue.length > 0 && !isClosed()) {
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
      failed("write", error);
    } finally {
      writing = undefined;
    }
  };
  return {
    add(piece) {
      queue.push(piece);
      queued += piece.length;
      if (!paused && queued > TARGET_HIGH_WATER) {
        paused = true;
        channel.pause();
      }
    },
    flush() {
      if (queue.length > 0) writing ??= writeQueue();
    },
    async settled() {
      while (writing) await writing;
    },
  };
}

/**
 * Target → client for socket targets, event-driven: each chunk the socket delivers becomes binary
 * messages of at most 64 KiB at once; the target is paused while the client is slow.
 * Resolves when the target has ended or was closed.
 */
function streamTarget(
  target: SocketConnection,
  channel: WebSocketChannel,
  options: PumpOptions,
  bytes: ByteCounts,
  ended: (error: Error | undefined) => void,
): Promise<void> {
  const { traffic, recording } = options;
  let paused = false;
  const forwarded = (count: number) => {
    if (options.totals) options.totals.targetToClient += count;
    bytes.fromTarget += count;
  };
  // After each send: the target waits for `drain` while the client is behind. Bytes in the splice
  // pipe are part of bufferedAmount, so below SPLICE_HIGH_WATER neither mark is reached.
  const waitIfBehind = () => {
    const buffered = channel.bufferedAmount;
    if (paused || buffered <= SPLICE_HIGH_WATER) return;
    if (buffered <= CLIENT_HIGH_WATER && channel.splicedAmount <= SPLICE_HIGH_WATER) return;
    paused = true;
    target.pause();
    void channel.drained().then(() => {
      paused = false;
      target.resume();
    });
  };
  // Bulk target data goes to the client from pipe to socket, unless every byte must be seen.
  const sink = traffic || recording ? undefined : channel.spliceSink((count) => {
    forwarded(count);
    waitIfBehind();
  });
  if (sink) target.spliceTo(sink);
  return new Promise((resolve) => {
    target.stream({
      chunk(data) {
        traffic?.mark("{");
        recording?.toClient(data);
        if (!channel.isOpen) return target.pause();
        forwarded(data.length);
        // Messages of at most 64 KiB, as upstream's; the chunk is ours alone (up to 256 KiB from
        // the epoll loop): its memory goes back as soon as it is sent.
        channel.sendSplit(data, MAX_CLIENT_MESSAGE, true);
        traffic?.mark("<");
        waitIfBehind();
      },
      end(error) {
        ended(error);
        resolve();
      },
    });
  });
}

/**
 * Target → client for other targets: a read loop (a per-session buffer, copied out, since the
 * chunk outlives the next read); reads wait while the client is slow.
 */
async function readTarget(
  target: TargetConnection,
  channel: WebSocketChannel,
  options: PumpOptions,
  bytes: ByteCounts,
  ended: (error: Error | undefined) => void,
  isClosed: () => boolean,
): Promise<void> {
  const { traffic, recording } = options;
  const buffer = new Uint8Array(MAX_CLIENT_MESSAGE);
  try {
    while (!isClosed()) {
      const count = await target.read(buffer);
      if (count === null) break;
      const chunk = buffer.slice(0, count);
      traffic?.mark("{");
      recording?.toClient(chunk);
      if (!channel.isOpen) break;
      if (options.totals) options.totals.targetToClient += count;
      bytes.fromTarget += count;
      channel.send(chunk, true, target.lines);
      traffic?.mark("<");
      if (channel.bufferedAmount > CLIENT_HIGH_WATER) await channel.drained();
    }
    ended(undefined);
  } catch (error) {
    ended(error instanceof Error ? error : new Error(String(error)));
  }
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
