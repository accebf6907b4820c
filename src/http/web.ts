/**
 * The static file server behind `--web DIR`: GET and HEAD on the proxy's own port.
 *
 * File transfer (content types, `Last-Modified`/`If-Modified-Since`, `ETag`/`If-None-Match`,
 * `Range`) is npm `send`. Everything that decides *which* file is served is done here first,
 * because `send` follows symlinks wherever they point:
 *
 * - the URL path is percent-decoded once; NUL bytes, backslashes, `.`/`..` segments and dotfile
 *   segments are answered with 404 before the file system is touched;
 * - the path is resolved with `realpath` and must stay inside the (resolved) root, so a symlink
 *   that leads out of the root is a 404, and so is an index file that does;
 * - only then is the resolved path, relative to the resolved root, handed to `send`.
 *
 * Directories: `/dir` → 301 `/dir/`; `/dir/` → `index.html`, else `index.htm`, else the
 * "Directory listing for /dir/" page of Python's `SimpleHTTPRequestHandler` (404 with
 * `--file-only`). Dotfiles are neither served nor listed.
 *
 * @module
 */

import type * as http from "node:http";
import { realpath, stat } from "node:fs/promises";
import { join } from "node:path";
import type { WebConfig } from "../config.ts";
import { errorMessage } from "../errors.ts";
import { toAuthError, writeAuthError } from "../auth/response.ts";
import { logPeer } from "../listen/client_address.ts";
import { errorPage } from "./http_response.ts";
import { getLog } from "../ops/log.ts";
import type { RequestInfo } from "../types.ts";
import { isServableSegment, writeListing } from "./web_listing.ts";

/** Index files tried, in order, for a request that names a directory. */
const INDEX_FILES: readonly string[] = ["index.html", "index.htm"];

/** Reason phrases of the error pages, as Python's `http.server` words them. */
const REASONS: Readonly<Record<number, string>> = {
  400: "Bad Request",
  403: "Forbidden",
  404: "File not found",
  405: "Method Not Allowed",
  416: "Range Not Satisfiable",
  500: "Internal Server Error",
};

/** Options of {@link createWebHandler} beyond the `WebConfig`. */
export interface WebHandlerOptions {
  /**
   * Runs before a file request is served (`--web-auth`). Rejecting with an `AuthError` answers
   * with that error's status; any other rejection is a 500. Absent: no check.
   */
  readonly authorize?: (request: RequestInfo) => Promise<void>;
}

/**
 * Handles one plain HTTP request (not an upgrade). `info` is the plugin view of the request
 * (`requestInfo()` in `src/http/http.ts`): given to `authorize`, and its peer is used in log lines.
 * Resolves once the response has been handed to node (not necessarily flushed); never rejects.
 */
export type WebHandler = (
  request: http.IncomingMessage,
  response: http.ServerResponse,
  info: RequestInfo,
) => Promise<void>;

/**
 * Creates the handler for plain HTTP requests.
 *
 * - `config.root` absent (no `--web`): every request gets 405, as upstream.
 * - GET and HEAD are served from `config.root`; any other method gets 405 with `Allow: GET, HEAD`.
 * - `config.fileOnly`: directories without an index file are 404 instead of a listing.
 * - `options.authorize` is called first for every GET/HEAD when given (wire it for `--web-auth`).
 *
 * @example
 * ```ts
 * const handle = createWebHandler({ root: "/srv/novnc", fileOnly: false, auth: false });
 * server.on("request", (req, res) => handle(req, res, requestInfo(req)));
 * ```
 */
export function createWebHandler(config: WebConfig, options: WebHandlerOptions = {}): WebHandler {
  const baseLog = getLog("web");
  return async (request, response, info) => {
    const log = baseLog.child({ peer: info.peer });
    response.setHeader("Server", "WebSockify Deno");
    response.once("finish", () => {
      // Python's log_request(): "GET /path HTTP/1.1" 200 -
      const line = `${request.method} ${request.url} HTTP/${request.httpVersion}`;
      log.info(`"${line}" ${response.statusCode} -`);
    });
    try {
      const method = request.method ?? "";
      if (config.root === undefined || (method !== "GET" && method !== "HEAD")) {
        writeErrorPage(response, 405, { Allow: "GET, HEAD", Connection: "close" });
        return;
      }
      if (options.authorize !== undefined) {
        try {
          await options.authorize(info);
        } catch (error) {
          writeAuthError(response, toAuthError(error), logPeer(info));
          return;
        }
      }
      await serve(config.root, config.fileOnly, request, response);
    } catch (error) {
      log.error(`Serving '${request.url}' failed: ${errorMessage(error)}`);
      if (response.headersSent) response.destroy();
      else writeErrorPage(response, 500);
    }
  };
}

/** The outcome of mapping a request target onto the file system. */
type Resolved =
  | { readonly kind: "error"; readonly status: number }
  | { readonly kind: "redirect"; readonly location: string }
  | { readonly kind: "file"; readonly root: string; readonly path: string }
  | { readonly kind: "listing"; readonly path: string; readonly urlPath: string };

