/**
 * A {@link TargetConnection} over a `node:net` socket. TCP targets use it instead of `Deno.Conn`
 * because, with thousands of sessions, `Deno.Conn` reads are served unfairly: in a 5,000-session
 * echo test, thousands of target connections sat with data in their receive queues for over 15 s
 * while others were served, whereas `node:net` served all of them within a second (measured in
 * docs/decisions.md, "Targets on node:net").
 *
 * @module
 */

import type { Buffer } from "node:buffer";
import net from "node:net";
import type { TargetConnection } from "./types.ts";

/** Bytes buffered from the target before its socket is paused (the pump is behind). */
const HIGH_WATER = 256 * 1024;
/** How long a closing connection may take to flush what it had accepted. */
const FLUSH_TIMEOUT_MS = 5000;
/**
 * What reads pending at close() reject with. One shared instance: building an Error (with its
 * stack trace) on every session's close was measurable in the set-up rate.
 */
const CLOSED = new Error("Target connection was closed");

/** A connected target socket with pull-style reads. */
export class SocketConnection implements TargetConnection {
  readonly #socket: net.Socket;
  readonly #chunks: Buffer[] = [];
  #offset = 0;
  #buffered = 0;
  #ended = false;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
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

  /** Connects to `host:port` (no delay, keep-alive); rejects with the socket error. */
  static connect(options: net.NetConnectOpts): Promise<SocketConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(options);
      const fail = (error: Error) => reject(error);
      socket.once("error", fail);
      socket.once("connect", () => {
        socket.off("error", fail);
        socket.setNoDelay(true);
        socket.setKeepAlive(true);
        resolve(new SocketConnection(socket));
      });
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
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
    return new Promise((resolve, reject) => {
      const done = () => {
        socket.off("drain", done);
        socket.off("close", done);
        if (this.#failure || socket.destroyed) {
          reject(this.#failure ?? new Error("Target connection is closed"));
        } else resolve(data.length);
      };
      socket.on("drain", done);
      socket.on("close", done);
    });
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
