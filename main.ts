/**
 * The websockify command: parses the command line, loads plugins, starts the proxy and maps
 * failures to exit codes (0 ok, 1 runtime failure, 2 usage or configuration error). The only
 * module that reads `Deno.args` or calls `Deno.exit`.
 *
 * @module
 */

import { parseArgs } from "./src/cli.ts";
import type { Config } from "./src/config.ts";
import { ConfigError, errorMessage, StartupError } from "./src/errors.ts";
import { closeLogging, getLog, setupLogging } from "./src/log.ts";
import { type ServerParts, startServer } from "./src/server.ts";
import { checkTargetTls } from "./src/target_tls.ts";
import { ServerTls } from "./src/tls.ts";

const encoder = new TextEncoder();

function fail(code: number, message: string): never {
  const hint = code === 2 ? "\nTry 'websockify --help' for the options." : "";
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

async function loadParts(config: Config): Promise<ServerParts> {
  if (config.target.kind === "wrap") {
    throw new ConfigError(
      "Wrap mode ('-- COMMAND') is not supported yet: run the program yourself and give its host:port as the target",
    );
  }
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
  return { tokens, auth, ...(await loadTls(config)) };
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
  const config = parsed.config;
  try {
    await setupLogging(config.log);
  } catch (error) {
    if (error instanceof StartupError) fail(1, error.message);
    throw error;
  }
  const log = getLog("main");
  let server;
  let parts: ServerParts = {};
  try {
    parts = await loadParts(config);
    server = await startServer(config, parts);
  } catch (error) {
    await closeLogging();
    if (error instanceof ConfigError) fail(2, error.message);
    if (error instanceof StartupError) fail(1, error.message);
    fail(1, errorMessage(error));
  }
  const serverTls = parts.tls instanceof ServerTls ? parts.tls : undefined;
  if (serverTls !== undefined) {
    // Renewed certificates: on SIGHUP, and on file changes. A bad renewal keeps the old one.
    serverTls.watch();
    Deno.addSignalListener("SIGHUP", () => void serverTls.reload());
  }
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      void server.shutdown(`Got ${signal}: closing sessions and exiting`);
    });
  }
  const code = await server.finished;
  serverTls?.close();
  log.debug("Exiting");
  await closeLogging();
  return code;
}

if (import.meta.main) {
  Deno.exit(await main());
}
