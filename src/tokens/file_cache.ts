/**
 * Re-reads a file only when it changed. Token files and key files are checked on every lookup,
 * so an edit takes effect on the next connection without a restart, but an unchanged file costs
 * one `stat` rather than a read and a parse.
 *
 * A change is noticed through mtime, ctime, size and inode (an editor that saves by rename gives
 * a new inode). Because timestamps are coarse on some file systems, a file modified within
 * {@link RACY_WINDOW_MS} of being read is read again next time (as git does for "racily clean"
 * entries); the parse, and any log lines it makes, still only runs when the text differs.
 *
 * @module
 */

/** How long after its last modification a file is re-read on every check. */
export const RACY_WINDOW_MS = 2000;

interface Signature {
  readonly mtime: number;
  readonly ctime: number;
  readonly size: number;
  readonly ino: number | null;
}

/** A file's parsed content, refreshed on {@link FileCache.get} when the file changed. */
export class FileCache<T> {
  readonly #path: string;
  readonly #parse: (text: string) => T;
  #signature: Signature | undefined;
  #text: string | undefined;
  #value: T | undefined;
  #readAt = 0;
  readonly #racyWindowMs: number;

  /**
   * Caches `path`, turning its text into a value with `parse` (which may throw).
   * `options.racyWindowMs` overrides {@link RACY_WINDOW_MS} (tests use 0).
   */
  constructor(path: string, parse: (text: string) => T, options: { racyWindowMs?: number } = {}) {
    this.#path = path;
    this.#parse = parse;
    this.#racyWindowMs = options.racyWindowMs ?? RACY_WINDOW_MS;
  }

  /** The path this cache reads. */
  get path(): string {
    return this.#path;
  }

  /**
   * Returns the parsed content, re-reading the file if it changed since the last call.
   *
   * @throws whatever `Deno.stat`, `Deno.readTextFile` or `parse` throws
   */
  async get(): Promise<T> {
    const info = await Deno.stat(this.#path);
    const signature: Signature = {
      mtime: info.mtime?.getTime() ?? 0,
      ctime: info.ctime?.getTime() ?? 0,
      size: info.size,
      ino: info.ino,
    };
    const previous = this.#signature;
    const unchanged = previous !== undefined && previous.mtime === signature.mtime &&
      previous.ctime === signature.ctime && previous.size === signature.size &&
      previous.ino === signature.ino;
    const racy = this.#readAt - Math.max(signature.mtime, signature.ctime) < this.#racyWindowMs;
    if (unchanged && !racy && this.#text !== undefined) return this.#value as T;
    const readAt = Date.now();
    const text = await Deno.readTextFile(this.#path);
    if (text !== this.#text || this.#signature === undefined) {
      const value = this.#parse(text);
      this.#value = value;
      this.#text = text;
    }
    this.#signature = signature;
    this.#readAt = readAt;
    return this.#value as T;
  }
}
