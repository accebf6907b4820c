/**
 * A streaming RFC 6455 framer for the server side of the hot path.
 *
 * {@link FrameReader} is a push parser: feed it whatever the client socket delivers and it calls
 * back with each data frame's payload as it arrives, unmasked in place, without reassembling
 * messages (a proxy forwards bytes to a TCP stream, which has no message boundaries). It applies
 * the same protocol checks as npm `ws` with the same close codes, so it can replace `ws`'s
 * receiver after the handshake. The encoders build unmasked server frames.
 *
 * @module
 */

import { unmask } from "./unmask.ts";

export { unmask };

/** Opcode of a data message. */
export type DataOpcode = 1 | 2;
/** Opcode of a control frame: close, ping, pong. */
export type ControlOpcode = 8 | 9 | 10;

/** Opcodes, by name. */
export const OPCODE = {
  continuation: 0,
  text: 1,
  binary: 2,
  close: 8,
  ping: 9,
  pong: 10,
} as const;

/** Options and callbacks of {@link FrameReader}. */
export interface FrameReaderOptions {
  /** Largest message in bytes, counted over all its frames; 0 means no limit. @default 0 */
  readonly maxMessageSize?: number;
  /** Check that text messages are UTF-8 (1007 otherwise), as `ws` does. @default true */
  readonly validateUtf8?: boolean;
  /**
   * permessage-deflate was negotiated: RSV1 may be set on a message's first frame, marking it
   * compressed ({@link FrameReader.compressed}); such text is not checked here (its inflated
   * bytes are, by the caller). @default false
   */
  readonly compression?: boolean;
  /**
   * A piece of a data message's payload, unmasked; a view into the pushed chunk, valid until
   * the callback returns unless the caller owns the chunk. `fin` marks the message's last piece
   * (a message may end with an empty piece).
   */
  onData(payload: Uint8Array, opcode: DataOpcode, fin: boolean): void;
  /**
   * A whole control frame, unmasked and validated. After a close frame the reader ignores
   * further input. The payload is a copy the callee may keep.
   */
  onControl(opcode: ControlOpcode, payload: Uint8Array): void;
  /** A protocol violation: send a close frame with `code` and drop the connection. */
  onError(code: number, reason: string): void;
}

const enum State {
  Header,
  Payload,
  Control,
  Done,
}

const MAX_CONTROL_PAYLOAD = 125;
// 2^53 - 1 is the largest length a JS number holds exactly; ws refuses larger with 1009.
const MAX_SAFE_HIGH_WORD = 2 ** 21 - 1;

/**
 * Returns whether `code` may appear in a close frame sent by a peer (RFC 6455 §7.4, as `ws`).
 */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999);
}

/**
 * Incremental parser of client-to-server frames. One instance per connection; no allocation
 * per data frame beyond the payload views handed to `onData`.
 */
export class FrameReader {
  #maxMessageSize: number;
  #validateUtf8: boolean;
  #compression: boolean;
  #compressed = false;
  #onData: FrameReaderOptions["onData"];
  #onControl: FrameReaderOptions["onControl"];
  #onError: FrameReaderOptions["onError"];

  #state = State.Header;
  // Header bytes carried over a chunk boundary (at most 2 + 8 + 4).
  // The three small buffers below are views of one allocation (one ArrayBuffer per session).
  #scratch = new Uint8Array(14 + 4 + MAX_CONTROL_PAYLOAD);
  #header = this.#scratch.subarray(0, 14);
  #headerLength = 0;
  #mask = this.#scratch.subarray(14, 18);
  #maskPhase = 0;
  #fin = false;
  #opcode = 0;
  #remaining = 0;
  // Opcode of the message in progress (1 or 2), 0 between messages.
  #messageOpcode: 0 | DataOpcode = 0;
  #messageSize = 0;
  #control = this.#scratch.subarray(18);
  #controlLength = 0;
  #controlFilled = 0;
  #utf8: TextDecoder | undefined;

