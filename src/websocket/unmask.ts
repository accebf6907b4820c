/**
 * Unmasking of client payloads (RFC 6455, 5.3): XOR with the frame's 4-byte key.
 *
 * Payloads of {@link SIMD_MIN} bytes or more go through a small WebAssembly function that XORs
 * 16 bytes per instruction (SIMD), copying the bytes into its memory and back: 64 KiB take
 * about 2 µs that way against 6 µs for the 32-bit JavaScript loop, which handles shorter
 * payloads and any runtime without WebAssembly SIMD. Measured in docs/decisions.md, "Unmasking
 * with WebAssembly SIMD".
 *
 * @module
 */

/** Payloads at least this long are unmasked by the WebAssembly function. */
export const SIMD_MIN = 1024;

/** The first page of the WebAssembly memory: longer payloads from elsewhere go through it in pieces. */
const WINDOW = 65536;
/**
 * The rest of the memory ({@link readRegion}): reads go there and are unmasked in place, without
 * a copy in or out. Fixed: the memory never grows, since growing would detach every view of it.
 */
const REGION = 256 * 1024;

// unmask(at: i32, length: i32, key: i32): XORs memory[at, at + length) with the little-endian
// key, rotating it by a byte per byte in the tail. Local 3 is the key splatted to a v128.
// Opcodes: 0x20 local.get, 0x21 local.set, 0x41 i32.const, 0x49 i32.lt_u, 0x45 i32.eqz,
// 0x6a i32.add, 0x6b i32.sub, 0x73 i32.xor, 0x78 i32.rotr, 0x2d i32.load8_u, 0x3a i32.store8,
// 0x02/0x03/0x0b block/loop/end, 0x0d br_if, 0x0c br; 0xfd 0x00 v128.load, 0xfd 0x0b
// v128.store, 0xfd 0x11 i32x4.splat, 0xfd 0x51 v128.xor. Memory arguments: alignment, offset.
// deno-fmt-ignore
const xor16 = (offset: number) => [
  0x20, 0x00, 0x20, 0x00, 0xfd, 0x00, 0x00, offset, // at; load(at + offset)
  0x20, 0x03, 0xfd, 0x51, 0xfd, 0x0b, 0x00, offset, // xor key; store(at + offset)
];
// i32.const takes a signed LEB128: 64 needs two bytes (a lone 0x40 would be -64).
const int32 = (value: number) => value < 64 ? [value] : [0x80 | (value & 0x7f), value >> 7];
// deno-fmt-ignore
const advance = (step: number) => [
  0x20, 0x00, 0x41, ...int32(step), 0x6a, 0x21, 0x00, // at += step
  0x20, 0x01, 0x41, ...int32(step), 0x6b, 0x21, 0x01, // length -= step
];
// deno-fmt-ignore
const BODY = [
  0x01, 0x01, 0x7b, // one local: v128
  0x20, 0x02, 0xfd, 0x11, 0x21, 0x03, // local 3 = i32x4.splat(key)
  // 64 bytes per turn while at least 64 are left
  0x02, 0x40, 0x03, 0x40, 0x20, 0x01, 0x41, ...int32(64), 0x49, 0x0d, 0x01,
  ...xor16(0x00), ...xor16(0x10), ...xor16(0x20), ...xor16(0x30), ...advance(0x40),
  0x0c, 0x00, 0x0b, 0x0b,
  // then 16 bytes per turn
  0x02, 0x40, 0x03, 0x40, 0x20, 0x01, 0x41, ...int32(16), 0x49, 0x0d, 0x01,
  ...xor16(0x00), ...advance(0x10),
  0x0c, 0x00, 0x0b, 0x0b,
  // then byte by byte, the key rotating
  0x02, 0x40, 0x03, 0x40, 0x20, 0x01, 0x45, 0x0d, 0x01,
  0x20, 0x00, 0x20, 0x00, 0x2d, 0x00, 0x00, 0x20, 0x02, 0x73, 0x3a, 0x00, 0x00,
  0x20, 0x02, 0x41, 0x08, 0x78, 0x21, 0x02, ...advance(0x01),
  0x0c, 0x00, 0x0b, 0x0b,
  0x0b,
];

function section(id: number, content: number[]): number[] {
  return [id, ...leb128(content.length), ...content];
}

function leb128(value: number): number[] {
  const bytes = [];
  do {
    const low = value & 0x7f;
    value >>>= 7;
    bytes.push(value === 0 ? low : low | 0x80);
  } while (value !== 0);
  return bytes;
}

