/**
 * Freeing chunk memory before the garbage collector would: a 64 KiB ArrayBuffer is external
 * memory to V8, and under `--optimize-for-size` enough of it pending makes V8 run a full GC
 * (docs/decisions.md, "permessage-deflate in the bench").
 *
 * @module
 */

/**
 * Frees the memory behind `bytes` now rather than at the next garbage collection, when `bytes`
 * spans its whole ArrayBuffer (a chunk the caller owns and nothing else refers to).
 */
export function releaseBuffer(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (
    bytes.byteOffset === 0 && bytes.byteLength === buffer.byteLength &&
    buffer instanceof ArrayBuffer
  ) {
    buffer.transfer(0);
  }
}
