/**
 * The fast path's request parser: a complete, simple WebSocket upgrade head in one chunk, answered
 * without node:http (docs/decisions.md, "Set-up path: cheaper connections"). Used by the listener
 * to decide which connections stay on the epoll loop, and by src/http/http.ts.
 *
 * @module
 */

import type { Buffer } from "node:buffer";

/**
 * One header line: a token name, `:`, optional spaces and tabs, a value of visible ASCII, spaces and
 * tabs (anything else, controls or bytes above 0x7e, goes to node:http), CRLF. Sticky: the lines
 * must follow each other with nothing between them.
 */
const HEADER_LINE = /([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e]*?)[ \t]*\r\n/y;
const REQUEST_LINE = /^GET (\/[\x21-\x7e]*) HTTP\/1\.1\r\n/;
const MAX_HEAD = 16 * 1024;

/** A parsed upgrade head; `length` is the head's size in bytes, CRLF CRLF included. */
export interface UpgradeHead {
  method: string;
  url: string;
  rawHeaders: string[];
  headers: Map<string, string>;
  length: number;
}

/**
 * Parses `chunk` as a complete `GET <origin-form> HTTP/1.1` head carrying `Connection: upgrade`,
 * `Upgrade` and `Host`, with only plain ASCII, no folded lines, no repeated header names and no
 * body headers. Returns `undefined` for anything else, which node:http then handles as before.
 */
export function parseUpgradeHead(chunk: Buffer): UpgradeHead | undefined {
  // Decoded first: Buffer#indexOf with a string costs about 8 µs here, the decoding 0.3 µs. A
  // head that does not end within MAX_HEAD bytes (partial or too large) goes to node:http.
  const decoded = chunk.toString("latin1", 0, Math.min(chunk.length, MAX_HEAD));
  const end = decoded.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  // The head with its last line's CRLF.
  const text = decoded.slice(0, end + 2);
  const requestLine = REQUEST_LINE.exec(text);
  if (requestLine === null) return undefined;
  const url = requestLine[1] as string;
  const rawHeaders: string[] = [];
  // A Map: a null-prototype object cost twice as much to fill here.
  const headers = new Map<string, string>();
  HEADER_LINE.lastIndex = requestLine[0].length;
  while (HEADER_LINE.lastIndex < text.length) {
    const line = HEADER_LINE.exec(text);
    if (line === null) return undefined;
    const name = line[1] as string;
    const value = line[2] as string;
    const key = name.toLowerCase();
    if (headers.has(key)) return undefined;
    headers.set(key, value);
    rawHeaders.push(name, value);
  }
  if (
    !headers.has("host") || !headers.has("upgrade") ||
    headers.has("content-length") || headers.has("transfer-encoding") ||
    !(headers.get("connection") ?? "").split(",").some((token) =>
      token.trim().toLowerCase() === "upgrade"
    )
  ) {
    return undefined;
  }
  return { method: "GET", url, rawHeaders, headers, length: end + 4 };
}