function name(text: string): number[] {
  return [text.length, ...new TextEncoder().encode(text)];
}

const MODULE = new Uint8Array([
  ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
  ...section(1, [0x01, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x00]), // type: (i32, i32, i32) -> ()
  ...section(3, [0x01, 0x00]), // one function of that type
  ...section(5, [0x01, 0x00, (WINDOW + REGION) / 65536]), // one memory, no maximum
  ...section(7, [0x02, ...name("memory"), 0x02, 0x00, ...name("unmask"), 0x00, 0x00]),
  ...section(10, [0x01, ...leb128(BODY.length), ...BODY]),
]);

interface Simd {
  readonly memory: Uint8Array;
  readonly region: Uint8Array;
  readonly unmask: (at: number, length: number, key: number) => void;
}

/** The compiled function, on first use; null where WebAssembly SIMD is missing. */
let simd: Simd | null | undefined;

function loadSimd(): Simd | null {
  try {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(MODULE));
    const memory = instance.exports.memory as WebAssembly.Memory;
    return {
      memory: new Uint8Array(memory.buffer, 0, WINDOW),
      region: new Uint8Array(memory.buffer, WINDOW, REGION),
      unmask: instance.exports.unmask as Simd["unmask"],
    };
  } catch {
    return null;
  }
}

/**
 * XORs `data` in place with the 4-byte `mask`, starting at mask byte `phase` (the payload
 * offset of `data[0]` modulo 4).
 */
export function unmask(data: Uint8Array, mask: Uint8Array, phase: number): void {
  if (data.length >= SIMD_MIN) {
    simd ??= loadSimd();
    if (simd !== null) return unmaskSimd(simd, data, mask, phase);
  }
  unmaskWords(data, mask, phase);
}

function unmaskSimd(simd: Simd, data: Uint8Array, mask: Uint8Array, phase: number): void {
  // Each window is a multiple of 4 bytes long, so the key's phase is the same in every one.
  const key = (mask[phase & 3]! | (mask[(phase + 1) & 3]! << 8) |
    (mask[(phase + 2) & 3]! << 16) | (mask[(phase + 3) & 3]! << 24)) | 0;
  // Read into the module's memory (readRegion): unmasked where it is.
  if (data.buffer === simd.region.buffer) return simd.unmask(data.byteOffset, data.length, key);
  for (let start = 0; start < data.length; start += WINDOW) {
    const piece = data.subarray(start, start + WINDOW);
    simd.memory.set(piece);
    simd.unmask(0, piece.length, key);
    piece.set(simd.memory.subarray(0, piece.length));
  }
}

const wordMaskBytes = new Uint8Array(4);
const wordMask = new Uint32Array(wordMaskBytes.buffer);

/**
 * The JavaScript unmask: bytes up to 4-byte alignment, then aligned 32-bit words, then the
 * remaining bytes. Exported for tests, which compare it with the WebAssembly one.
 */
export function unmaskWords(data: Uint8Array, mask: Uint8Array, phase: number): void {
  const length = data.length;
  let index = 0;
  const head = Math.min((4 - (data.byteOffset & 3)) & 3, length);
  for (; index < head; index++) data[index]! ^= mask[(phase + index) & 3]!;
  const words = (length - index) >>> 2;
  if (words > 0) {
    const at = (phase + index) & 3;
    wordMaskBytes[0] = mask[at]!;
    wordMaskBytes[1] = mask[(at + 1) & 3]!;
    wordMaskBytes[2] = mask[(at + 2) & 3]!;
    wordMaskBytes[3] = mask[(at + 3) & 3]!;
    const word = wordMask[0]!;
    const view = new Uint32Array(data.buffer, data.byteOffset + index, words);
    for (let w = 0; w < words; w++) view[w]! ^= word;
    index += words * 4;
  }
  for (; index < length; index++) data[index]! ^= mask[(phase + index) & 3]!;
}

/**
 * {@link REGION} bytes of the WebAssembly memory, where a socket may read client data so that
 * its payload is unmasked in place (FdSocket.borrowReads); null without WebAssembly SIMD. One
 * per process: what is read there is valid only until the next read, so whoever keeps a piece
 * of it copies it. It never spans its ArrayBuffer (page 0 is the window), so releaseBuffer never
 * frees it.
 */
export function readRegion(): Uint8Array | null {
  simd ??= loadSimd();
  return simd === null ? null : simd.region;
}

/** Whether payloads of {@link SIMD_MIN} bytes or more go through WebAssembly SIMD here. */
export function hasSimdUnmask(): boolean {
  simd ??= loadSimd();
  return simd !== null;
}
