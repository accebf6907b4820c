/**
 * The server end of an accepted WebSocket on its raw socket: {@link FrameReader} for what the
 * client sends, single-write frames for what it receives, and `ws`'s close semantics (a client's
 * close code is echoed, a server close waits for the client's answer, protocol violations close
 * with the reader's code). Replaces `ws`'s `WebSocket` on the hot path: payload goes to the
 * session piece by piece, never reassembled into messages.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { ByteSocket } from "../types.ts";
import { whenDrained } from "../targets/socket_target.ts";
import {
  type DataOpcode,
  encodeCloseFrame,
  encodeFrame,
  encodePingFrame,
  encodePongFrame,
  frameHeaderSize,
  FrameReader,
  isUtf8,
  OPCODE,
  writeFrameHeader,
} from "./framer.ts";
import { deflateMessage, type DeflateParams, inflateMessage } from "./deflate.ts";
import { releaseBuffer } from "./buffers.ts";
import { FdSocket, type SpliceSink } from "../ops/epoll.ts";
import { readRegion } from "./unmask.ts";

/** Room to leave before a payload for {@link WebSocketChannel.sendInPlace}'s header. */
export const HEADER_ROOM = 10;

/** Payloads up to this size are copied behind their header rather than written separately. */
const COPY_LIMIT = 2048;

/** How long a server-initiated close waits for the client's close frame (as `ws`). */
const CLOSE_TIMEOUT_MS = 30_000;

/** What a channel reports to its session. */
export interface ChannelHandlers {
  /**
   * A piece of a client message (see {@link FrameReader}); `fin` ends the message. `owned`: the
   * payload is a buffer of its own that nothing else refers to (an inflated message), which may
   * be released once written.
   */
  onData(payload: Uint8Array, opcode: DataOpcode, fin: boolean, owned?: boolean): void;
  /** The client answered a ping. */
  onPong(): void;
  /** The connection is gone; `code` is the client's close code, 1005 (none) or 1006 (dropped). */
  onClose(code: number): void;
  /**
   * Called after each socket chunk has been parsed (its pieces went to {@link onData}): a place
   * to write them out together. `chunk` is given when nothing else refers to it any more
   * (no piece of it is held for a later frame): it may be released once its pieces are written.
   */
  onChunkEnd?(chunk: Uint8Array | undefined): void;
}

/** Options of {@link WebSocketChannel}. */
export interface ChannelOptions {
  /** Largest client message in bytes (close 1009 above); 0 means no limit. */
  readonly maxMessageSize: number;
  /** permessage-deflate as negotiated in the handshake (`--permessage-deflate`); absent: off. */
  readonly deflate?: DeflateParams | undefined;
}

/** A WebSocket connection after the 101 response, driven by the framer. */
export class WebSocketChannel {
  /** The client's socket. */
  readonly socket: ByteSocket;
  #reader: FrameReader;
  #handlers: ChannelHandlers | undefined;
  #closeSent = false;
  #closeCode = 1006;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #head: Uint8Array;
  #held: Uint8Array[] = [];
  #deflate: DeflateParams | undefined;
  #maxMessageSize: number;
  /** Whether the socket reads into the shared region ({@link borrowReads}). */
  #borrowed = false;
  /** Compressed pieces of the client message in progress (copies: inflated at its end). */
  #compressed: Uint8Array[] = [];

