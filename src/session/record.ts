/**
 * `--record FILE`: writes each session to `FILE.<connection number>` in upstream's
 * `VNC_frame_data` format, which noVNC's playback tools read:
 *
 * ```
 * var VNC_frame_data = [
 * '}300}abc\'\x00\xff',   <- from the client, 300 ms after the session start
 * '{302{abc\'\x00\xff',   <- to the client
 * 'EOF'];
 * ```
 *
 * Writes are queued and flushed asynchronously so recording never blocks the proxy.
 *
 * @module
 */

/** Escapes bytes as Python's `bytes.decode('latin-1').encode('unicode_escape')` then `'` → `\'`. */
export function escapeFrame(data: Uint8Array): string {
  let text = "";
  for (const byte of data) {
    if (byte === 0x5c) text += "\\\\";
    else if (byte === 0x27) text += "\\'";
    else if (byte === 0x09) text += "\\t";
    else if (byte === 0x0a) text += "\\n";
    else if (byte === 0x0d) text += "\\r";
    else if (byte >= 0x20 && byte < 0x7f) text += String.fromCharCode(byte);
    else text += "\\x" + byte.toString(16).padStart(2, "0");
  }
  return text;
}

const encoder = new TextEncoder();

/** One session's recording file. */
export class Recording {
  readonly #file: Deno.FsFile;
  readonly #start = performance.now();
  #queue: string[] = [];
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  #pendingClient = "";

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Creates `path` (mode 0600) and writes the header line. */
  static async open(path: string): Promise<Recording> {
    const file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
    const recording = new Recording(file);
    recording.#append("var VNC_frame_data = [\n");
    return recording;
  }

  /** Records a piece of a client message; `complete` marks its last piece. */
  fromClient(data: Uint8Array, complete = true): void {
    // One line per client message, as upstream, even when it arrives in several pieces; pieces
    // are escaped at once, so no socket buffer is held.
    if (this.#closed) return;
    this.#pendingClient += escapeFrame(data);
    if (!complete) return;
    const text = this.#pendingClient;
    this.#pendingClient = "";
    this.#line("}", text);
  }

  /** Records data sent to the client. */
  toClient(data: Uint8Array): void {
    if (!this.#closed) this.#line("{", escapeFrame(data));
  }

  /** Writes the closing line and closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#append("'EOF'];\n");
    this.#closed = true;
    await this.#writing;
    this.#file.close();
  }

  #line(direction: "}" | "{", escaped: string): void {
    const elapsed = Math.floor(performance.now() - this.#start);
    this.#append(`'${direction}${elapsed}${direction}${escaped}',\n`);
  }

  #append(text: string): void {
    this.#queue.push(text);
    if (this.#queue.length > 1) return;
    this.#writing = this.#writing.then(async () => {
      while (this.#queue.length > 0) {
        const batch = this.#queue.join("");
        this.#queue = [];
        const bytes = encoder.encode(batch);
        let offset = 0;
        while (offset < bytes.length) offset += await this.#file.write(bytes.subarray(offset));
      }
    }).catch(() => {});
  }
}
