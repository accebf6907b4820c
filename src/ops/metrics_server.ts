/**
 * The `--metrics` listener (`node:http`): `GET /metrics` (Prometheus text) and `GET /healthz`
 * (200 `ok` while serving, 503 `draining` once a shutdown has started). It stays up while
 * sessions drain and is closed last.
 *
 * @module
 */

import http from "node:http";
import { errorMessage, StartupError } from "../errors.ts";
import type { Metrics } from "./metrics.ts";

/** A bound metrics listener. */
export interface MetricsServer {
  /** `host:port` as bound. */
  readonly address: string;
  close(): Promise<void>;
}

/** Binds `host:port` and serves `metrics`; a port in use is a {@link StartupError}. */
export async function startMetricsServer(
  metrics: Metrics,
  host: string,
  port: number,
): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" }).end();
    } else if (path === "/healthz") {
      const status = metrics.draining ? 503 : 200;
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(metrics.draining ? "draining\n" : "ok\n");
    } else if (path === "/metrics") {
      metrics.text().then(
        (text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
        (error) => res.writeHead(500, { "content-type": "text/plain" }).end(errorMessage(error)),
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: Error & { code?: string }) => {
      reject(
        error.code === "EADDRINUSE"
          ? new StartupError(
            `Metrics port ${host}:${port} is in use: stop the other process or choose another ` +
              "--metrics port",
          )
          : new StartupError(`Cannot listen for metrics on ${host}:${port}: ${error.message}`),
      );
    });
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  const boundPort = typeof bound === "object" && bound !== null ? bound.port : port;
  const address = host.includes(":") ? `[${host}]:${boundPort}` : `${host}:${boundPort}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
