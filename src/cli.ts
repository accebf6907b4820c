/**
 * The command line: one option table drives both the parser and `--help`. `parseArgs()` is pure:
 * it reads no files and never exits; errors are thrown as `ConfigError` (exit code 2).
 *
 * @module
 */

import { Command, CommanderError, Option } from "commander";
import type { Config, ListenConfig, MetricsAddress, SyslogConfig, TargetConfig } from "./config.ts";
import { ConfigError, errorMessage } from "./errors.ts";
import { parseTrustedProxies } from "./listen/client_address.ts";
import type { StdioConfig } from "./stdio/program.ts";
import type { Target } from "./types.ts";

/** The program's version, printed by `--version`. */
export const VERSION = "0.1.0";

const USAGE = [
  "[options] [source_addr:]source_port target_addr:target_port",
  "       websockify [options] --token-plugin=CLASS [source_addr:]source_port",
  "       websockify [options] --unix-target=FILE [source_addr:]source_port",
  "       websockify [options] [source_addr:]source_port -- WRAP_COMMAND_LINE",
  "       websockify [options] --stdio [source_addr:]source_port -- COMMAND [ARGS...]",
].join("\n");

type Kind = "flag" | "string" | "seconds" | "integer" | "octal" | "bytes";

interface OptionSpec {
  readonly flags: string;
  readonly description: string;
  readonly kind: Kind;
  readonly defaultValue?: string | number | boolean;
  readonly choices?: readonly string[];
}

