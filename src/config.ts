/**
 * The proxy's configuration: one readonly object, nested by concern, built once by
 * `parseArgs()` in `src/cli.ts` and never mutated afterwards.
 *
 * @module
 */

import type { StdioConfig } from "./stdio/program.ts";
import type { Target } from "./types.ts";

/** Where the proxy listens. */
export type ListenConfig =
  | {
    readonly kind: "tcp";
    /** Host to bind; `""` means all interfaces (`0.0.0.0`, or `::` with `-6`). */
    readonly host: string;
    /** Port to bind; 0 picks a free port (printed in the banner). */
    readonly port: number;
    /** `-6`: prefer IPv6 when resolving the listen host. @default false */
    readonly preferIpv6: boolean;
  }
  | {
    readonly kind: "unix";
    /** `--unix-listen`: socket path; an existing file there is replaced. */
    readonly path: string;
    /** `--unix-listen-mode`: permission bits of the socket file. @default 0o600 */
    readonly mode: number;
  };

/** Where sessions go. */
export type TargetConfig =
  | {
    /** One fixed target from the command line or `--unix-target`. */
    readonly kind: "fixed";
    readonly target: Target;
  }
  | {
    /** A token plugin picks the target per connection. */
    readonly kind: "tokens";
    /** `--token-plugin`: a built-in name or a module path. */
    readonly plugin: string;
    /** `--token-source`. */
    readonly source: string | undefined;
    /** `--host-token`: take the token from the Host header. @default false */
    readonly hostToken: boolean;
  }
  | {
    /** Wrap mode: run a command and proxy to the port it binds. */
    readonly kind: "wrap";
    /** The command line after `--`. */
    readonly command: readonly string[];
    /** `--wrap-mode`. @default "exit" */
    readonly mode: "exit" | "ignore" | "respawn";
  }
  | {
    /** `--stdio`: a program per session (settings in {@link Config.stdio}). */
    readonly kind: "stdio";
    /** The command line after `--`. */
    readonly command: readonly string[];
  };

/** TLS towards clients (`wss://`). */
export interface TlsConfig {
  /** `--cert`: absolute path of the PEM certificate chain. @default "<cwd>/self.pem" */
  readonly cert: string;
  /** `--key`: absolute path of the PEM key; absent means the key is in `cert`. */
  readonly key: string | undefined;
  /** `--key-password`. */
  readonly keyPassword: string | undefined;
  /** `--ssl-only`: refuse plain clients. @default false */
  readonly sslOnly: boolean;
  /** `--verify-client`: require a client certificate signed by `cafile`. @default false */
  readonly verifyClient: boolean;
  /** `--cafile`: CA bundle for client certificates. */
  readonly cafile: string | undefined;
  /** `--ssl-version`: minimum TLS version. @default "default" */
  readonly minVersion: "default" | "tlsv1_1" | "tlsv1_2" | "tlsv1_3";
  /** `--ssl-ciphers`: OpenSSL cipher list. */
  readonly ciphers: string | undefined;
}

/** TLS towards the target (`--ssl-target`). */
export interface TargetTlsConfig {
  /** `--ssl-target`. @default false */
  readonly enabled: boolean;
  /** `--ssl-target-ca`: extra CA file to trust for targets. */
  readonly ca: string | undefined;
  /** `--ssl-target-insecure`: skip verification of the target's certificate. @default false */
  readonly insecure: boolean;
}

/** The static file server (`--web`). */
export interface WebConfig {
  /** `--web`: absolute path of the web root; absent means no file serving (405). */
  readonly root: string | undefined;
  /** `--file-only`: no directory listings. @default false */
  readonly fileOnly: boolean;
  /** `--web-auth`: run the auth plugin for file requests too. @default false */
  readonly auth: boolean;
}

/** Request authentication. */
export interface AuthConfig {
  /** `--auth-plugin`: a built-in name or a module path. */
  readonly plugin: string | undefined;
  /** `--auth-source`. */
  readonly source: string | undefined;
  /** `--origin`: allowed origins (normalised); empty means any. */
  readonly origins: readonly string[];
}

/** Syslog destination (`--syslog`). */
export type SyslogConfig =
  | { readonly kind: "udp"; readonly host: string; readonly port: number }
  | { readonly kind: "unix"; readonly path: string };

