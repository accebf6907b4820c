/**
 * `--permessage-deflate`: the WebSocket compression extension (RFC 7692) without context
 * takeover in either direction, so that a session keeps no zlib state between messages (memory
 * per idle session stays as without it). Each message is compressed or inflated on its own with
 * node:zlib's one-shot functions; messages shorter than {@link DEFLATE_MIN} go out uncompressed
 * (the extension lets the sender choose per message). Measured in docs/decisions.md,
 * "permessage-deflate".
 *
 * @module
 */

import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { releaseBuffer } from "./buffers.ts";

/** Server messages shorter than this are sent uncompressed. */
export const DEFLATE_MIN = 256;

/** The accepted offer: what the 101 answers and how the server compresses. */
export interface DeflateParams {
  /** LZ77 window of the server's compression, 9–15 (the client's `server_max_window_bits`). */
  readonly serverWindowBits: number;
  /** The `Sec-WebSocket-Extensions` value of the 101 response. */
  readonly response: string;
}

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/**
 * Picks the first acceptable `permessage-deflate` offer of a `Sec-WebSocket-Extensions` header
 * (RFC 7692 §7.1); undefined when there is none. Offers with unknown, repeated or invalid
 * parameters are skipped, as the RFC asks. `server_max_window_bits=8` is skipped too: zlib's raw
 * deflate cannot use a window of 256 bytes.
 */
export function negotiateDeflate(header: string | undefined): DeflateParams | undefined {
  if (header === undefined) return undefined;
  for (const offer of header.split(",")) {
    const [name, ...parameters] = offer.split(";").map((part) => part.trim());
    if (name?.toLowerCase() !== "permessage-deflate") continue;
    const seen = new Set<string>();
    let serverWindowBits = 15;
    let valid = true;
    for (const parameter of parameters) {
      const equals = parameter.indexOf("=");
      const key = (equals < 0 ? parameter : parameter.slice(0, equals)).trim().toLowerCase();
      const raw = equals < 0
        ? undefined
        : parameter.slice(equals + 1).trim().replace(/^"(.*)"$/, "$1");
      if (seen.has(key)) valid = false;
      seen.add(key);
      if (key === "server_no_context_takeover" || key === "client_no_context_takeover") {
        if (raw !== undefined) valid = false;
      } else if (key === "server_max_window_bits") {
        const bits = /^\d{1,2}$/.test(raw ?? "") ? Number(raw) : 0;
        if (bits < 9 || bits > 15) valid = false;
        else serverWindowBits = bits;
      } else if (key === "client_max_window_bits") {
        // Without a value: the client could limit its window; the server inflates with 15 bits,
        // which reads any window, so it need not answer.
        if (
          raw !== undefined && !(/^\d{1,2}$/.test(raw) && Number(raw) >= 8 && Number(raw) <= 15)
        ) {
          valid = false;
        }
      } else {
        valid = false;
      }
    }
    if (!valid) continue;
    const response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover" +
      (seen.has("server_max_window_bits") ? `; server_max_window_bits=${serverWindowBits}` : "");
    return { serverWindowBits, response };
  }
  return undefined;
}

/**
 * Compresses one server message: the deflate stream flushed with Z_SYNC_FLUSH, its final
 * `00 00 ff ff` removed (RFC 7692 §7.2.1). Undefined when that is not shorter than `payload`.
 */
export function deflateMessage(payload: Uint8Array, params: DeflateParams): Deflated | undefined {
  if (payload.length < DEFLATE_MIN) return undefined;
  const compressed = zlib.deflateRawSync(payload, {
    level: zlib.constants.Z_BEST_SPEED,
    windowBits: params.serverWindowBits,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
  const body = compressed.subarray(0, compressed.length - TAIL.length);
  if (body.length < payload.length) return { body, whole: compressed };
  releaseBuffer(compressed);
  return undefined;
}

/** A compressed message: `body` to send, a view of `whole`, which may be released once sent. */
export interface Deflated {
  readonly body: Uint8Array;
  readonly whole: Uint8Array;
}

/** Why {@link inflateMessage} failed: the close code and its reason. */
export interface InflateFailure {
  readonly code: 1007 | 1009;
  readonly reason: string;
}

/**
 * Inflates one client message from its compressed pieces (RFC 7692 §7.2.2); at most `maxSize`
 * bytes (0: no limit), so a small message cannot expand without bound.
 */
export function inflateMessage(
  pieces: readonly Uint8Array[],
  maxSize: number,
): Uint8Array | InflateFailure {
  try {
    const input = Buffer.concat([...pieces, TAIL]);
    try {
      return zlib.inflateRawSync(input, {
        finishFlush: zlib.constants.Z_SYNC_FLUSH,
        ...(maxSize > 0 ? { maxOutputLength: maxSize } : {}),
      });
    } finally {
      releaseBuffer(input);
    }
  } catch (error) {
    if ((error as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      return { code: 1009, reason: "Max payload size exceeded" };
    }
    return { code: 1007, reason: "Invalid compressed data" };
  }
}
