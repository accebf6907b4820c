/**
 * HTTP on accepted connections: the `node:http` server that sockets are handed to, routing of
 * WebSocket upgrades and plain requests, the one place that maps typed errors to HTTP statuses,
 * error pages, and the `--web` static file server with its directory listings.
 *
 * @module
 */

export { createHttpServer, httpErrorOf, requestInfo } from "./http.ts";
export { errorPage, errorResponse } from "./http_response.ts";
export { createWebHandler } from "./web.ts";
