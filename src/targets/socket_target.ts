/**
 * A {@link TargetConnection} over a `node:net` socket. TCP targets use it instead of `Deno.Conn`
 * because, with thousands of sessions, `Deno.Conn` reads are served unfairly: in a 5,000-session
 * echo test, thousands of target connections sat with data in their receive queues for over 15 s
 * while others were served, whereas `node:net` served all of them within a second (measured in
 * docs/decisions.md, "Targets on node:net").
 *
 * @module
 */

import { Buffer } from "node:buffer";
import net from "node:net";
import type { ByteSocket, TargetConnection } from "../types.ts";
import { openLibcDialer } from "./libc_dial.ts";
import { FdSocket, openEpoll, type SpliceSink } from "../ops/epoll.ts";

/** Bytes buffered from the target before its socket is paused (the pump is behind). */
const HIGH_WATER = 256 * 1024;
/** How long a closing connection may take to flush what it had accepted. */
const FLUSH_TIMEOUT_MS = 5000;
/** Pieces at least this large are written on their own, never copied into a batch. */
export const COALESCE_PIECE = 16 * 1024;
/** Largest batch of small pieces copied into one write. */
export const COALESCE_LIMIT = 256 * 1024;
/**
 * What reads pending at close() reject with. One shared instance: building an Error (with its
 * stack trace) on every session's close was measurable in the set-up rate.
 */
const CLOSED = new Error("Target connection was closed");

/** A scoped IPv6 address (`fe80::1%eth0`) cannot be encoded for libc here: node:net dials it. */
function canDialThroughLibc(address: string): boolean {
  return !address.includes("%");
}

/** Connects with `net.connect`; resolves once connected, rejects with the socket error. */
function netConnect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const fail = (error: Error) => reject(error);
    socket.once("error", fail);
    socket.once("connect", () => {
      socket.off("error", fail);
      resolve(socket);
    });
  });
}

/** Receives a {@link SocketConnection}'s chunks in push mode ({@link SocketConnection.stream}). */
export interface ChunkSink {
  /** A chunk as the socket delivered it; the sink owns it. */
  chunk(data: Uint8Array): void;
  /** Called once: end of stream (`undefined`), a socket error, or close(). */
  end(error: Error | undefined): void;
}

/** A connected target socket with pull-style reads, or push-style ones ({@link stream}). */
export class SocketConnection implements TargetConnection {
  readonly #socket: ByteSocket;
  readonly #chunks: Buffer[] = [];
  #offset = 0;
  #buffered = 0;
  #ended = false;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;
  #sink: ChunkSink | undefined;

