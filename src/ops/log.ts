/**
 * The one logging module: configures logtape with a stderr sink, an optional file sink and an
 * optional syslog sink, and formats lines like upstream websockify. Request-scoped lines carry the
 * peer and a timestamp (`127.0.0.1 - - [21/Nov/2026 08:19:28] message`); server lines are bare.
 *
 * Other modules log through {@link getLog}; nothing else writes to stderr, and only the
 * `--traffic` legend ({@link TrafficLog}) writes to stdout.
 *
 * @module
 */

import { configure, dispose, getLogger, type LogRecord, type Sink } from "@logtape/logtape";
import { getFileSink } from "@logtape/file";
import dgram from "node:dgram";
import type { LogConfig, SyslogConfig } from "../config.ts";
import { errorMessage, StartupError } from "../errors.ts";

/** Structured fields of one line: in `--log-format json` only (the text format ignores them). */
export type LogFields = Readonly<Record<string, string | number | boolean>>;

/** Per-connection context attached once by {@link Log.child}. */
export interface LogContext {
  /** The client's `ip:port` (selects upstream's request-scoped text format). */
  readonly peer?: string;
  /** The session's sequence number. */
  readonly session?: number;
  /** The session's target, as log lines name it. */
  readonly target?: string;
}

/** A logger with websockify's line format; `child()` attaches per-connection context once. */
export interface Log {
  /** Shown with `-v` only. */
  debug(text: string): void;
  /** Normal operation. */
  info(text: string, fields?: LogFields): void;
  /**
   * Normal operation, on the hot path of every connection: on stderr the line may wait up to
   * 10 ms to be written together with others (lines logged with the other methods flush it first,
   * so the order is kept).
   */
  infoBatched(text: string, fields?: LogFields): void;
  /** Something is wrong but the proxy goes on. */
  warn(text: string): void;
  /** A failure. */
  error(text: string): void;
  /** A logger whose lines carry `context` (a `peer` gives the request-scoped format). */
  child(context: LogContext): Log;
}

/** Returns the logger for `category` (a module name such as `"proxy"`). */
export function getLog(category: string): Log {
  return wrap(getLogger(["websockify", category]));
}

function wrap(logger: ReturnType<typeof getLogger>): Log {
  return new WrappedLog(logger);
}

// A class rather than an object of arrow functions: two of these exist per session (peer and
// session context), and methods on the prototype cost no closures per instance.
class WrappedLog implements Log {
  readonly #logger: ReturnType<typeof getLogger>;

  constructor(logger: ReturnType<typeof getLogger>) {
    this.#logger = logger;
  }

  // Tagged templates keep `{...}` in paths and reasons from being read as placeholders.
  debug(text: string): void {
    this.#logger.debug`${text}`;
  }