/** Every option, in `--help` order. */
const OPTIONS: readonly OptionSpec[] = [
  { flags: "-v, --verbose", description: "verbose messages", kind: "flag" },
  {
    flags: "--traffic",
    description: "per frame traffic legend characters on stdout",
    kind: "flag",
  },
  {
    flags: "--record <FILE>",
    description: "record sessions to FILE.[session_number]",
    kind: "string",
  },
  { flags: "--log-file <FILE>", description: "also write log lines to FILE", kind: "string" },
  {
    flags: "--syslog <SERVER>",
    description: "also log to syslog: host:port over UDP, or a unix socket such as /dev/log",
    kind: "string",
  },
  {
    flags: "--legacy-syslog",
    description: "use the old BSD syslog header instead of RFC 5424",
    kind: "flag",
  },
  {
    flags: "-D, --daemon",
    description: "become a daemon (background process)",
    kind: "flag",
  },
  {
    flags: "--run-once",
    description: "handle a single WebSocket connection and exit",
    kind: "flag",
  },
  {
    flags: "--timeout <N>",
    description: "stop accepting new connections N seconds after start",
    kind: "seconds",
    defaultValue: 0,
  },
  {
    flags: "--idle-timeout <N>",
    description: "exit after N seconds without any connection",
    kind: "seconds",
    defaultValue: 0,
  },
  {
    flags: "--cert <CERT>",
    description: "TLS certificate file (PEM, may also hold the key)",
    kind: "string",
    defaultValue: "self.pem",
  },
  { flags: "--key <KEY>", description: "TLS key file, if not in CERT", kind: "string" },
  {
    flags: "--key-password <PASSWORD>",
    description: "password of an encrypted KEY",
    kind: "string",
  },
  { flags: "--ssl-only", description: "refuse non-TLS connections", kind: "flag" },
  { flags: "--ssl-target", description: "connect to the target over TLS", kind: "flag" },
  {
    flags: "--ssl-target-ca <FILE>",
    description: "trust this CA (PEM) for --ssl-target besides the system CAs",
    kind: "string",
  },
  {
    flags: "--ssl-target-insecure",
    description: "do not verify the target's certificate (dangerous)",
    kind: "flag",
  },
  {
    flags: "--verify-client",
    description: "require a client certificate signed by --cafile",
    kind: "flag",
  },
  { flags: "--cafile <FILE>", description: "CA file for --verify-client", kind: "string" },
  {
    flags: "--ssl-version <VERSION>",
    description: "minimum TLS version",
    kind: "string",
    defaultValue: "default",
    choices: ["default", "tlsv1_1", "tlsv1_2", "tlsv1_3"],
  },
  {
    flags: "--ssl-ciphers <LIST>",
    description: "allowed TLS ciphers (OpenSSL list)",
    kind: "string",
  },
  {
    flags: "--unix-listen <FILE>",
    description: "listen on a unix socket instead of a TCP port",
    kind: "string",
  },
  {
    flags: "--unix-listen-mode <MODE>",
    description: "permissions of the --unix-listen socket, octal",
    kind: "octal",
    defaultValue: "600",
  },
  {
    flags: "-6, --prefer-ipv6",
    description: "prefer IPv6 when resolving the listen address",
    kind: "flag",
  },
  {
    flags: "--unix-target <FILE>",
    description: "connect to a unix socket target",
    kind: "string",
  },
  { flags: "--web <DIR>", description: "serve files from DIR on the same port", kind: "string" },
  {
    flags: "--web-auth",
    description: "require the auth plugin for file requests too",
    kind: "flag",
  },
  { flags: "--file-only", description: "disable directory listings in --web", kind: "flag" },
  {
    flags: "--wrap-mode <MODE>",
    description: "what to do when the wrapped command exits",
    kind: "string",
    defaultValue: "exit",
    choices: ["exit", "ignore", "respawn"],
  },
  {
    flags: "--target-config <FILE>",
    description: "deprecated: same as --token-plugin TokenFile --token-source FILE",
    kind: "string",
  },
  {
    flags: "--token-plugin <CLASS>",
    description: "pick the target per connection with this token plugin (name or module path)",
    kind: "string",
  },
  { flags: "--token-source <ARG>", description: "argument for the token plugin", kind: "string" },
  {
    flags: "--host-token",
    description: "take the token from the Host header instead of ?token=",
    kind: "flag",
  },
  {
    flags: "--auth-plugin <CLASS>",
    description: "authenticate requests with this plugin (name or module path)",
    kind: "string",
  },
  { flags: "--auth-source <ARG>", description: "argument for the auth plugin", kind: "string" },
  {
    flags: "--origin <LIST>",
    description: "allowed Origin values, comma or space separated (403 otherwise)",
    kind: "string",
  },
  {
    flags: "--heartbeat <N>",
    description: "ping the client every N seconds; close it when no pong comes within 2N",
    kind: "seconds",
    defaultValue: 0,
  },
  {
    flags: "--inactivity-timeout <N>",
    description:
      "close a session with 1001 after N seconds without data either way (pings do not count)",
    kind: "seconds",
    defaultValue: 0,
  },
  {
    flags: "--strict-binary",
    description: "close text messages with 1003 as upstream does, instead of forwarding them",
    kind: "flag",
  },
  {
    flags: "--permessage-deflate",
    description:
      "compress messages (WebSocket permessage-deflate) with clients that offer it; costs CPU per message",
    kind: "flag",
  },
  {
    flags: "--connect-timeout <N>",
    description: "seconds allowed for connecting to the target",
    kind: "seconds",
    defaultValue: 10,
  },
  {
    flags: "--header-timeout <N>",
    description:
      "seconds allowed for a client to send its request headers (each request on a kept-alive connection)",
    kind: "seconds",
    defaultValue: 10,
  },
  {
    flags: "--max-message-size <BYTES>",
    description: "largest client message; larger ones close the session with 1009",
    kind: "bytes",
    defaultValue: 64 * 1024 * 1024,
  },
  {
    flags: "--workers <N>",
    description: "number of processes sharing the listening port",
    kind: "integer",
    defaultValue: 1,
  },
  // Operations: metrics, health, admission limits (issue 10).
  {
    flags: "--metrics <[HOST:]PORT>",
    description: "serve /metrics (Prometheus) and /healthz on a second listener (host 127.0.0.1)",
    kind: "string",
  },
  {
    flags: "--max-connections <N>",
    description: "open sessions at most; further upgrades get 503 with Retry-After",
    kind: "integer",
  },
  {
    flags: "--max-connections-per-ip <N>",
    description: "open sessions per client address at most; further upgrades get 429",
    kind: "integer",
  },
  {
    flags: "--reuse-port",
    description:
      "bind with SO_REUSEPORT so a new proxy can take over the port while this one drains",
    kind: "flag",
  },
  {
    flags: "--shutdown-delay <N>",
    description:
      "on SIGTERM/SIGINT, answer /healthz with 503 and keep serving N seconds before draining (needs --metrics)",
    kind: "seconds",
    defaultValue: 0,
  },
  // Client addresses: trusted proxies, PROXY protocol, log format (issue 10).
  {
    flags: "--log-format <FORMAT>",
    description: "log lines as upstream's text, or one JSON object per line for log shippers",
    kind: "string",
    defaultValue: "text",
    choices: ["text", "json"],
  },
  {
    flags: "--trusted-proxy <LIST>",
    description:
      "comma-separated addresses or CIDR ranges of load balancers whose X-Forwarded-For or Forwarded header names the client",
    kind: "string",
  },
  {
    flags: "--proxy-protocol",
    description:
      "every connection starts with a HAProxy PROXY protocol v1 or v2 header naming the client",
    kind: "flag",
  },
  // Programs over stdio (issue 13).
  {
    flags: "--stdio",
    description: "run the command after '--' for each session, over its stdin/stdout",
    kind: "flag",
  },
  {
    flags: "--stdio-grace <N>",
    description: "with --stdio: seconds between SIGTERM and SIGKILL when a session ends",
    kind: "seconds",
    defaultValue: 5,
  },
  {
    flags: "--stdio-env-pass <LIST>",
    description: "with --stdio: comma-separated variables passed from the proxy's environment",
    kind: "string",
  },
  {
    flags: "--stdio-text",
    description: "with --stdio: one text message per output line, a newline after each message",
    kind: "flag",
  },
  {
    flags: "--max-forks <N>",
    description: "with --stdio: programs running at once, further upgrades get 503 (0: no limit)",
    kind: "integer",
    defaultValue: 0,
  },
];