  private constructor(socket: ByteSocket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      if (this.#sink) return this.#sink.chunk(chunk);
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > HIGH_WATER) socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (error: Error) => {
      this.#failure ??= error;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  /**
   * Connects to the IP literal `address` and `port` (no delay, keep-alive); rejects with the
   * socket error. Dials through libc when it can (src/targets/libc_dial.ts: a `node:net` connect
   * can starve while the core is saturated), otherwise with `net.connect`. `timeoutMs` (0: none)
   * bounds a libc dial, which then rejects with a `DialTimeout`; a `net.connect` is the caller's
   * to bound ({@link boundsTimeout} says which it will be).
   */
  static async connect(address: string, port: number, timeoutMs = 0): Promise<SocketConnection> {
    const dialer = openLibcDialer();
    const loop = openEpoll();
    const deadline = timeoutMs > 0 ? timeoutMs : Infinity;
    let socket: ByteSocket;
    if (!dialer || !canDialThroughLibc(address)) socket = await netConnect(address, port);
    else if (!loop) socket = await dialer.dial(address, port, deadline);
    else {
      // Served by the epoll loop, never by node:net (src/ops/epoll.ts).
      const fd = await dialer.dialDescriptor(address, port, deadline);
      // Dialled here and never duplicated: its close leaves the epoll set by itself.
      socket = loop.adopt(fd, { remoteAddress: address, remotePort: port }, { exclusive: true });
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
    return new SocketConnection(socket);
  }

  /** Whether {@link connect} ends a dial to `address` at its timeout by itself (through libc). */
  static boundsTimeout(address: string): boolean {
    return canDialThroughLibc(address) && openLibcDialer() !== undefined;
  }

  #notify(): void {
    const sink = this.#sink;
    if (sink && (this.#ended || this.#failure)) {
      this.#sink = undefined;
      sink.end(this.#failure);
    }
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /**
   * Switches to push mode: every chunk (those already buffered first) goes to `sink` as the socket
   * delivers it, without a promise per chunk; {@link pause} and {@link resume} apply
   * backpressure. Reads must not be used afterwards.
   */
  stream(sink: ChunkSink): void {
    while (this.#chunks.length > 0) {
      const chunk = this.#chunks.shift()!;
      sink.chunk(this.#offset === 0 ? chunk : chunk.subarray(this.#offset));
      this.#offset = 0;
    }
    this.#buffered = 0;
    this.#sink = sink;
    this.#notify();
    if (this.#sink) this.resume();
  }

  /**
   * Makes writes copy what the socket cannot send at once, so that they may come from memory
   * reused as soon as they return ({@link FdSocket.copyQueuedWrites}): true where the socket is
   * on the epoll loop; elsewhere (node:net keeps what it is given) false, and nothing changes.
   */
  copyQueuedWrites(): boolean {
    if (!(this.#socket instanceof FdSocket)) return false;
    this.#socket.copyQueuedWrites();
    return true;
  }

  /**
   * Moves bulk reads into `sink`'s pipe instead of delivering them as chunks, where the socket is
   * on the epoll loop ({@link FdSocket.spliceTo}); elsewhere nothing changes.
   */
  spliceTo(sink: SpliceSink): void {
    if (this.#socket instanceof FdSocket) this.#socket.spliceTo(sink);
  }

  /** Stops reading from the target (push mode: the client is slow). */
  pause(): void {
    this.#socket.pause();
  }

  /** Resumes reading from the target. */
  resume(): void {
    if (!this.#ended && !this.#socket.destroyed) this.#socket.resume();
  }

  /**
   * Queues `pieces` on the socket: small pieces (under `COALESCE_PIECE`) are copied together into
   * one buffer (at most `COALESCE_LIMIT` bytes each), larger ones are written as they are, so a
   * batch costs few writes and big pieces no copy (no `cork()`: see docs/decisions.md). Returns
   * whether the socket holds at most `limit` bytes; when not, wait for {@link drained} before
   * writing more. `onWritten` runs once every piece has been written. Throws when the connection
   * is closed or failed. The caller must not reuse the pieces.
   */
  writePieces(pieces: readonly Uint8Array[], limit: number, onWritten?: () => void): boolean {
    const socket = this.#socket;
    if (this.#failure) throw this.#failure;
    if (socket.destroyed || socket.writableEnded) throw new Error("Target connection is closed");
    const count = pieces.length;
    let index = 0;
    while (index < count) {
      const piece = pieces[index]!;
      let end = index + 1;
      let size = piece.length;
      if (size < COALESCE_PIECE) {
        while (end < count) {
          const length = pieces[end]!.length;
          if (length >= COALESCE_PIECE || size + length > COALESCE_LIMIT) break;
          size += length;
          end++;
        }
      }
      let data = piece;
      if (end > index + 1) {
        data = Buffer.allocUnsafe(size);
        let offset = 0;
        for (let at = index; at < end; at++) {
          data.set(pieces[at]!, offset);
          offset += pieces[at]!.length;
        }
      }
      // Writes complete in order: the last one's callback means every piece is done with.
      socket.write(data, end === count ? onWritten : undefined);
      index = end;
    }
    return socket.writableLength <= limit;
  }

  /** Resolves when the socket has flushed its queue; rejects if it fails or closes first. */
  async drained(): Promise<void> {
    const socket = this.#socket;
    if (socket.writableLength > 0) await whenDrained(socket);
    if (this.#failure || socket.destroyed) {
      throw this.#failure ?? new Error("Target connection is closed");
    }
  }

  async #waitForData(): Promise<boolean> {
    while (this.#chunks.length === 0) {
      if (this.#failure) throw this.#failure;
      if (this.#ended) return false;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    return true;
  }

  /**
   * Returns the next received chunk as the socket delivered it (no copy, at most `limit` bytes),
   * or `null` at end of stream. Unlike {@link read}, no buffer is held while waiting, which keeps
   * idle sessions small.
   */
  async readChunk(limit: number): Promise<Uint8Array | null> {
    if (!await this.#waitForData()) return null;
    const chunk = this.#chunks[0]!;
    const end = Math.min(chunk.length, this.#offset + limit);
    const piece = chunk.subarray(this.#offset, end);
    this.#offset = end;
    if (end === chunk.length) {
      this.#chunks.shift();
      this.#offset = 0;
    }
    this.#consumed(piece.length);
    return piece;
  }

  #consumed(count: number): void {
    this.#buffered -= count;
    if (this.#buffered <= HIGH_WATER && this.#socket.isPaused() && !this.#ended) {
      this.#socket.resume();
    }
  }

  /** Copies buffered bytes into `buffer`; waits for data; `null` at end of stream. */
  async read(buffer: Uint8Array): Promise<number | null> {
    if (!await this.#waitForData()) return null;
    let count = 0;
    while (count < buffer.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(buffer.length - count, chunk.length - this.#offset);
      buffer.set(chunk.subarray(this.#offset, this.#offset + take), count);
      count += take;
      this.#offset += take;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    this.#consumed(count);
    return count;
  }

  /**
   * Queues `data` on the socket; resolves at once while the socket's buffer is below its
   * high-water mark, otherwise when it drains. The caller must not reuse `data`.
   */
  write(data: Uint8Array): Promise<number> {
    const socket = this.#socket;
    if (this.#failure) return Promise.reject(this.#failure);
    if (socket.destroyed || socket.writableEnded) {
      return Promise.reject(new Error("Target connection is closed"));
    }
    if (socket.write(data)) return Promise.resolve(data.length);
    return this.drained().then(() => data.length);
  }

  /** Half-closes: sends FIN after queued data; reads continue. */
  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  /**
   * Closes both directions; a pending read rejects. Bytes already accepted by {@link write} are
   * still delivered (write resolves before the kernel has them), then the socket is destroyed.
   */
  close(): void {
    this.#failure ??= CLOSED;
    this.#notify();
    const socket = this.#socket;
    if (socket.destroyed) return;
    socket.pause();
    if (socket.writableLength === 0 || socket.writableEnded) return void socket.destroy();
    const timer = setTimeout(() => socket.destroy(), FLUSH_TIMEOUT_MS);
    socket.end(() => {
      clearTimeout(timer);
      socket.destroy();
    });
  }
}

/**
 * Resolves once `socket` emits `drain` or `close`, whichever comes first: the one wait for a full
 * socket buffer shared by the client channel and target connections.
 */
export function whenDrained(socket: ByteSocket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}
