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
  const body = errorPage(status, reason);
  const phrase = reason.replace(/[\r\n]+/g, " ");
  const lines = [
    `HTTP/1.1 ${status} ${phrase}`,
    "Server: WebSockify Deno",
    `Date: ${new Date().toUTCString()}`,
    "Connection: close",
    "Content-Type: text/html;charset=utf-8",
    `Content-Length: ${new TextEncoder().encode(body).length}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value.replace(/[\r\n]+/g, " ")}`),
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