/** What the command line asks for: run the proxy, or print text (help, version) and exit 0. */
export type ParsedArgs =
  | { readonly kind: "run"; readonly config: Config }
  | { readonly kind: "print"; readonly text: string };

/** Options of {@link parseArgs}. */
export interface ParseArgsOptions {
  /** Directory relative paths are resolved against. */
  readonly cwd: string;
}

/** Parses the command line (without the program name) into a {@link Config}. */
export function parseArgs(argv: readonly string[], options: ParseArgsOptions): ParsedArgs {
  const split = argv.indexOf("--");
  const own = split >= 0 ? argv.slice(0, split) : argv;
  const wrapCommand = split >= 0 ? argv.slice(split + 1) : undefined;

  let output = "";
  const program = buildProgram((text) => (output += text));
  try {
    program.parse([...own], { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") {
        return { kind: "print", text: output };
      }
      throw new ConfigError(commanderMessage(error.message));
    }
    throw error;
  }
  const values = program.opts<Record<string, unknown>>();
  return {
    kind: "run",
    config: buildConfig(values, program.args, wrapCommand, options.cwd),
  };
}

/**
 * Commander's "error: unknown option '-x'." in house style: one line, sentence case, no final
 * period.
 */
function commanderMessage(message: string): string {
  const text = message.replace(/^error: /, "")
    .replace(/\s*\n\(Did you mean (.*)\)$/s, " (did you mean $1)")
    .replace(/\.$/, "");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The `--help` text. */
export function helpText(): string {
  return buildProgram(() => {}).helpInformation();
}

function buildProgram(write: (text: string) => void): Command {
  const program = new Command("websockify")
    .usage(USAGE)
    .description("WebSocket to TCP proxy/bridge")
    .argument("[addresses...]", "listen address, then target address")
    .version(VERSION, "--version", "print the version and exit")
    .helpOption("-h, --help", "show this help message and exit")
    .allowExcessArguments(true)
    .exitOverride()
    .configureOutput({ writeOut: write, writeErr: () => {} });
  for (const spec of OPTIONS) {
    const option = new Option(spec.flags, spec.description);
    if (spec.choices) option.choices([...spec.choices]);
    if (spec.defaultValue !== undefined) option.default(spec.defaultValue);
    program.addOption(option);
  }
  return program;
}

function buildConfig(
  values: Record<string, unknown>,
  positionals: readonly string[],
  wrapCommand: readonly string[] | undefined,
  cwd: string,
): Config {
  const text = (name: string): string | undefined => {
    const value = values[name];
    return typeof value === "string" ? value : undefined;
  };
  const flag = (name: string): boolean => values[name] === true;
  const absolute = (path: string | undefined) =>
    path === undefined ? undefined : resolvePath(cwd, path);

  let tokenPlugin = text("tokenPlugin");
  let tokenSource = text("tokenSource");
  const targetConfigFile = text("targetConfig");
  if (targetConfigFile !== undefined) {
    tokenPlugin = "TokenFile";
    tokenSource = resolvePath(cwd, targetConfigFile);
  }
  requireWith(
    tokenSource !== undefined && tokenPlugin === undefined,
    "--token-plugin",
    "--token-source",
  );
  requireWith(flag("hostToken") && tokenPlugin === undefined, "--token-plugin", "--host-token");
  requireWith(
    text("authSource") !== undefined && !text("authPlugin"),
    "--auth-plugin",
    "--auth-source",
  );
  requireWith(flag("webAuth") && !text("authPlugin"), "--auth-plugin", "--web-auth");
  requireWith(flag("webAuth") && !text("web"), "--web", "--web-auth");
  requireWith(flag("legacySyslog") && !text("syslog"), "--syslog", "--legacy-syslog");
  requireWith(text("cafile") !== undefined && !flag("verifyClient"), "--verify-client", "--cafile");
  requireWith(
    (text("sslTargetCa") !== undefined || flag("sslTargetInsecure")) && !flag("sslTarget"),
    "--ssl-target",
    text("sslTargetCa") !== undefined ? "--ssl-target-ca" : "--ssl-target-insecure",
  );

  const unixListen = text("unixListen");
  const rest = [...positionals];
  let listen: ListenConfig;
  if (unixListen !== undefined) {
    listen = {
      kind: "unix",
      path: resolvePath(cwd, unixListen),
      mode: parseOctal(String(values["unixListenMode"])),
    };
  } else {
    const first = rest.shift();
    if (first === undefined) throw new ConfigError("Too few arguments");
    const { host, port } = parseHostPort(first, "listen");
    listen = { kind: "tcp", host, port, preferIpv6: flag("preferIpv6") };
  }

  let target: TargetConfig;
  const unixTarget = text("unixTarget");
  const stdio = parseStdio(values, flag, wrapCommand, rest, tokenPlugin, text("unixTarget"), cwd);
  if (stdio !== undefined) {
    target = { kind: "stdio", command: stdio.command };
  } else if (wrapCommand !== undefined) {
    const command = [...rest, ...wrapCommand];
    if (command.length === 0) {
      throw new ConfigError("No command to wrap after '--': give the program and its arguments");
    }
    target = { kind: "wrap", command, mode: text("wrapMode") as "exit" | "ignore" | "respawn" };
  } else if (tokenPlugin !== undefined) {
    if (rest.length > 0) {
      throw new ConfigError(
        "Too many arguments: a target address cannot be combined with --token-plugin",
      );
    }
    target = {
      kind: "tokens",
      plugin: tokenPlugin,
      source: tokenSource,
      hostToken: flag("hostToken"),
    };
  } else if (unixTarget !== undefined) {
    if (rest.length > 0) {
      throw new ConfigError(
        "Too many arguments: a target address cannot be combined with --unix-target",
      );
    }
    target = { kind: "fixed", target: { kind: "unix", path: resolvePath(cwd, unixTarget) } };
  } else {
    const second = rest.shift();
    if (second === undefined) throw new ConfigError("Too few arguments");
    if (rest.length > 0) throw new ConfigError("Too many arguments");
    const { host, port } = parseHostPort(second, "target");
    if (port === 0) throw new ConfigError("Error parsing target port: '0' is not a usable port");
    const fixed: Target = { kind: "tcp", host: host === "" ? "localhost" : host, port };
    target = { kind: "fixed", target: fixed };
  }
  if (target.kind !== "wrap" && rest.length > 0) throw new ConfigError("Too many arguments");

  const web = absolute(text("web"));
  const syslog = text("syslog");
  return {
    listen,
    target,
    tls: {
      cert: resolvePath(cwd, text("cert") ?? "self.pem"),
      key: absolute(text("key")),
      keyPassword: text("keyPassword"),
      sslOnly: flag("sslOnly"),
      verifyClient: flag("verifyClient"),
      cafile: absolute(text("cafile")),
      minVersion: text("sslVersion") as Config["tls"]["minVersion"],
      ciphers: text("sslCiphers"),
    },
    targetTls: {
      enabled: flag("sslTarget"),
      ca: absolute(text("sslTargetCa")),
      insecure: flag("sslTargetInsecure"),
    },
    web: { root: web, fileOnly: flag("fileOnly"), auth: flag("webAuth") },
    auth: {
      plugin: text("authPlugin"),
      source: text("authSource"),
      origins: parseOrigins(text("origin")),
    },
    log: {
      verbose: flag("verbose"),
      traffic: flag("traffic"),
      file: absolute(text("logFile")),
      syslog: syslog === undefined ? undefined : parseSyslog(syslog),
      legacySyslog: flag("legacySyslog"),
      record: absolute(text("record")),
    },
    limits: {
      heartbeat: parseSeconds(values["heartbeat"], "--heartbeat"),
      inactivityTimeout: parseSeconds(values["inactivityTimeout"], "--inactivity-timeout"),
      connectTimeout: parseSeconds(values["connectTimeout"], "--connect-timeout"),
      headerTimeout: parseSeconds(values["headerTimeout"], "--header-timeout"),
      maxMessageSize: parseBytes(values["maxMessageSize"]),
      timeout: parseSeconds(values["timeout"], "--timeout"),
      idleTimeout: parseSeconds(values["idleTimeout"], "--idle-timeout"),
      runOnce: flag("runOnce"),
    },
    strictBinary: flag("strictBinary"),
    permessageDeflate: flag("permessageDeflate"),
    daemon: flag("daemon"),
    workers: parseWorkers(values["workers"]),
    // Operations: metrics, health, admission limits.
    ...optional("metrics", parseMetricsAddress(text("metrics"))),
    admission: {
      maxConnections: parseLimit(values["maxConnections"], "--max-connections"),
      maxConnectionsPerIp: parseLimit(values["maxConnectionsPerIp"], "--max-connections-per-ip"),
    },
    reusePort: flag("reusePort"),
    shutdownDelay: parseShutdownDelay(values["shutdownDelay"], text("metrics")),
    // Client addresses: trusted proxies, PROXY protocol, log format.
    logFormat: text("logFormat") as Config["logFormat"],
    trustedProxy: parseTrustedProxyOption(text("trustedProxy")),
    proxyProtocol: flag("proxyProtocol"),
    // Programs over stdio.
    ...(stdio ? { stdio } : {}),
  };
}

/** `--stdio` and its options; `undefined` without `--stdio`. */
function parseStdio(
  values: Record<string, unknown>,
  flag: (name: string) => boolean,
  command: readonly string[] | undefined,
  rest: readonly string[],
  tokenPlugin: string | undefined,
  unixTarget: string | undefined,
  cwd: string,
): StdioConfig | undefined {
  if (!flag("stdio")) {
    for (const name of ["stdioText", "stdioEnvPass"]) {
      if (values[name] !== undefined) {
        const option = name === "stdioText" ? "--stdio-text" : "--stdio-env-pass";
        requireWith(true, "--stdio", option);
      }
    }
    return undefined;
  }
  if (tokenPlugin !== undefined || unixTarget !== undefined) {
    const option = tokenPlugin !== undefined ? "--token-plugin" : "--unix-target";
    throw new ConfigError(
      `--stdio runs a program per session: it cannot be combined with ${option}`,
    );
  }
  if (rest.length > 0) {
    throw new ConfigError(
      "--stdio takes no target address: give the program after '--' (websockify --stdio PORT -- COMMAND)",
    );
  }
  if (command === undefined || command.length === 0) {
    throw new ConfigError("--stdio needs a command after '--': websockify --stdio PORT -- COMMAND");
  }
  const envPass = String(values["stdioEnvPass"] ?? "").split(",").map((name) => name.trim())
    .filter((name) => name !== "");
  const maxForks = Number(values["maxForks"]);
  if (!Number.isSafeInteger(maxForks) || maxForks < 0) {
    throw new ConfigError(
      `--max-forks takes a whole number (0 or more), not '${values["maxForks"]}'`,
    );
  }
  // A program given by path is resolved against the start directory, like every other path.
  const [program, ...args] = command as [string, ...string[]];
  return {
    command: [program.includes("/") ? resolvePath(cwd, program) : program, ...args],
    grace: parseSeconds(values["stdioGrace"], "--stdio-grace"),
    envPass,
    text: flag("stdioText"),
    maxForks,
  };
}

function requireWith(missing: boolean, needed: string, option: string): void {
  if (missing) throw new ConfigError(`You must use ${needed} to use ${option}`);
}

/**
 * Splits `[host:]port` or `host:port` at the last colon and strips IPv6 brackets, as upstream:
 * `[::1]:6080` and `::1:6080` both give host `::1`.
 */
export function parseHostPort(
  value: string,
  what: "listen" | "target",
): { host: string; port: number } {
  // A bracketed IPv6 address with no port after it has no port colon at all.
  const colon = value.endsWith("]") ? -1 : value.lastIndexOf(":");
  if (colon < 0 && what === "target") {
    throw new ConfigError(`Error parsing target: '${value}' is not host:port`);
  }
  const host = colon < 0 ? "" : value.slice(0, colon).replace(/^\[/, "").replace(/\]$/, "");
  const portText = colon < 0 ? value : value.slice(colon + 1);
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
    throw new ConfigError(
      `Error parsing ${what} port: '${portText}' is not a port number (0-65535)`,
    );
  }
  return { host, port: Number(portText) };
}

