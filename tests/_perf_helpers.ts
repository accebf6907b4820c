// Helpers for the framer and bench tests: client frame builders and a raw WebSocket client.

/** Options of {@link clientFrame}. */
export interface ClientFrameOptions {
  fin?: boolean;
  rsv?: number;
  masked?: boolean;
  mask?: readonly number[];
  /** Force the 16- or 64-bit length form. */
  lengthForm?: 7 | 16 | 64;
  /** Claimed payload length, if different from the payload's. */
  claimedLength?: number;
}

/** Builds a client-to-server frame (masked unless told otherwise). */
export function clientFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: ClientFrameOptions = {},
): Uint8Array {
  const data = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const length = options.claimedLength ?? data.length;
  const masked = options.masked ?? true;
  const form = options.lengthForm ?? (length < 126 ? 7 : length < 0x10000 ? 16 : 64);
  const header: number[] = [
    ((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode,
  ];
  const maskBit = masked ? 0x80 : 0;
  if (form === 7) header.push(maskBit | length);
  else if (form === 16) header.push(maskBit | 126, length >>> 8, length & 0xff);
  else {
    const high = Math.floor(length / 2 ** 32);
    header.push(maskBit | 127, high >>> 24, (high >>> 16) & 0xff, (high >>> 8) & 0xff, high & 0xff);
    header.push(length >>> 24, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
  }
  const mask = options.mask ?? [0x37, 0xfa, 0x21, 0x3d];
  if (masked) header.push(...mask);
  const frame = new Uint8Array(header.length + data.length);
  frame.set(header);
  for (let i = 0; i < data.length; i++) {
    frame[header.length + i] = masked ? data[i]! ^ mask[i & 3]! : data[i]!;
  }
  return frame;
}

/** Concatenates byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Rejects after `ms` milliseconds with `what` in the message; clear with the returned id. */
export function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A WebSocket client on a raw TCP connection, for sending arbitrary bytes after the handshake. */
export class RawClient {
  #conn: Deno.TcpConn;
  #buffer: Uint8Array = new Uint8Array(0);
  /** The server's 101 response head (status line and headers). */
  head = "";

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /**
   * Connects to `port` and completes the opening handshake on `path`, with `headers` (lines
   * such as `Sec-WebSocket-Extensions: permessage-deflate`) added to the request.
   */
  static async open(port: number, path = "/", headers: string[] = []): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const client = new RawClient(conn);
    const request = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n" +
      headers.map((line) => `${line}\r\n`).join("") + "\r\n";
    await client.write(new TextEncoder().encode(request));
    const head = await client.#readUntilHeadEnd();
    client.head = head;
    if (!head.startsWith("HTTP/1.1 101")) {
      conn.close();
      throw new Error(`Handshake refused: "${head.split("\r\n")[0]}"`);
    }
    return client;
  }

  /** Writes all of `data`. */
  async write(data: Uint8Array): Promise<void> {
    let written = 0;
    while (written < data.length) written += await this.#conn.write(data.subarray(written));
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(65536);
    const n = await this.#conn.read(chunk);
    if (n === null) return false;
    this.#buffer = concatBytes([this.#buffer, chunk.subarray(0, n)]);
    return true;
  }

  async #readUntilHeadEnd(): Promise<string> {
    for (;;) {
      const text = new TextDecoder().decode(this.#buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#buffer = this.#buffer.subarray(end + 4);
        return text.slice(0, end);
      }
      if (!await this.#fill()) throw new Error("Connection closed during the handshake");
    }
  }

  /** Reads one server frame (`rsv1`: compressed); `null` at end of stream. */
  async readFrame(): Promise<
    { opcode: number; fin: boolean; rsv1: boolean; payload: Uint8Array } | null
  > {
    for (;;) {
      const b = this.#buffer;
      if (b.length >= 2) {
        const code = b[1]! & 0x7f;
        const size = code === 126 ? 4 : code === 127 ? 10 : 2;
        if (b.length >= size) {
          let length = code;
          if (code === 126) length = (b[2]! << 8) | b[3]!;
          if (code === 127) length = new DataView(b.buffer, b.byteOffset).getUint32(6);
          if (b.length >= size + length) {
            const payload = b.slice(size, size + length);
            this.#buffer = b.subarray(size + length);
            const first = b[0]!;
            return {
              opcode: first & 0x0f,
              fin: (first & 0x80) !== 0,
              rsv1: (first & 0x40) !== 0,
              payload,
            };
          }
        }
      }
      if (!await this.#fill()) return null;
    }
  }

  /** Reads frames until a close frame and returns its code (1005 if empty, null if none). */
  async readCloseCode(): Promise<number | null> {
    for (;;) {
      const frame = await this.readFrame();
      if (frame === null) return null;
      if (frame.opcode === 8) {
        return frame.payload.length >= 2 ? (frame.payload[0]! << 8) | frame.payload[1]! : 1005;
      }
    }
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}