async function serve(
  root: string,
  fileOnly: boolean,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<void> {
  const resolved = await resolveRequest(root, fileOnly, request.url ?? "");
  switch (resolved.kind) {
    case "error":
      writeErrorPage(response, resolved.status);
      return;
    case "redirect":
      writeRedirect(response, resolved.location);
      return;
    case "listing":
      await writeListing(response, resolved.path, resolved.urlPath);
      return;
    case "file":
      await sendFile(request, response, resolved.root, resolved.path);
  }
}

/**
 * Maps the request target `target` onto a file under `root`, refusing everything that could leave
 * the root or reveal a dotfile. Exported for tests at this seam.
 */
export async function resolveRequest(
  root: string,
  fileOnly: boolean,
  target: string,
): Promise<Resolved> {
  const split = splitTarget(target);
  if (split === undefined) return { kind: "error", status: 400 };
  let urlPath: string;
  try {
    urlPath = decodeURIComponent(split.path);
  } catch {
    return { kind: "error", status: 400 };
  }
  const segments = urlPath.split("/").filter((segment) => segment !== "");
  if (!segments.every(isServableSegment)) return { kind: "error", status: 404 };

  const realRoot = await realpathOrUndefined(root);
  if (realRoot === undefined) return { kind: "error", status: 404 };
  const real = await containedRealpath(realRoot, join(realRoot, ...segments));
  if (real === undefined) return { kind: "error", status: 404 };
  const info = await stat(real);
  if (!info.isDirectory()) {
    if (urlPath.endsWith("/")) return { kind: "error", status: 404 };
    return { kind: "file", root: realRoot, path: real };
  }
  if (!urlPath.endsWith("/")) {
    // Collapse leading slashes: "//evil.example" + "/" would be a protocol-relative redirect.
    const location = `${split.path.replace(/^\/+/, "/")}/${split.query}`;
    return { kind: "redirect", location };
  }
  for (const name of INDEX_FILES) {
    const index = await containedRealpath(realRoot, join(real, name));
    if (index !== undefined && (await stat(index)).isFile()) {
      return { kind: "file", root: realRoot, path: index };
    }
  }
  if (fileOnly) return { kind: "error", status: 404 };
  return { kind: "listing", path: real, urlPath };
}

/** Splits a request target into its encoded path and `?query` (fragment dropped). */
function splitTarget(target: string): { path: string; query: string } | undefined {
  let rest = target;
  if (!rest.startsWith("/")) {
    // Absolute form (`GET http://host/path HTTP/1.1`); anything else (`*`, `a/b`) is malformed.
    try {
      const url = new URL(rest);
      if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
      rest = `${url.pathname}${url.search}`;
    } catch {
      return undefined;
    }
  }
  rest = rest.split("#", 1)[0] ?? "";
  const queryAt = rest.indexOf("?");
  if (queryAt < 0) return { path: rest, query: "" };
  return { path: rest.slice(0, queryAt), query: rest.slice(queryAt) };
}

/** `realpath(path)` when it exists and lies inside `realRoot` (itself resolved), else undefined. */
async function containedRealpath(realRoot: string, path: string): Promise<string | undefined> {
  const real = await realpathOrUndefined(path);
  if (real === undefined) return undefined;
  const prefix = realRoot.endsWith("/") ? realRoot : `${realRoot}/`;
  return real === realRoot || real.startsWith(prefix) ? real : undefined;
}

async function realpathOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await realpath(path);
  } catch {
    return undefined;
  }
}

/** Streams the file `path` (resolved, inside `root`) with `send`'s caching and range support. */
async function sendFile(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  root: string,
  path: string,
): Promise<void> {
  // Loaded on first use: only `--web` needs it, and it is a large part of the start-up.
  const { default: send } = await import("send");
  const prefix = root.endsWith("/") ? root : `${root}/`;
  // `send` percent-decodes the path it is given, so hand it an encoded one.
  const relative = path.slice(prefix.length).split("/").map(encodeURIComponent).join("/");
  send(request, `/${relative}`, { root, index: false, dotfiles: "deny" })
    .on("error", (error: { status?: number }) => {
      if (response.headersSent) response.destroy();
      else writeErrorPage(response, error.status ?? 500);
    })
    .on("directory", () => writeErrorPage(response, 404))
    .pipe(response);
}

/** Writes a Python-style HTML error page; HEAD responses get the headers only (node drops it). */
function writeErrorPage(
  response: http.ServerResponse,
  status: number,
  headers: Readonly<Record<string, string>> = {},
): void {
  const reason = REASONS[status] ?? "Error";
  const bytes = new TextEncoder().encode(errorPage(status, reason));
  response.writeHead(status, reason, {
    "Content-Type": "text/html;charset=utf-8",
    "Content-Length": String(bytes.byteLength),
    ...headers,
  });
  response.end(bytes);
}

function writeRedirect(response: http.ServerResponse, location: string): void {
  response.writeHead(301, "Moved Permanently", { Location: location, "Content-Length": "0" });
  response.end();
}