function parseSyslog(value: string): SyslogConfig {
  if (!value.includes(":")) return { kind: "unix", path: value };
  const colon = value.lastIndexOf(":");
  const portText = value.slice(colon + 1);
  if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new ConfigError(`Error parsing syslog port: '${portText}' is not a port number`);
  }
  const host = value.slice(0, colon).replace(/^\[/, "").replace(/\]$/, "");
  return { kind: "udp", host: host || "localhost", port: Number(portText) };
}

function parseOctal(value: string): number {
  if (!/^0?o?[0-7]{1,4}$/.test(value)) {
    throw new ConfigError(`Error parsing listen unix socket mode: '${value}' is not an octal mode`);
  }
  return parseInt(value.replace(/^0?o?/, ""), 8);
}

function parseSeconds(value: unknown, option: string): number {
  // Decimal only: Number() would also take "0x10", "1e3" and surrounding spaces.
  const number = Number(value);
  if (typeof value === "boolean" || !/^\d+(\.\d+)?$/.test(String(value))) {
    throw new ConfigError(
      `${option} takes a number of seconds (0 or more), not '${String(value)}'`,
    );
  }
  return number;
}

function parseBytes(value: unknown): number {
  const match = /^(\d+)([kKmMgG]?)(i?B)?$/.exec(String(value));
  const scale: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
  const bytes = match ? Number(match[1]) * (scale[(match[2] ?? "").toLowerCase()] ?? 1) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new ConfigError(
      `--max-message-size takes a size in bytes such as 65536 or 64M, not '${String(value)}'`,
    );
  }
  return bytes;
}