  info(text: string, fields?: LogFields): void {
    (fields ? this.#logger.with(fields) : this.#logger).info`${text}`;
  }

  infoBatched(text: string, fields?: LogFields): void {
    batching = true;
    try {
      (fields ? this.#logger.with(fields) : this.#logger).info`${text}`;
    } finally {
      batching = false;
    }
  }

  warn(text: string): void {
    this.#logger.warn`${text}`;
  }

  error(text: string): void {
    this.#logger.error`${text}`;
  }

  child(context: LogContext): Log {
    return new WrappedLog(this.#logger.with({ ...context }));
  }
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** Formats a date as Python's `log_date_time_string`: `21/Nov/2026 08:19:28` (local time). */
export function formatLogDate(date: Date): string {
  const pad = (value: number) => String(value).padStart(2, "0");
  return `${pad(date.getDate())}/${MONTHS[date.getMonth()]}/${date.getFullYear()} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

// Lines of one second share their timestamp text: formatting a date per line was measurable in
// the connection set-up rate (several request-scoped lines per connection).
let dateSecond = NaN;
let dateText = "";

function logDateOf(timestamp: number): string {
  const second = Math.floor(timestamp / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = formatLogDate(new Date(second * 1000));
  }
  return dateText;
}

function messageText(record: LogRecord): string {
  const message = record.message;
  // A tagged template with one value (how Log writes) is ["", text, ""].
  return message.length === 3 && message[0] === "" && message[2] === ""
    ? String(message[1])
    : message.map((part) => String(part)).join("");
}

/** Formats a record as one line (no newline): upstream's request-line form when it has a peer. */
export function formatRecord(record: LogRecord): string {
  const text = messageText(record);
  const peer = record.properties["peer"];
  if (typeof peer !== "string") return text;
  const host = peerHost(peer);
  return `${host} - - [${logDateOf(record.timestamp)}] ${host}: ${text}`;
}

/**
 * Formats a record as one JSON object (no newline) for `--log-format json`: `time` (ISO 8601),
 * `level`, `message`, then `client` (the peer's address) and the context and fields it carries.
 */
export function formatJsonRecord(record: LogRecord): string {
  const entry: Record<string, unknown> = {
    time: new Date(record.timestamp).toISOString(),
    level: record.level,
    message: messageText(record),
  };
  for (const [key, value] of Object.entries(record.properties)) {
    if (key === "peer") entry["client"] = typeof value === "string" ? peerHost(value) : value;
    else entry[key] = value;
  }
  return JSON.stringify(entry);
}

/** How lines are written: `--log-format`. */
export type LogFormat = "text" | "json";

/** The host part of `ip:port` / `[v6]:port`; a unix socket path is returned as it is. */
export function peerHost(peer: string): string {
  if (peer.startsWith("/")) return peer;
  if (peer.startsWith("[")) {
    const bracketed = /^\[([^\]]*)\]:\d+$/.exec(peer);
    if (bracketed) return bracketed[1] ?? peer;
  }
  const colon = peer.lastIndexOf(":");
  return colon > 0 && peer.indexOf(":") === colon ? peer.slice(0, colon) : peer;
}

const encoder = new TextEncoder();

// Lines logged with Log.infoBatched() (three per connection) are collected and written together,
// at most 10 ms later (or at once when 16 KiB are waiting): a write per line woke whatever reads
// stderr three times per connection, and with that reader on the proxy's core the set-up rate fell
// by about a fifth. Any other line writes what is waiting and itself at once, as before, so lines
// keep their order and a refusal is on stderr before the client has its answer. Deno.exit()
// ("unload"), an uncaught error and closeLogging() write what is waiting.
const STDERR_DELAY_MS = 10;
const STDERR_BATCH = 16 * 1024;
/** Set while Log.infoBatched() logs: the stderr sink runs synchronously inside that call. */
let batching = false;
let pendingStderr = "";
let stderrTimer: ReturnType<typeof setTimeout> | undefined;

/** Writes the log lines still waiting for stderr; call before writing to stderr directly. */
export function flushLog(): void {
  if (stderrTimer !== undefined) {
    clearTimeout(stderrTimer);
    stderrTimer = undefined;
  }
  if (pendingStderr === "") return;
  const text = pendingStderr;
  pendingStderr = "";
  try {
    writeAll(Deno.stderr, encoder.encode(text));
  } catch {
    // stderr closed: nothing else to write the lines to.
  }
}

function stderrSink(format: (record: LogRecord) => string): Sink {
  return immediate((record: LogRecord): void => {
    pendingStderr += format(record) + "\n";
    if (!batching || pendingStderr.length >= STDERR_BATCH) {
      flushLog();
    } else if (stderrTimer === undefined) {
      stderrTimer = setTimeout(flushLog, STDERR_DELAY_MS);
    }
  });
}

globalThis.addEventListener("unload", flushLog);
globalThis.addEventListener("error", flushLog);
globalThis.addEventListener("unhandledrejection", flushLog);

/**
 * Marks `sink` as one that is done with a record when it returns, so logtape hands it the record
 * without copying its properties first (the marker logtape's own sinks and `@logtape/file` set).
 * The copy was measurable in the connection set-up rate.
 */
function immediate<T extends Sink>(sink: T): T {
  Object.defineProperty(sink, Symbol.for("LogTape.sinkSnapshotPolicy.immediate"), { value: true });
  return sink;
}

function writeAll(file: { writeSync(data: Uint8Array): number }, data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) offset += file.writeSync(data.subarray(offset));
}

const SYSLOG_SEVERITY: Record<string, number> = {
  trace: 7,
  debug: 7,
  info: 6,
  warning: 4,
  error: 3,
  fatal: 2,
};

/** Builds a syslog datagram as upstream: RFC 5424 header, or the BSD one with `legacy`. */
export function formatSyslog(
  record: LogRecord,
  options: { legacy: boolean; hostname: string; pid: number },
): string {
  const priority = 1 * 8 + (SYSLOG_SEVERITY[record.level] ?? 6); // facility LOG_USER
  const text = formatRecord(record).replace(/[\r\n]+/g, " ");
  if (options.legacy) return `<${priority}>websockify[${options.pid}]: ${text}`;
  const time = new Date(record.timestamp).toISOString().replace(/\.\d+Z$/, "Z");
  return `<${priority}>1 ${time} ${
    options.hostname.slice(0, 255)
  } websockify ${options.pid} - - ${text}`;
}

function syslogSink(config: SyslogConfig, legacy: boolean): Sink & AsyncDisposable {
  let hostname = "-";
  try {
    hostname = Deno.hostname();
  } catch {
    // No --allow-sys: RFC 5424 allows "-" for an unknown host name.
  }
  const options = { legacy, hostname, pid: Deno.pid };
  if (config.kind === "udp") {
    const socket = dgram.createSocket(config.host.includes(":") ? "udp6" : "udp4");
    socket.on("error", () => {}); // Logging must never take the proxy down.
    socket.unref();
    const sink = (record: LogRecord) => {
      socket.send(encoder.encode(formatSyslog(record, options)), config.port, config.host);
    };
    return Object.assign(immediate(sink), {
      [Symbol.asyncDispose]: () => new Promise<void>((resolve) => socket.close(() => resolve())),
    });
  }
  // A unix datagram socket needs a local address of its own to send from (--unstable-net).
  let connection: Deno.DatagramConn | undefined;
  let localPath: string | undefined;
  const sink = (record: LogRecord) => {
    try {
      if (connection === undefined) {
        localPath = Deno.makeTempFileSync({ prefix: "websockify-syslog-", suffix: ".sock" });
        Deno.removeSync(localPath);
        connection = Deno.listenDatagram({ transport: "unixpacket", path: localPath });
      }
      const bytes = encoder.encode(formatSyslog(record, options));
      connection.send(bytes, { transport: "unixpacket", path: config.path }).catch(() => {});
    } catch {
      // Syslog unavailable: the stderr and file sinks still have the line.
    }
  };
  return Object.assign(immediate(sink), {
    [Symbol.asyncDispose]: () => {
      connection?.close();
      if (localPath !== undefined) Deno.remove(localPath).catch(() => {});
      return Promise.resolve();
    },
  });
}

/**
 * Sets up the sinks for `config`. Call once at start-up; {@link closeLogging} at exit. Throws
 * {@link StartupError} when the log file cannot be opened.
 */
export async function setupLogging(
  config: LogConfig,
  options: { stderr?: boolean; format?: LogFormat } = {},
): Promise<void> {
  const format = options.format === "json" ? formatJsonRecord : formatRecord;
  const sinks: Record<string, Sink> = {};
  if (options.stderr !== false) sinks["stderr"] = stderrSink(format);
  if (config.file !== undefined) {
    try {
      sinks["file"] = getFileSink(config.file, {
        formatter: (record) => format(record) + "\n",
        bufferSize: 0,
      });
    } catch (error) {
      throw new StartupError(
        `Cannot open log file '${config.file}': ${errorMessage(error)}: check the --log-file path`,
        { cause: error },
      );
    }
  }
  if (config.syslog !== undefined) sinks["syslog"] = syslogSink(config.syslog, config.legacySyslog);
  await configure({
    reset: true,
    sinks,
    loggers: [
      {
        category: ["websockify"],
        lowestLevel: config.verbose ? "debug" : "info",
        sinks: Object.keys(sinks),
      },
      {
        category: ["logtape", "meta"],
        lowestLevel: "error",
        sinks: Object.keys(sinks).filter((name) => name !== "syslog"),
      },
    ],
  });
}

/** Flushes and closes the sinks. */
export async function closeLogging(): Promise<void> {
  await dispose();
  flushLog();
}

/** The `--traffic` legend printed at start-up, as upstream. */
export const TRAFFIC_LEGEND = [
  "Traffic Legend:",
  "    } - Client receive",
  "    }. - Client receive partial",
  "    { - Target receive",
  "",
  "    > - Target send",
  "    >. - Target send partial",
  "    < - Client send",
  "    <. - Client send partial",
].join("\n");

/** Writes `--traffic` legend characters to stdout, batched so the hot path never blocks. */
export class TrafficLog {
  #pending = "";
  #scheduled = false;

  /** Records one traffic event such as `}` or `<`. */
  mark(symbol: string): void {
    this.#pending += symbol;
    if (this.#scheduled) return;
    this.#scheduled = true;
    setTimeout(() => this.flush(), 50);
  }

  /** Writes what is pending now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#pending === "") return;
    const text = this.#pending;
    this.#pending = "";
    try {
      writeAll(Deno.stdout, encoder.encode(text));
    } catch {
      // stdout closed: the legend is best effort.
    }
  }
}
