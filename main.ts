/**
 * The websockify command: parses the command line, loads plugins, starts the proxy and maps
 * failures to exit codes (0 ok, 1 runtime failure, 2 usage or configuration error). The only
 * module that reads `Deno.args` or calls `Deno.exit`.
 *
 * @module
 */

// First: with FFI permitted, runs main.ts again in place with the V8 flags it needs, before the
// other modules are evaluated (src/ops/v8_flags.ts).
import "./src/ops/v8_flags.ts";
import { parseArgs } from "./src/cli.ts";
import { daemonize, isDaemonChild, READY_LINE } from "./src/ops/daemon.ts";
import type { Config } from "./src/config.ts";
import { ConfigError, errorMessage, StartupError } from "./src/errors.ts";
import { closeLogging, flushLog, getLog, setupLogging } from "./src/ops/log.ts";
import { type ServerParts, startServer } from "./src/server.ts";
import { forkWorkers, workerRole } from "./src/ops/workers.ts";
import type { MetricsServer } from "./src/ops/metrics_server.ts";
import type { PeerDirectory } from "./src/ops/metrics_peers.ts";
import { checkTargetTls } from "./src/targets/target_tls.ts";
import { ServerTls } from "./src/listen/tls.ts";
import type { CommandWrapper } from "./src/wrap/mod.ts";

const encoder = new TextEncoder();

function fail(code: number, message: string): never {
  const hint = code === 2 ? "\nTry 'websockify --help' for the options." : "";
  flushLog();
  Deno.stderr.writeSync(encoder.encode(`websockify: error: ${message}${hint}\n`));
  Deno.exit(code);
}

/** Loads the certificate (clear errors now, not at the first client) and the banner lines. */
async function loadTls(config: Config): Promise<Pick<ServerParts, "tls" | "bannerLines">> {
  await checkTargetTls(config.targetTls);
  const serverTls = await ServerTls.load(config.tls);
  if (serverTls === undefined) return {};
  const bannerLines = ["  - SSL/TLS support"];
  if (config.tls.sslOnly) bannerLines.push("  - Deny non-SSL/TLS connections");
  return { tls: serverTls, bannerLines };
}

async function loadParts(config: Config, wrap: CommandWrapper | undefined): Promise<ServerParts> {
  let tokens;
  if (config.target.kind === "tokens") {
    const { loadTokenPlugin } = await import("./src/tokens/mod.ts");
    tokens = await loadTokenPlugin(config.target.plugin, config.target.source, Deno.cwd());
  }
  let auth;
  if (config.auth.plugin !== undefined) {
    const { loadAuthPlugin } = await import("./src/auth/mod.ts");
    auth = await loadAuthPlugin(config.auth.plugin, config.auth.source, Deno.cwd());
  }
  return { tokens, auth, wrap, ...(await loadTls(config)) };
}

/** Wrap mode: checks, builds rebind.so and picks the command's port (started after listening). */
async function prepareWrap(config: Config): Promise<CommandWrapper | undefined> {
  if (config.target.kind !== "wrap") return undefined;
  const { prepareWrap } = await import("./src/wrap/mod.ts");
  return await prepareWrap(config);
}