/** `--shutdown-delay N`: only useful with the `/healthz` of `--metrics`, which tells the balancer. */
function parseShutdownDelay(value: unknown, metrics: string | undefined): number {
  const seconds = parseSeconds(value, "--shutdown-delay");
  if (seconds > 0 && metrics === undefined) {
    throw new ConfigError(
      "--shutdown-delay needs --metrics: its /healthz 503 is what takes the proxy out of the balancer",
    );
  }
  return seconds;
}

/** `--metrics [HOST:]PORT`: the metrics listener's address (host 127.0.0.1 by default). */
export function parseMetricsAddress(value: string | undefined): MetricsAddress | undefined {
  if (value === undefined) return undefined;
  const match = /^(?:(\[[^\]]+\]|[^:]+|.*):)?(\d+)$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new ConfigError(
      `--metrics takes [HOST:]PORT with a port from 0 to 65535, not '${value}'`,
    );
  }
  const host = (match[1] ?? "127.0.0.1").replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw new ConfigError(`--metrics needs a host before ':', not '${value}'`);
  return { host, port };
}

/** `{ [key]: value }`, or nothing when `value` is undefined (keeps defaults out of `Config`). */
function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return value === undefined ? {} : { [key]: value } as { [P in K]?: V };
}

function parseWorkers(value: unknown): number {
  const number = Number(value);
  if (!/^\d+$/.test(String(value)) || number < 1 || number > 256) {
    throw new ConfigError(`--workers takes a whole number from 1 to 256, not '${String(value)}'`);
  }
  return number;
}