  /** Creates a reader that reports through the callbacks in `options`. */
  constructor(options: FrameReaderOptions) {
    this.#maxMessageSize = options.maxMessageSize ?? 0;
    this.#validateUtf8 = options.validateUtf8 ?? true;
    this.#compression = options.compression ?? false;
    this.#onData = options.onData;
    this.#onControl = options.onControl;
    this.#onError = options.onError;
  }

  /**
   * During `onData`: whether the piece belongs to a message sent in several frames (this frame
   * has FIN clear or is a continuation), as opposed to one frame that arrived in several chunks.
   */
  get fragmented(): boolean {
    return !this.#fin || this.#opcode === 0;
  }

  /** During `onData`: whether the message is compressed (RSV1 on its first frame). */
  get compressed(): boolean {
    return this.#compressed;
  }

  /** Whether the reader has stopped: a close frame arrived or the input was invalid. */
  get done(): boolean {
    return this.#state === State.Done;
  }

  /**
   * Parses `chunk`, unmasking its payload bytes in place, and calls back synchronously for
   * every complete header, payload piece and control frame in it.
   */
  push(chunk: Uint8Array): void {
    let position = 0;
    const length = chunk.length;
    while (position < length) {
      switch (this.#state) {
        case State.Header:
          position = this.#readHeader(chunk, position);
          break;
        case State.Payload:
          position = this.#readPayload(chunk, position);
          break;
        case State.Control:
          position = this.#readControl(chunk, position);
          break;
        case State.Done:
          return;
      }
    }
  }

