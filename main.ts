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
import { forkWorkers, workerRole } from "./src/workers.ts";

const encoder = new TextEncoder();

function fail(code: number, message: string): never {
  const hint = code === 2 ? "\nTry 'websockify --help' for the options." : "";
  Deno.stderr.writeSync(encoder.encode(`websockify: error: ${message}${hint}\n`));
  Deno.exit(code);
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
  return { tokens, auth };
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
  const role = multi ? workerRole() : { kind: "primary" as const };
  if (role.kind === "worker" && config.listen.kind === "tcp") {
    config = { ...config, listen: { ...config.listen, port: role.port } };
  }
  await setupLogging(config.log);
  const log = getLog("main");
  // Signals are handled from here on, also while starting: a --workers process must never die
  // of a SIGTERM's default action (its sessions would get no close frame).
  let stopSignal: string | undefined;
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  let workers: ReturnType<typeof forkWorkers> | undefined;
  const stop = (signal: string) => {
    stopSignal ??= signal;
    void server?.shutdown(`Got ${signal}: closing sessions and exiting`);
    void workers?.stop();
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop(signal));
  }
  try {
    server = await startServer(config, await loadParts(config), {
      reusePort: multi,
      banner: role.kind === "primary",
    });
  } catch (error) {
    await closeLogging();
    if (error instanceof ConfigError) fail(2, error.message);
    if (error instanceof StartupError) fail(1, error.message);
    fail(1, errorMessage(error));
  }
  if (multi && role.kind === "primary" && stopSignal === undefined) {
    const port = Number(server.address.slice(server.address.lastIndexOf(":") + 1));
    workers = forkWorkers(config.workers - 1, port, log);
  }
  if (stopSignal !== undefined) stop(stopSignal);
  const code = await server.finished;
  await workers?.stop();
  log.debug("Exiting");
  await closeLogging();
  return code;
}

if (import.meta.main) {
  Deno.exit(await main());
}
