/**
 * The `--metrics` listener (`node:http`): `GET /metrics` (Prometheus text) and `GET /healthz`
 * (200 `ok` while serving, 503 `starting` until the proxy listens and `draining` once a shutdown
 * has started, `--shutdown-delay` included). It stays up while sessions drain and is closed last.
 *
 * @module
 */

import http from "node:http";
import { errorMessage, StartupError } from "../errors.ts";
import { aggregateText, type Metrics } from "./metrics.ts";

/** Options of {@link startMetricsServer}. */
export interface MetricsServerOptions {
  /**
   * `--workers` primary: the metrics listeners of the other processes (`host:port`); `/metrics`
   * then answers the sum over all of them and this process.
   */
  readonly peers?: () => Promise<string[]>;
}

/** How long a worker's metrics may take before a scrape goes on without them. */
const PEER_TIMEOUT_MS = 2000;

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
  options: MetricsServerOptions = {},
): Promise<MetricsServer> {
  const exposition = async (): Promise<string> => {
    if (!options.peers) return await metrics.text();
    const peers = await options.peers();
    // A worker that has gone (or hangs) is left out rather than failing the whole scrape.
    const others = await Promise.all(
      peers.map((peer) =>
        fetch(`http://${peer}/metrics.json`, { signal: AbortSignal.timeout(PEER_TIMEOUT_MS) })
          .then((response) => response.ok ? response.json() : undefined)
          .catch(() => undefined)
      ),
    );
    return await aggregateText([await metrics.json(), ...others.filter((json) => json)]);
  };
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" }).end();
    } else if (path === "/healthz") {
      const state = metrics.draining ? "draining" : metrics.listening ? "ok" : "starting";
      res.writeHead(state === "ok" ? 200 : 503, { "content-type": "text/plain" });
      res.end(`${state}\n`);
    } else if (path === "/metrics") {
      exposition().then(
        (text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
        (error) => res.writeHead(500, { "content-type": "text/plain" }).end(errorMessage(error)),
      );
    } else if (path === "/metrics.json") {
      metrics.json().then(
        (json) =>
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(json)),
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