  #readHeader(chunk: Uint8Array, position: number): number {
    let source = chunk;
    let start = position;
    let available = chunk.length - position;
    if (this.#headerLength > 0 || available < 2) {
      const taken = Math.min(available, 14 - this.#headerLength);
      this.#header.set(chunk.subarray(position, position + taken), this.#headerLength);
      this.#headerLength += taken;
      source = this.#header;
      start = 0;
      available = this.#headerLength;
      position += taken;
    }
    if (available < 2) return position;
    const byte0 = source[start]!;
    const byte1 = source[start + 1]!;
    const lengthCode = byte1 & 0x7f;
    const headerSize = 2 + (lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0) + 4;
    if (!this.#checkFirstBytes(byte0, byte1)) return chunk.length;
    if (available < headerSize) {
      if (source === chunk) {
        this.#header.set(chunk.subarray(start, chunk.length));
        this.#headerLength = available;
      }
      return chunk.length;
    }
    let payloadLength = lengthCode;
    let maskAt = start + 2;
    if (lengthCode === 126) {
      payloadLength = (source[start + 2]! << 8) | source[start + 3]!;
      maskAt += 2;
    } else if (lengthCode === 127) {
      const high = readUint32(source, start + 2);
      if (high > MAX_SAFE_HIGH_WORD) {
        this.#fail(1009, "Unsupported WebSocket frame: payload length > 2^53 - 1");
        return chunk.length;
      }
      payloadLength = high * 2 ** 32 + readUint32(source, start + 6);
      maskAt += 8;
    }
    this.#mask[0] = source[maskAt]!;
    this.#mask[1] = source[maskAt + 1]!;
    this.#mask[2] = source[maskAt + 2]!;
    this.#mask[3] = source[maskAt + 3]!;
    this.#maskPhase = 0;
    // Rewind over carried-over bytes that belong to the payload, not the header.
    if (source === chunk) position = start + headerSize;
    else position -= this.#headerLength - headerSize;
    this.#headerLength = 0;
    return this.#startFrame(payloadLength) ? position : chunk.length;
  }

  // The checks `ws` makes on the first two bytes, in `ws`'s order, with its codes.
  #checkFirstBytes(byte0: number, byte1: number): boolean {
    const opcode = byte0 & 0x0f;
    const fin = (byte0 & 0x80) !== 0;
    const lengthCode = byte1 & 0x7f;
    if ((byte0 & 0x30) !== 0) return this.#fail(1002, "RSV2 and RSV3 must be clear");
    const rsv1 = (byte0 & 0x40) !== 0;
    // With permessage-deflate RSV1 marks a compressed message, on its first frame only.
    if (rsv1 && (!this.#compression || opcode === 0 || opcode >= 8)) {
      return this.#fail(1002, "RSV1 must be clear");
    }
    if (opcode === 0) {
      if (this.#messageOpcode === 0) return this.#fail(1002, "Invalid opcode 0");
    } else if (opcode === 1 || opcode === 2) {
      if (this.#messageOpcode !== 0) return this.#fail(1002, `Invalid opcode ${opcode}`);
    } else if (opcode >= 8 && opcode <= 10) {
      if (!fin) return this.#fail(1002, "FIN must be set");
      if (lengthCode > MAX_CONTROL_PAYLOAD || (opcode === 8 && lengthCode === 1)) {
        return this.#fail(1002, `Invalid payload length ${lengthCode}`);
      }
    } else {
      return this.#fail(1002, `Invalid opcode ${opcode}`);
    }
    if ((byte1 & 0x80) === 0) return this.#fail(1002, "MASK must be set");
    if (opcode === 1 || opcode === 2) this.#compressed = rsv1;
    this.#fin = fin;
    this.#opcode = opcode;
    return true;
  }

  #startFrame(payloadLength: number): boolean {
    const opcode = this.#opcode;
    this.#remaining = payloadLength;
    if (opcode >= 8) {
      this.#controlLength = payloadLength;
      this.#controlFilled = 0;
      this.#state = State.Control;
      if (payloadLength === 0) this.#finishControl();
      return true;
    }
    if (opcode !== 0) {
      this.#messageOpcode = opcode as DataOpcode;
      this.#messageSize = 0;
      if (opcode === 1 && this.#validateUtf8 && !this.#compressed) {
        this.#utf8 ??= new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
      }
    }
    this.#messageSize += payloadLength;
    if (this.#maxMessageSize > 0 && this.#messageSize > this.#maxMessageSize) {
      return this.#fail(1009, "Max payload size exceeded");
    }
    this.#state = State.Payload;
    if (payloadLength === 0) {
      // An empty frame still ends the message when FIN is set.
      if (this.#fin) this.#emit(new Uint8Array(0), true);
      if (this.#state === State.Payload) this.#state = State.Header;
    }
    return true;
  }

  #readPayload(chunk: Uint8Array, position: number): number {
    const taken = Math.min(this.#remaining, chunk.length - position);
    const end = position + taken;
    const payload = chunk.subarray(position, end);
    unmask(payload, this.#mask, this.#maskPhase);
    this.#maskPhase = (this.#maskPhase + taken) & 3;
    this.#remaining -= taken;
    const frameDone = this.#remaining === 0;
    if (frameDone) this.#state = State.Header;
    this.#emit(payload, frameDone && this.#fin);
    return end;
  }

  #emit(payload: Uint8Array, fin: boolean): void {
    const opcode = this.#messageOpcode as DataOpcode;
    if (fin) this.#messageOpcode = 0;
    if (opcode === 1 && this.#validateUtf8 && !this.#compressed && !this.#checkUtf8(payload, fin)) {
      return;
    }
    this.#onData(payload, opcode, fin);
  }

  #checkUtf8(payload: Uint8Array, fin: boolean): boolean {
    try {
      this.#utf8!.decode(payload, { stream: !fin });
      return true;
    } catch {
      this.#utf8 = undefined;
      return this.#fail(1007, "Invalid UTF-8 sequence");
    }
  }

  #readControl(chunk: Uint8Array, position: number): number {
    const taken = Math.min(this.#controlLength - this.#controlFilled, chunk.length - position);
    this.#control.set(chunk.subarray(position, position + taken), this.#controlFilled);
    this.#controlFilled += taken;
    if (this.#controlFilled === this.#controlLength) this.#finishControl();
    return position + taken;
  }

  #finishControl(): void {
    const payload = this.#control.slice(0, this.#controlLength);
    unmask(payload, this.#mask, 0);
    const opcode = this.#opcode as ControlOpcode;
    this.#state = State.Header;
    if (opcode === 8) {
      this.#state = State.Done;
      if (payload.length >= 2) {
        const code = (payload[0]! << 8) | payload[1]!;
        if (!isValidCloseCode(code)) {
          this.#state = State.Header;
          this.#fail(1002, `Invalid status code ${code}`);
          return;
        }
        if (this.#validateUtf8 && !isUtf8(payload.subarray(2))) {
          this.#state = State.Header;
          this.#fail(1007, "Invalid UTF-8 sequence");
          return;
        }
      }
    }
    this.#onControl(opcode, payload);
  }

  #fail(code: number, reason: string): false {
    if (this.#state !== State.Done) {
      this.#state = State.Done;
      this.#onError(code, reason);
    }
    return false;
  }
}

const utf8Checker = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function isUtf8(bytes: Uint8Array): boolean {
  try {
    utf8Checker.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

function readUint32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! * 0x1000000) + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!);
}

/** Size of the header of an unmasked frame carrying `length` payload bytes. */
export function frameHeaderSize(length: number): number {
  return length < 126 ? 2 : length < 0x10000 ? 4 : 10;
}

/**
 * Writes the header of an unmasked frame so that it ends just before `end` in `target`
 * (leave {@link frameHeaderSize} bytes of headroom before a payload read into the same buffer)
 * and returns where it starts.
 */
export function writeFrameHeader(
  target: Uint8Array,
  end: number,
  opcode: number,
  length: number,
  fin = true,
): number {
  const start = end - frameHeaderSize(length);
  target[start] = (fin ? 0x80 : 0) | opcode;
  if (length < 126) {
    target[start + 1] = length;
  } else if (length < 0x10000) {
    target[start + 1] = 126;
    target[start + 2] = length >>> 8;
    target[start + 3] = length & 0xff;
  } else {
    const high = Math.floor(length / 2 ** 32);
    target[start + 1] = 127;
    target[start + 2] = high >>> 24;
    target[start + 3] = (high >>> 16) & 0xff;
    target[start + 4] = (high >>> 8) & 0xff;
    target[start + 5] = high & 0xff;
    target[start + 6] = length >>> 24;
    target[start + 7] = (length >>> 16) & 0xff;
    target[start + 8] = (length >>> 8) & 0xff;
    target[start + 9] = length & 0xff;
  }
  return start;
}

/** Returns the header of an unmasked server frame with `opcode` and `length` payload bytes. */
export function encodeFrameHeader(opcode: number, length: number, fin = true): Uint8Array {
  const header = new Uint8Array(frameHeaderSize(length));
  writeFrameHeader(header, header.length, opcode, length, fin);
  return header;
}

/** Returns a whole unmasked frame: header and `payload` in one buffer. */
export function encodeFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const headerSize = frameHeaderSize(payload.length);
  const frame = new Uint8Array(headerSize + payload.length);
  writeFrameHeader(frame, headerSize, opcode, payload.length);
  frame.set(payload, headerSize);
  return frame;
}

const utf8Encoder = new TextEncoder();

/**
 * Returns a close frame. Without `code` the payload is empty; the reason is cut at a character
 * boundary to fit the 125-byte control payload.
 */
export function encodeCloseFrame(code?: number, reason = ""): Uint8Array {
  if (code === undefined) return encodeFrame(OPCODE.close, new Uint8Array(0));
  let reasonBytes = utf8Encoder.encode(reason);
  if (reasonBytes.length > MAX_CONTROL_PAYLOAD - 2) {
    let cut = MAX_CONTROL_PAYLOAD - 2;
    while (cut > 0 && (reasonBytes[cut]! & 0xc0) === 0x80) cut--;
    reasonBytes = reasonBytes.subarray(0, cut);
  }
  const payload = new Uint8Array(2 + reasonBytes.length);
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  payload.set(reasonBytes, 2);
  return encodeFrame(OPCODE.close, payload);
}

/** Returns a ping frame carrying `payload` (at most 125 bytes). */
export function encodePingFrame(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encodeFrame(OPCODE.ping, checkControlPayload(payload));
}

/** Returns a pong frame echoing `payload` (at most 125 bytes). */
export function encodePongFrame(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encodeFrame(OPCODE.pong, checkControlPayload(payload));
}

function checkControlPayload(payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_CONTROL_PAYLOAD) {
    throw new RangeError(
      `Control frame payload of ${payload.length} bytes is too long: keep it to 125 bytes`,
    );
  }
  return payload;
}