/** Logging. */
export interface LogConfig {
  /** `-v`: debug lines. @default false */
  readonly verbose: boolean;
  /** `--traffic`: per-frame legend characters on stdout. @default false */
  readonly traffic: boolean;
  /** `--log-file`: absolute path of a log file. */
  readonly file: string | undefined;
  /** `--syslog`. */
  readonly syslog: SyslogConfig | undefined;
  /** `--legacy-syslog`: BSD header instead of RFC 5424. @default false */
  readonly legacySyslog: boolean;
  /** `--record`: absolute path prefix of per-session recordings. */
  readonly record: string | undefined;
}

/** Timers and limits. Durations are in seconds; 0 turns a timer off. */
export interface LimitsConfig {
  /** `--heartbeat`: ping interval; no pong within twice that closes the session. @default 0 */
  readonly heartbeat: number;
  /**
   * `--inactivity-timeout`: a session with no payload either way for this long is closed with
   * 1001 (nginx's `proxy_read_timeout`, HAProxy's `timeout tunnel`). @default 0
   */
  readonly inactivityTimeout: number;
  /** `--connect-timeout`: how long dialling a target may take. @default 10 */
  readonly connectTimeout: number;
  /** `--header-timeout`: how long a client may take to send its request headers. @default 10 */
  readonly headerTimeout: number;
  /** `--max-message-size`: largest client message in bytes (close 1009 above). @default 64 MiB */
  readonly maxMessageSize: number;
  /** `--timeout`: stop accepting this long after start. @default 0 */
  readonly timeout: number;
  /** `--idle-timeout`: exit after this long with no sessions. @default 0 */
  readonly idleTimeout: number;
  /** `--run-once`: exit after the first WebSocket session ends. @default false */
  readonly runOnce: boolean;
}

/** `--metrics [HOST:]PORT`. */
export interface MetricsAddress {
  /** @default "127.0.0.1" */
  readonly host: string;
  readonly port: number;
}

/** Admission limits on open WebSocket sessions; absent means no limit. */
export interface AdmissionConfig {
  /** `--max-connections`: sessions open at once (503 above). */
  readonly maxConnections: number | undefined;
  /** `--max-connections-per-ip`: sessions open at once per client address (429 above). */
  readonly maxConnectionsPerIp: number | undefined;
}

/** The whole configuration. */
export interface Config {
  readonly listen: ListenConfig;
  readonly target: TargetConfig;
  readonly tls: TlsConfig;
  readonly targetTls: TargetTlsConfig;
  readonly web: WebConfig;
  readonly auth: AuthConfig;
  readonly log: LogConfig;
  readonly limits: LimitsConfig;
  /** `--strict-binary`: close text messages with 1003 as upstream. @default false */
  readonly strictBinary: boolean;
  /**
   * `--permessage-deflate`: accept the WebSocket compression extension (RFC 7692, no context
   * takeover) when a client offers it. @default false
   */
  readonly permessageDeflate: boolean;
  /** `-D`: detach and run in the background. @default false */
  readonly daemon: boolean;
  /** `--workers`: processes sharing the listening port. @default 1 */
  readonly workers: number;
  // Operations: metrics, health, admission limits.
  /** `--metrics`: where `/metrics` and `/healthz` are served; absent means no metrics. */
  readonly metrics?: MetricsAddress | undefined;
  /** `--max-connections`, `--max-connections-per-ip`. */
  readonly admission: AdmissionConfig;
  /** `--reuse-port`: bind with `SO_REUSEPORT` (single-machine takeover). @default false */
  readonly reusePort: boolean;
  /**
   * `--shutdown-delay`: seconds between a stop signal (when `/healthz` turns 503) and the drain
   * (listener closed, sessions closed with 1001). @default 0
   */
  readonly shutdownDelay: number;

  // Client addresses: trusted proxies, PROXY protocol, log format.
  /** `--log-format`: upstream's text lines, or one JSON object per line. @default "text" */
  readonly logFormat: "text" | "json";
  /** `--trusted-proxy`: addresses and CIDR ranges of trusted load balancers; absent: none. */
  readonly trustedProxy: readonly string[] | undefined;
  /** `--proxy-protocol`: connections start with a PROXY v1/v2 header. @default false */
  readonly proxyProtocol: boolean;

  // Programs over stdio.
  /** `--stdio` and its options; absent without `--stdio`. */
  readonly stdio?: StdioConfig | undefined;
}
