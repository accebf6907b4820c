/**
 * Complete HTTP error responses written to a raw socket (the upgrade path has no
 * `ServerResponse`): status line with reason phrase, headers, Content-Length, and a small HTML
 * body like Python's `send_error` page.
 *
 * @module
 */

import { STATUS_CODES } from "node:http";

/** The HTML error page body, as Python's `BaseHTTPRequestHandler` (escaped). */
export function errorPage(status: number, reason: string): string {
  const text = escapeHtml(reason);
  return `<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <meta charset="utf-8">\n` +
    `        <title>Error response</title>\n    </head>\n    <body>\n` +
    `        <h1>Error response</h1>\n        <p>Error code: ${status}</p>\n` +
    `        <p>Message: ${text}.</p>\n    </body>\n</html>\n`;
}

/** Builds the bytes of a complete error response that closes the connection. */
export function errorResponse(
  status: number,
  reason: string = STATUS_CODES[status] ?? "Error",
  headers: Readonly<Record<string, string>> = {},
  options: { head?: boolean } = {},
): string {
  const phrase = printable(reason) || STATUS_CODES[status] || "Error";
  const body = errorPage(status, phrase);
  const lines = [
    `HTTP/1.1 ${status} ${phrase}`,
    "Server: WebSockify Deno",
    `Date: ${new Date().toUTCString()}`,
    "Connection: close",
    "Content-Type: text/html;charset=utf-8",
    `Content-Length: ${new TextEncoder().encode(body).length}`,
    ...Object.entries(safeHeaders(headers)).map(([name, value]) => `${name}: ${value}`),
  ];
  return `${lines.join("\r\n")}\r\n\r\n${options.head ? "" : body}`;
}

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (char) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" })[char] ?? char,
  );
}

/** Drops control characters (CR, LF, NUL, DEL, ...) so a value fits on one header line. */
export function printable(text: string): string {
  // deno-lint-ignore no-control-regex -- stripping control characters is the point
  return text.replace(/[\x00-\x1f\x7f]/g, "").trim();
}

/**
 * Keeps headers whose names are valid tokens (RFC 9110), with printable values: whatever a plugin
 * puts in an error, it cannot split the response.
 */
export function safeHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  const safe: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) safe[name] = printable(value);
  }
  return safe;
}
