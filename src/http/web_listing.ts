/**
 * Pieces of the `--web` file server that are pure HTML and naming: the directory listing page of
 * Python's `SimpleHTTPRequestHandler` ("Directory listing for /path/"), Python-compatible
 * percent-encoding, and the rule which names may be served at all.
 *
 * @module
 */

import type * as http from "node:http";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { escapeHtml } from "./http_response.ts";

/**
 * Whether one decoded path segment may name something to serve. Backslashes are refused outright
 * (they are path separators to Windows clients and tools), as are `.`, `..` and dotfiles.
 */
export function isServableSegment(segment: string): boolean {
  return !segment.startsWith(".") && !segment.includes("\\") && !segment.includes("\0");
}

/** Writes the "Directory listing for /path/" page of Python's `SimpleHTTPRequestHandler`. */
export async function writeListing(
  response: http.ServerResponse,
  directory: string,
  urlPath: string,
): Promise<void> {
  const entries = await readdir(directory, { withFileTypes: true });
  // List only what a request could fetch: no dotfiles, no names with a backslash.
  const names = entries.map((entry) => entry.name).filter((name) =>
    name !== "" && isServableSegment(name)
  );
  names.sort(compareLowerCase);
  const items: string[] = [];
  for (const name of names) {
    const entry = entries.find((candidate) => candidate.name === name);
    let display = name;
    let link = name;
    // As Python: "/" when the name (followed) is a directory, "@" shown for a symlink.
    if (await isDirectory(join(directory, name))) {
      display = `${name}/`;
      link = `${name}/`;
    }
    if (entry?.isSymbolicLink()) display = `${name}@`;
    items.push(`<li><a href="${quotePath(link)}">${escapeHtml(display)}</a></li>`);
  }
  const title = `Directory listing for ${escapeHtml(urlPath)}`;
  const body = [
    "<!DOCTYPE HTML>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    `<title>${title}</title>`,
    "</head>",
    "<body>",
    `<h1>${title}</h1>`,
    "<hr>",
    "<ul>",
    ...items,
    "</ul>",
    "<hr>",
    "</body>",
    "</html>",
    "",
  ].join("\n");
  const bytes = new TextEncoder().encode(body);
  response.writeHead(200, {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Length": String(bytes.byteLength),
  });
  response.end(bytes);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Percent-encodes like Python's `urllib.parse.quote(name)`: only `A-Za-z0-9_.-~/` stay. */
export function quotePath(name: string): string {
  return encodeURIComponent(name)
    .replace(/%2F/g, "/")
    .replace(/[!'()*]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Orders names as Python's `list.sort(key=str.lower)`: by code unit of the lower-cased name. */
function compareLowerCase(a: string, b: string): number {
  const left = a.toLowerCase();
  const right = b.toLowerCase();
  return left < right ? -1 : left > right ? 1 : 0;
}