  /**
   * Takes over `socket` (paused until {@link start}); `head` holds bytes read past the request
   * headers.
   */
  constructor(socket: ByteSocket, head: Uint8Array, options: ChannelOptions) {
    this.socket = socket;
    this.#head = head;
    this.#deflate = options.deflate;
    this.#maxMessageSize = options.maxMessageSize;
    socket.pause();
    this.#reader = new FrameReader({
      maxMessageSize: options.maxMessageSize,
      compression: options.deflate !== undefined,
      onData: (payload, opcode, fin) => this.#data(payload, opcode, fin),
      onControl: (opcode, payload) => this.#control(opcode, payload),
      onError: (code) => this.#fail(code),
    });
  }

  /** Whether data may still be sent: no close frame sent and the socket is writable. */
  get isOpen(): boolean {
    return !this.#closeSent && !this.socket.destroyed && this.socket.writable;
  }

  /** Bytes queued in user space towards the client. */
  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  /** Bytes of {@link bufferedAmount} in the splice pipe ({@link spliceSink}). */
  get splicedAmount(): number {
    return this.socket instanceof FdSocket ? this.socket.splicedLength : 0;
  }

  /** Starts reading client frames into `handlers`. */
  start(handlers: ChannelHandlers): void {
    this.#handlers = handlers;
    const socket = this.socket;
    const onChunkEnd = handlers.onChunkEnd;
    socket.on(
      "data",
      onChunkEnd
        ? (chunk: Buffer) => {
          this.#reader.push(chunk);
          onChunkEnd(this.#held.length === 0 ? chunk : undefined);
        }
        : (chunk: Buffer) => this.#reader.push(chunk),
    );
    socket.on("end", () => this.#end());
    socket.on("error", () => socket.destroy());
    socket.once("close", () => {
      clearTimeout(this.#closeTimer);
      handlers.onClose(this.#closeCode);
    });
    if (this.#head.length > 0) {
      this.#reader.push(this.#head);
      onChunkEnd?.(undefined);
    }
    this.#head = new Uint8Array(0);
    socket.resume();
  }

  /**
   * Reads the client's data into the unmask's memory ({@link readRegion}), where it is unmasked
   * in place, instead of a buffer per read: each chunk, and every payload piece of it, is then
   * valid only during its `onData` and `onChunkEnd` calls, and whoever keeps a piece must copy it
   * (the channel does for a fragmented message's held pieces). False where it cannot (the client
   * is not on the epoll loop, or there is no WebAssembly SIMD): chunks stay the session's own.
   */
  borrowReads(): boolean {
    const region = readRegion();
    if (!(this.socket instanceof FdSocket) || region === null) return false;
    this.socket.borrowReads(region);
    return this.#borrowed = true;
  }

  /** Stops reading from the client (backpressure towards the target). */
  pause(): void {
    this.socket.pause();
  }

  /** Resumes reading from the client. */
  resume(): void {
    if (!this.#reader.done) this.socket.resume();
  }

  /**
   * Sends `payload` as one binary message. Small payloads are copied behind the header (one
   * buffer); large ones go out as header and payload in one corked write, without a copy. The
   * socket holds `payload` until written. With `release`, a large payload's memory is freed
   * once written ({@link releaseBuffer}): only for a chunk nothing else refers to.
   */
  send(payload: Uint8Array, release = false, text = false): void {
    if (this.isOpen) this.#send(payload, release ? payload : undefined, text);
  }

  /**
   * Sends `payload` as binary messages of at most `limit` bytes each, in one corked write (one
   * `writev` for them all). With `release`, its memory is freed once the last one is written.
   */
  sendSplit(payload: Uint8Array, limit: number, release: boolean): void {
    if (!this.isOpen) return;
    if (payload.length <= limit) return this.#send(payload, release ? payload : undefined, false);
    this.socket.cork();
    for (let at = 0; at < payload.length; at += limit) {
      const end = Math.min(at + limit, payload.length);
      const last = end === payload.length;
      this.#send(payload.subarray(at, end), release && last ? payload : undefined, false);
    }
    this.socket.uncork();
  }

  /**
   * A sink for a target socket's bulk reads ({@link SpliceSink}): each move into the client
   * socket's pipe goes out as one binary message, from the pipe to the client without passing
   * through user space, in order with everything else sent. `moved` is told each message's size.
   * Undefined where it is not used: the client is not on the epoll loop (TLS, `node:net`) or not
   * on TCP (a `--unix-listen` socket), or messages are compressed. Bytes in the pipe count in
   * {@link bufferedAmount} and {@link splicedAmount}; the caller stops moving more while the
   * latter is high.
   */
  spliceSink(moved: (count: number) => void): SpliceSink | undefined {
    const socket = this.socket;
    if (this.#deflate || !(socket instanceof FdSocket) || socket.remoteFamily === undefined) {
      return undefined;
    }
    return {
      pipe: () => (this.isOpen ? socket.splicePipe() : -1),
      moved: (count) => {
        const headerSize = frameHeaderSize(count);
        const header = Buffer.allocUnsafe(headerSize);
        writeFrameHeader(header, headerSize, OPCODE.binary, count);
        socket.writeSpliced(header, count);
        moved(count);
      },
    };
  }

  /**
   * One message. `whole`: the caller's buffer, which `payload` is or ends, freed once the message
   * is written; when `payload` is all of it, at once if it was compressed (its bytes are read), or
   * left to the GC if it was small and copied.
   */
  #send(payload: Uint8Array, whole: Uint8Array | undefined, text: boolean): void {
    const opcode = text ? OPCODE.text : OPCODE.binary;
    const deflated = this.#deflate && deflateMessage(payload, this.#deflate);
    if (deflated) {
      // RSV1: a compressed message. A caller's buffer that was this payload alone is done with
      // (see ./buffers.ts); one split into several messages waits for its last write, since the
      // earlier ones may still be queued. The compressed one is ours alone, freed once written.
      if (whole === payload) {
        releaseBuffer(whole);
        whole = undefined;
      }
      payload = deflated.body;
    }
    const headerSize = frameHeaderSize(payload.length);
    if (payload.length <= COPY_LIMIT) {
      const frame = Buffer.allocUnsafe(headerSize + payload.length);
      writeFrameHeader(frame, headerSize, opcode, payload.length);
      if (deflated) frame[0]! |= 0x40;
      frame.set(payload, headerSize);
      // The last small part of a split buffer: the buffer goes once this (and all before) is out.
      const split = whole !== undefined && whole !== payload ? whole : undefined;
      this.socket.write(frame, split ? () => releaseBuffer(split) : undefined);
      // Copied: a compressed buffer is free now.
      if (deflated) releaseBuffer(deflated.whole);
      return;
    }
    const header = Buffer.allocUnsafe(headerSize);
    writeFrameHeader(header, headerSize, opcode, payload.length);
    if (deflated) header[0]! |= 0x40;
    this.socket.cork();
    this.socket.write(header);
    // Freed once written: the compressed buffer and the caller's (either, both or neither).
    const compressed = deflated ? deflated.whole : undefined;
    const caller = whole;
    const written = compressed || caller
      ? () => {
        if (compressed) releaseBuffer(compressed);
        if (caller) releaseBuffer(caller);
      }
      : undefined;
    this.socket.write(payload, written);
    this.socket.uncork();
  }

  /**
   * Sends `buffer[HEADER_ROOM, HEADER_ROOM + length)` as one binary message, writing the header
   * into the room before it: one write, no copy. The socket holds `buffer` until `onWritten`,
   * after which the caller may reuse it.
   */
  sendInPlace(buffer: Uint8Array, length: number, onWritten?: () => void): void {
    if (!this.isOpen) return;
    const start = writeFrameHeader(buffer, HEADER_ROOM, OPCODE.binary, length);
    this.socket.write(buffer.subarray(start, HEADER_ROOM + length), onWritten);
  }

  /** Sends a ping. */
  ping(): void {
    if (this.isOpen) this.socket.write(encodePingFrame());
  }

  /**
   * Sends a close frame (once) and closes the connection when the client answers, or after
   * 30 s without an answer.
   */
  close(code?: number, reason?: string): void {
    if (this.#closeSent || this.socket.destroyed) return;
    this.#closeSent = true;
    if (this.socket.writable) this.socket.write(encodeCloseFrame(code, reason));
    if (this.#reader.done) {
      this.#end();
      return;
    }
    // The client's answer has to be read even if the session had paused the socket.
    this.socket.resume();
    this.#closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
  }

  /** Drops the connection without a close frame. */
  terminate(): void {
    this.socket.destroy();
  }

  /** Resolves when the socket has flushed its user-space queue (or is gone). */
  drained(): Promise<void> {
    const socket = this.socket;
    if (socket.destroyed || socket.writableLength === 0) return Promise.resolve();
    return whenDrained(socket);
  }

  // One frame is streamed piece by piece as it arrives. A message sent in several frames is held
  // until its last frame, as `ws` and upstream do: a ping in between is answered first, and a
  // message that turns out invalid (1002, 1007, 1009) never reaches the target in part. Held
  // pieces are views into the socket's chunks (copies where those are borrowed: borrowReads),
  // bounded by the maximum message size.
  #data(payload: Uint8Array, opcode: DataOpcode, fin: boolean): void {
    if (this.#closeSent || !this.#handlers) return;
    if (this.#reader.compressed) return this.#inflate(payload, opcode, fin);
    if (!this.#reader.fragmented) {
      this.#handlers.onData(payload, opcode, fin);
      return;
    }
    this.#held.push(this.#borrowed ? new Uint8Array(payload) : payload);
    if (!fin) return;
    const held = this.#held;
    this.#held = [];
    for (let index = 0; index < held.length; index++) {
      this.#handlers.onData(held[index]!, opcode, index === held.length - 1);
    }
  }

  // A compressed message is collected (copied: the pieces are views of the socket's chunks) and
  // inflated whole at its end, then checked as UTF-8 when it is text; the reader has already
  // bounded its compressed size, inflateMessage bounds the inflated one.
  #inflate(payload: Uint8Array, opcode: DataOpcode, fin: boolean): void {
    // A copy: `payload` may be a Buffer, whose slice() is a view.
    if (payload.length > 0) this.#compressed.push(new Uint8Array(payload));
    if (!fin) return;
    const pieces = this.#compressed;
    this.#compressed = [];
    const message = inflateMessage(pieces, this.#maxMessageSize);
    // The copies are ours alone and inflated: freed now, not at a GC (see ./buffers.ts).
    for (const piece of pieces) releaseBuffer(piece);
    if (!(message instanceof Uint8Array)) return this.#fail(message.code, message.reason);
    if (opcode === OPCODE.text && !isUtf8(message)) {
      return this.#fail(1007, "Invalid UTF-8 sequence");
    }
    this.#handlers!.onData(message, opcode, true, true);
  }

  #fail(code: number, reason?: string): void {
    this.#closeCode = code;
    this.close(code, reason);
    this.#end();
  }

  // A second end() makes node:stream build an ERR_STREAM_ALREADY_FINISHED error (with a stack
  // trace) on every connection: measurable in the set-up rate.
  #end(): void {
    if (!this.socket.writableEnded && !this.socket.destroyed) this.socket.end();
  }

  #control(opcode: number, payload: Uint8Array): void {
    if (opcode === OPCODE.ping) {
      if (this.isOpen) this.socket.write(encodePongFrame(payload));
      this.#handlers?.onPong();
    } else if (opcode === OPCODE.pong) {
      this.#handlers?.onPong();
    } else {
      // Close: echo the client's code and reason, as ws does, then end the connection.
      const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
      this.#closeCode = code;
      if (!this.#closeSent) {
        this.#closeSent = true;
        // The payload (code and a reason the reader checked as UTF-8, at most 123 bytes) goes
        // back as it came: the bytes encodeCloseFrame(code, reason) would build.
        if (this.socket.writable) this.socket.write(encodeFrame(OPCODE.close, payload));
      }
      clearTimeout(this.#closeTimer);
      this.#end();
    }
  }
}