/** `-D`: runs the same command line in the background and reports how its start-up went. */
async function startDaemon(): Promise<number> {
  const result = await daemonize(Deno.args);
  if (result.ready) {
    Deno.stderr.writeSync(
      encoder.encode(`websockify: running in the background as process ${result.pid}\n`),
    );
    return 0;
  }
  Deno.stderr.writeSync(encoder.encode(result.output));
  if (result.code === undefined) {
    fail(1, "The background process did not start listening within 30 s: see --log-file");
  }
  return result.code === 0 ? 1 : result.code;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(Deno.args, { cwd: Deno.cwd() });
  } catch (error) {
    if (error instanceof ConfigError) fail(2, error.message);
    throw error;
  }
  if (parsed.kind === "print") {
    Deno.stdout.writeSync(encoder.encode(parsed.text));
    return 0;
  }
  let config = parsed.config;
  const multi = config.workers > 1;
  if (multi && config.listen.kind !== "tcp") {
    fail(2, "--workers needs a TCP listen address: drop --workers or --unix-listen");
  }
  if (config.reusePort && config.listen.kind !== "tcp") {
    fail(2, "--reuse-port needs a TCP listen address: drop --reuse-port or --unix-listen");
  }
  if (multi && config.target.kind === "wrap") {
    fail(2, "--workers cannot wrap a command (each process would start it): drop --workers");
  }
  const role = multi ? workerRole() : { kind: "primary" as const };
  if (role.kind === "worker" && config.listen.kind === "tcp") {
    config = { ...config, listen: { ...config.listen, port: role.port } };
  }
  const background = isDaemonChild();
  if (config.daemon && !background) return await startDaemon();
  try {
    // The background process logs to --log-file/--syslog only: its stderr goes away.
    await setupLogging(config.log, { stderr: !background, format: config.logFormat });
  } catch (error) {
    if (error instanceof StartupError) fail(1, error.message);
    throw error;
  }
  const log = getLog("main");
  // Signals are handled from here on, also while starting: a --workers process must never die
  // of a SIGTERM's default action (its sessions would get no close frame).
  let stopSignal: string | undefined;
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  let workers: ReturnType<typeof forkWorkers> | undefined;
  const stop = (signal: string) => {
    stopSignal ??= signal;
    void server?.shutdown(
      `Got ${signal}: closing sessions and exiting`,
      config.shutdownDelay * 1000,
    );
    void workers?.stop();
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop(signal));
  }
  let parts: ServerParts = {};
  // SIGHUP reloads certificates; installed before start-up so an early one never kills us.
  Deno.addSignalListener("SIGHUP", () => {
    const serverTls = parts.tls instanceof ServerTls ? parts.tls : undefined;
    if (serverTls) void serverTls.reload();
    else log.info("Got SIGHUP: no certificate to reload");
  });
  let wrap;
  let metricsServer: MetricsServer | undefined;
  let metricsPeers: PeerDirectory | undefined;
  try {
    wrap = await prepareWrap(config);
    parts = await loadParts(config, wrap);
    if (config.metrics !== undefined) {
      // Loaded only with --metrics: prom-client costs start-up time and memory otherwise.
      const { Metrics } = await import("./src/ops/metrics.ts");
      const { startMetricsServer } = await import("./src/ops/metrics_server.ts");
      const { announcePeer, createPeerDirectory } = await import("./src/ops/metrics_peers.ts");
      const metrics = new Metrics();
      if (role.kind === "worker") {
        // Each worker serves its own registry on loopback; the primary's /metrics sums them.
        metricsServer = await startMetricsServer(metrics, "127.0.0.1", 0);
        await announcePeer(metricsServer.address);
        parts = { ...parts, metrics };
      } else {
        metricsPeers = multi ? await createPeerDirectory() : undefined;
        const peers = metricsPeers?.peers;
        metricsServer = await startMetricsServer(
          metrics,
          config.metrics.host,
          config.metrics.port,
          peers ? { peers } : {},
        );
        parts = { ...parts, metrics, metricsAddress: metricsServer.address };
      }
    }
    server = await startServer(config, parts, {
      reusePort: multi || config.reusePort,
      banner: role.kind === "primary",
    });
  } catch (error) {
    await metricsServer?.close();
    await metricsPeers?.remove();
    await closeLogging();
    if (error instanceof ConfigError) fail(2, error.message);
    if (error instanceof StartupError) fail(1, error.message);
    fail(1, errorMessage(error));
  }
  const running = server;
  try {
    // After the listener is bound: with port 0 the command's port is only known now.
    wrap?.start(running.address, (code) => {
      void running.shutdown(
        `Wrapped command exited with code ${code}: closing sessions and exiting`,
      );
    });
  } catch (error) {
    await running.shutdown("The wrapped command could not be started: exiting");
    await closeLogging();
    fail(1, errorMessage(error));
  }
  const serverTls = parts.tls instanceof ServerTls ? parts.tls : undefined;
  // Renewed certificates: on SIGHUP (above), and on file changes. A bad renewal keeps the old one.
  serverTls?.watch();
  if (background) {
    // Tell the foreground half that start-up succeeded; nothing is written to stderr after this.
    Deno.stderr.writeSync(encoder.encode(`${READY_LINE}\n`));
  }
  if (multi && role.kind === "primary" && stopSignal === undefined) {
    const port = Number(running.address.slice(running.address.lastIndexOf(":") + 1));
    workers = forkWorkers(config.workers - 1, port, log, metricsPeers?.env);
  }
  if (stopSignal !== undefined) stop(stopSignal);
  const code = await running.finished;
  await workers?.stop();
  // Last: /healthz answers 503 while the sessions drain.
  await metricsServer?.close();
  await metricsPeers?.remove();
  serverTls?.close();
  await wrap?.stop();
  log.debug("Exiting");
  await closeLogging();
  // Wrap mode `exit`: the command's exit code (upstream loses it and exits 0).
  return wrap?.exitCode ?? code;
}

if (import.meta.main) {
  Deno.exit(await main());
}
