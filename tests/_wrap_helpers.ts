/**
 * Helpers for the wrap mode tests: small Python programs to wrap (Debian's /usr/bin/python3,
 * not a pyenv one that may come first on PATH), free ports and process checks.
 *
 * @module
 */

/** Debian's Python. */
export const PYTHON = "/usr/bin/python3";

/**
 * A threaded TCP echo server: `ECHO_SERVER HOST [PORT]` binds HOST:PORT (PORT defaults to
 * $REBIND_OLD_PORT, the proxy's listen port) and prints `echo pid <pid> bound <address>` to stderr.
 */
export const ECHO_SERVER = `
import os, socket, sys, threading
host = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ["REBIND_OLD_PORT"])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
server = socket.socket(family, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port))
server.listen()
print(f"echo pid {os.getpid()} bound {server.getsockname()[0]} {server.getsockname()[1]}",
      file=sys.stderr, flush=True)
def serve(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
`;

/** `COUNT_STARTS FILE CODE`: appends a line to FILE, then exits with CODE. */
export const COUNT_STARTS = `
import os, sys
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
sys.exit(int(sys.argv[2]))
`;

/** A port that was free on 127.0.0.1 a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Whether `pid` is a live (not zombie) process. */
export function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Waits until `pid` is gone; rejects after `ms`. */
export function waitGone(pid: number, ms = 8000): Promise<void> {
  return waitUntil(() => !isAlive(pid), ms, `process ${pid} to exit`);
}

/** Lines of `path`, or none when it does not exist yet. */
export function linesOf(path: string): string[] {
  try {
    return Deno.readTextFileSync(path).split("\n").filter((line) => line !== "");
  } catch {
    return [];
  }
}

/** Polls `predicate` every 50 ms until it holds; rejects after `ms`. */
export async function waitUntil(predicate: () => boolean, ms: number, what: string) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
