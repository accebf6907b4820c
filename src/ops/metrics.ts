/**
 * `--metrics`: the proxy's counters in the Prometheus text format (through `prom-client`). The
 * server and sessions call a {@link Metrics} object that exists only when `--metrics` is given;
 * byte counts are plain numbers bumped per chunk and published by a `collect()` callback, so the
 * forwarding path pays one addition per chunk.
 *
 * @module
 */

import client from "prom-client";

/** Why an upgrade was refused (`websockify_handshake_failures_total{reason}`). */
export type HandshakeFailure = typeof HANDSHAKE_FAILURES[number];

/** Every reason, each published from 0 so that `rate()` and alerts see it before it happens. */
export const HANDSHAKE_FAILURES = [
  "bad_request",
  "method",
  "not_upgrade",
  "header_timeout",
  "no_request",
  "origin",
  "token",
  "auth",
  "internal",
] as const;

/**
 * Why a connection ended before HTTP at the TLS layer (`websockify_tls_failures_total{reason}`):
 * the handshake failed (the client rejected the certificate, or spoke no TLS the server takes),
 * `--verify-client` refused its certificate, TLS came but the proxy has no certificate, or
 * `--ssl-only` refused a plain client.
 */
export const TLS_FAILURES = [
  "handshake",
  "client_certificate",
  "no_certificate",
  "not_tls",
] as const;
export type TlsFailure = typeof TLS_FAILURES[number];

/**
 * How sessions ended (`websockify_sessions_ended_total{reason}`): the client closed, the target
 * closed, the target failed (read or write error), the proxy drained, `--heartbeat` dropped a
 * silent client, `--inactivity-timeout` closed an idle session.
 */
export const SESSION_ENDS = [
  "client",
  "target",
  "target_error",
  "shutdown",
  "heartbeat",
  "inactivity",
] as const;
export type SessionEnd = typeof SESSION_ENDS[number];

/** Why a connection was refused before HTTP (`websockify_connections_refused_total{reason}`). */
export type ConnectionRefusal = "max_connections" | "per_ip";

/** Payload bytes forwarded, per direction; the pump adds to these fields directly. */
export interface ByteCounts {
  clientToTarget: number;
  targetToClient: number;
}

/** Default prom-client metrics that break the Prometheus naming rules. */
const LINT_FAILURES = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/** The registry of one process and the calls that feed it. */
export class Metrics {
  /** Prometheus registry of this process (default process metrics included). */
  readonly registry: client.Registry = new client.Registry();
  /** Bytes forwarded so far; published at scrape time. */
  readonly bytes: ByteCounts = { clientToTarget: 0, targetToClient: 0 };
  /** Set when a drain starts: `/healthz` answers 503 from then on. */
  draining = false;
  /** Set once the proxy's listener is bound: `/healthz` answers 503 `starting` before. */
  listening = false;
  readonly #active: client.Gauge;
  readonly #sessions: client.Counter;
  readonly #ended: client.Counter<"reason">;
  readonly #handshakeFailures: client.Counter<"reason">;
  readonly #connectFailures: client.Counter;
  readonly #authFailures: client.Counter;
  readonly #refused: client.Counter<"reason">;
  readonly #tlsFailures: client.Counter<"reason">;
  readonly #duration: client.Histogram;

  constructor() {
    const registers = [this.registry];
    const bytes = this.bytes;
    this.#active = new client.Gauge({
      name: "websockify_sessions_active",
      help: "WebSocket sessions currently connected to their target",
      registers,
    });
    this.#sessions = new client.Counter({
      name: "websockify_sessions_total",
      help: "WebSocket sessions connected to their target since start",
      registers,
    });
    this.#ended = new client.Counter({
      name: "websockify_sessions_ended_total",
      help: "WebSocket sessions ended, by which side or rule ended them",
      labelNames: ["reason"],
      registers,
    });
    for (const reason of SESSION_ENDS) this.#ended.inc({ reason }, 0);
    new client.Counter({
      name: "websockify_bytes_total",
      help: "Payload bytes forwarded, by direction",
      labelNames: ["direction"],
      registers,
      collect() {
        this.reset();
        this.inc({ direction: "client_to_target" }, bytes.clientToTarget);
        this.inc({ direction: "target_to_client" }, bytes.targetToClient);
      },
    });
    this.#handshakeFailures = new client.Counter({
      name: "websockify_handshake_failures_total",
      help: "Requests refused instead of upgraded to a WebSocket session, by reason",
      labelNames: ["reason"],
      registers,
    });
    for (const reason of HANDSHAKE_FAILURES) this.#handshakeFailures.inc({ reason }, 0);
    this.#connectFailures = new client.Counter({
      name: "websockify_target_connect_failures_total",
      help: "Sessions whose target could not be reached",
      registers,
    });
    this.#authFailures = new client.Counter({
      name: "websockify_auth_failures_total",
      help: "Upgrades refused by the auth plugin",
      registers,
    });
    this.#refused = new client.Counter({
      name: "websockify_connections_refused_total",
      help: "Connections refused by an admission limit, by reason",
      labelNames: ["reason"],
      registers,
    });
    for (const reason of ["max_connections", "per_ip"]) this.#refused.inc({ reason }, 0);
    this.#tlsFailures = new client.Counter({
      name: "websockify_tls_failures_total",
      help: "Connections that ended at the TLS layer before HTTP, by reason",
      labelNames: ["reason"],
      registers,
    });
    for (const reason of TLS_FAILURES) this.#tlsFailures.inc({ reason }, 0);
    new client.Gauge({
      name: "websockify_processes",
      help: "Processes serving (summed over a --workers group)",
      registers,
    }).set(1);
    this.#duration = new client.Histogram({
      name: "websockify_session_duration_seconds",
      help: "Length of the sessions that have ended",
      buckets: [0.1, 1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600],
      registers,
    });
    client.collectDefaultMetrics({ register: this.registry });
    // Gauges named `_total`, which `promtool check metrics` rejects (and mostly 0 under Deno).
    for (const name of LINT_FAILURES) this.registry.removeSingleMetric(name);
  }

  /** A session reached its target; returns the call that records its end. */
  sessionStarted(): (reason: SessionEnd) => void {
    this.#active.inc();
    this.#sessions.inc();
    const started = performance.now();
    return (reason) => {
      this.#active.dec();
      this.#ended.inc({ reason });
      this.#duration.observe((performance.now() - started) / 1000);
    };
  }

  /** An upgrade was refused. */
  handshakeFailed(reason: HandshakeFailure): void {
    this.#handshakeFailures.inc({ reason });
    if (reason === "auth") this.#authFailures.inc();
  }

  /** A session's target could not be dialled. */
  targetConnectFailed(): void {
    this.#connectFailures.inc();
  }

  /** A connection ended at the TLS layer. */
  tlsFailed(reason: TlsFailure): void {
    this.#tlsFailures.inc({ reason });
  }

  /** A connection was refused by `--max-connections` or the per-address limit. */
  connectionRefused(reason: ConnectionRefusal): void {
    this.#refused.inc({ reason });
  }

  /** The exposition text of this process. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** This process's metrics as JSON, for a `--workers` primary to sum. */
  json(): Promise<client.MetricObjectWithValues<client.MetricValue<string>>[]> {
    return this.registry.getMetricsAsJSON();
  }
}

/** Sums the metric JSON of every process of a `--workers` group into one exposition text. */
export function aggregateText(
  processes: client.MetricObjectWithValues<client.MetricValue<string>>[][],
): Promise<string> {
  return client.AggregatorRegistry.aggregate(processes).metrics();
}