function parseLimit(value: unknown, option: string): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!/^\d+$/.test(String(value)) || !Number.isSafeInteger(number) || number < 1) {
    throw new ConfigError(
      `${option} takes a whole number of sessions (1 or more), not '${String(value)}'`,
    );
  }
  return number;
}

/**
 * Normalises `--origin` entries to `scheme://host[:port]` with default ports removed; an entry
 * without a scheme matches http and https.
 */
export function parseOrigins(value: string | undefined): string[] {
  if (value === undefined) return [];
  const origins: string[] = [];
  for (const entry of value.split(/[\s,]+/).filter((item) => item !== "")) {
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(entry) ? [entry] : [
      `http://${entry}`,
      `https://${entry}`,
    ];
    for (const candidate of withScheme) {
      const normalised = normaliseOrigin(candidate);
      if (normalised === undefined) {
        throw new ConfigError(
          `--origin: '${entry}' is not an origin: use scheme://host[:port], e.g. https://example.com`,
        );
      }
      origins.push(normalised);
    }
  }
  return origins;
}

/** Returns `scheme://host[:port]` in canonical form, or undefined for a malformed origin. */
export function normaliseOrigin(value: string): string | undefined {
  try {
    const url = new URL(value);
    if (url.pathname !== "/" && url.pathname !== "") return undefined;
    // An origin has no query, fragment or credentials: `new URL` would drop them silently.
    if (/[?#@]/.test(value.replace(/^[a-z][a-z0-9+.-]*:\/\//i, ""))) return undefined;
    return url.origin === "null" ? undefined : url.origin;
  } catch {
    return undefined;
  }
}

function resolvePath(cwd: string, path: string): string {
  if (path.startsWith("/")) return path;
  return `${cwd.replace(/\/$/, "")}/${path}`;
}

/** `--trusted-proxy`: validated entries, or `undefined` when not given. */
function parseTrustedProxyOption(list: string | undefined): readonly string[] | undefined {
  if (list === undefined) return undefined;
  try {
    return parseTrustedProxies(list).entries;
  } catch (error) {
    throw new ConfigError(`--trusted-proxy: ${errorMessage(error)}`);
  }
}
