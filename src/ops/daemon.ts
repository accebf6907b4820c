/**
 * `-D/--daemon`: starts the same command line again as a detached background process (its own
 * session via `setsid` when available, standard streams on /dev/null) and returns its PID, so the
 * foreground process can exit 0 as upstream's double fork does. Logs then go to `--log-file` or
 * `--syslog`. The child keeps the working directory; paths in the configuration are absolute
 * already.
 *
 * @module
 */

import { StartupError } from "../errors.ts";

const PERMISSIONS = ["net", "read", "write", "env", "run", "sys", "ffi", "import"] as const;

/** The argv that re-runs this program with the same permissions, minus the daemon flag. */
export async function selfCommand(args: readonly string[]): Promise<string[]> {
  const own = args.filter((arg) => arg !== "-D" && arg !== "--daemon");
  const execName = Deno.execPath().split("/").pop() ?? "";
  // A compiled binary is its own program: its permissions are baked in.
  if (!/^deno(\.exe)?$/.test(execName)) return [Deno.execPath(), ...own];
  const flags: string[] = [];
  for (const name of PERMISSIONS) {
    const status = await Deno.permissions.query({ name });
    if (status.state === "granted") flags.push(`--allow-${name}`);
  }
  return [Deno.execPath(), "run", ...flags, "--unstable-net", Deno.mainModule, ...own];
}

/** Environment variable that marks the background process. */
export const DAEMON_ENV = "WEBSOCKIFY_DAEMON";

/** The line the background process writes to its stderr once it is listening. */
export const READY_LINE = "websockify: daemon ready";

/** Whether this process is the background half of `-D`. */
export function isDaemonChild(): boolean {
  try {
    return Deno.env.get(DAEMON_ENV) === "1";
  } catch {
    return false;
  }
}

/**
 * Starts the background process and waits until it is listening (or has failed): start-up errors
 * such as a port in use are still reported in the foreground with their exit code.
 */
export async function daemonize(
  args: readonly string[],
  timeoutMs = 30000,
): Promise<{ pid: number; ready: boolean; output: string; code: number | undefined }> {
  const argv = await selfCommand(args);
  const setsid = ["/usr/bin/setsid", "/bin/setsid"].find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
  const [program, ...rest] = setsid ? [setsid, ...argv] : argv;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program as string, {
      args: rest,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { [DAEMON_ENV]: "1" },
    }).spawn();
  } catch (error) {
    throw new StartupError(
      `Cannot start the daemon: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  // The child writes READY_LINE once listening, or exits on a start-up error.
  let output = "";
  const decoder = new TextDecoder();
  const reader = child.stderr.getReader();
  const reading = (async () => {
    while (!output.includes(READY_LINE)) {
      const { value, done } = await reader.read();
      if (done) break;
      output += decoder.decode(value, { stream: true });
    }
  })().catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([reading, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
  const ready = output.includes(READY_LINE);
  if (ready) {
    reader.releaseLock();
    child.unref();
    return { pid: child.pid, ready, output: output.replace(`${READY_LINE}\n`, ""), code: 0 };
  }
  const status = await Promise.race([
    child.status,
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 2000)),
  ]);
  if (status === undefined) child.kill("SIGKILL");
  return { pid: child.pid, ready, output, code: status?.code };
}
