/**
 * `Sec-WebSocket-Accept` (RFC 6455 §4.2.2): base64 of the SHA-1 (FIPS 180-4) of the client's key
 * and the protocol's GUID. A valid key is 24 base64 characters, so the hashed text is always 60
 * ASCII bytes: two SHA-1 blocks, of which only the key's first 6 words vary. The first block's
 * other words and the whole second block (padding and length) are constants, and so is the second
 * block's message schedule, computed once here. `node:crypto`'s `createHash` costs a native hash
 * object, three calls into the runtime and a `Buffer` per connection; any other key (never sent by
 * a client that passed `checkUpgrade`) still goes to it.
 *
 * @module
 */

import { createHash } from "node:crypto";

const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const KEY_LENGTH = 24;

/** The first block's message schedule: words 0–5 are the key's, 6–14 the GUID's, 15 the `0x80`. */
const first = new Int32Array(80);
for (let word = 6; word < 15; word++) first[word] = wordAt(WEBSOCKET_GUID, (word - 6) * 4);
first[15] = 0x80000000 | 0;

/** The second block: zeros, then the message's length in bits (60 × 8). Its schedule is fixed. */
const second = new Int32Array(80);
second[15] = (KEY_LENGTH + WEBSOCKET_GUID.length) * 8;
expand(second);

/** The SHA-1 state, reused. */
const state = new Int32Array(5);
const digest = new Uint8Array(20);
const digestView = new DataView(digest.buffer);

/** The `Sec-WebSocket-Accept` value answering the client's `Sec-WebSocket-Key` `key` (trimmed). */
export function acceptKey(key: string): string {
  const text = key.trim();
  if (text.length !== KEY_LENGTH || !isAscii(text)) {
    return createHash("sha1").update(text + WEBSOCKET_GUID).digest("base64");
  }
  for (let word = 0; word < 6; word++) first[word] = wordAt(text, word * 4);
  expand(first);
  state[0] = 0x67452301;
  state[1] = 0xefcdab89 | 0;
  state[2] = 0x98badcfe | 0;
  state[3] = 0x10325476;
  state[4] = 0xc3d2e1f0 | 0;
  compress(first);
  compress(second);
  for (let word = 0; word < 5; word++) digestView.setInt32(word * 4, state[word]!);
  return base64(digest);
}

function isAscii(text: string): boolean {
  for (let index = 0; index < text.length; index++) if (text.charCodeAt(index) > 0x7f) return false;
  return true;
}

/** The big-endian word of the four ASCII characters of `text` from `at`. */
function wordAt(text: string, at: number): number {
  return (text.charCodeAt(at) << 24) | (text.charCodeAt(at + 1) << 16) |
    (text.charCodeAt(at + 2) << 8) | text.charCodeAt(at + 3);
}

/** Fills words 16–79 of a block's schedule from its first 16. */
function expand(w: Int32Array): void {
  for (let index = 16; index < 80; index++) {
    const x = w[index - 3]! ^ w[index - 8]! ^ w[index - 14]! ^ w[index - 16]!;
    w[index] = (x << 1) | (x >>> 31);
  }
}

/** One SHA-1 compression of the expanded schedule `w` into {@link state}. */
function compress(w: Int32Array): void {
  let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!, e = state[4]!;
  let index = 0;
  for (; index < 20; index++) {
    const t = (((a << 5) | (a >>> 27)) + ((b & c) | (~b & d)) + e + 0x5a827999 + w[index]!) | 0;
    e = d, d = c, c = (b << 30) | (b >>> 2), b = a, a = t;
  }
  for (; index < 40; index++) {
    const t = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + 0x6ed9eba1 + w[index]!) | 0;
    e = d, d = c, c = (b << 30) | (b >>> 2), b = a, a = t;
  }
  for (; index < 60; index++) {
    const f = (b & c) | (b & d) | (c & d);
    const t = (((a << 5) | (a >>> 27)) + f + e + (0x8f1bbcdc | 0) + w[index]!) | 0;
    e = d, d = c, c = (b << 30) | (b >>> 2), b = a, a = t;
  }
  for (; index < 80; index++) {
    const t = (((a << 5) | (a >>> 27)) + (b ^ c ^ d) + e + (0xca62c1d6 | 0) + w[index]!) | 0;
    e = d, d = c, c = (b << 30) | (b >>> 2), b = a, a = t;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
}

/** Base64 of the 20-byte digest: six 3-byte groups, then two bytes and one `=`. */
function base64(bytes: Uint8Array): string {
  let text = "";
  for (let index = 0; index < 18; index += 3) {
    const n = (bytes[index]! << 16) | (bytes[index + 1]! << 8) | bytes[index + 2]!;
    text += BASE64[n >>> 18]! + BASE64[(n >>> 12) & 63]! + BASE64[(n >>> 6) & 63]! +
      BASE64[n & 63]!;
  }
  const n = (bytes[18]! << 16) | (bytes[19]! << 8);
  return text + BASE64[n >>> 18]! + BASE64[(n >>> 12) & 63]! + BASE64[(n >>> 6) & 63]! + "=";
}
