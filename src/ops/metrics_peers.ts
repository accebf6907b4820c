/**
 * How a `--workers` primary finds the metrics listeners of its workers: each worker serves its
 * own registry on a loopback port 0 and writes `host:port` to a file named after its process id
 * in a directory the primary created and handed down in the environment.
 *
 * @module
 */

/** Environment variable carrying the directory to forked workers. */
const DIRECTORY_VARIABLE = "WEBSOCKIFY_METRICS_DIRECTORY";

/** The primary's directory of worker metrics addresses. */
export interface PeerDirectory {
  /** What to add to the workers' environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The addresses announced so far. */
  peers(): Promise<string[]>;
  /** Removes the directory (at exit). */
  remove(): Promise<void>;
}

/** Creates the directory the workers announce themselves in. */
export async function createPeerDirectory(): Promise<PeerDirectory> {
  const path = await Deno.makeTempDir({ prefix: "websockify-metrics-" });
  return {
    env: { [DIRECTORY_VARIABLE]: path },
    async peers() {
      const addresses: string[] = [];
      for await (const entry of Deno.readDir(path)) {
        if (!entry.isFile || !/^\d+$/.test(entry.name)) continue;
        const text = await Deno.readTextFile(`${path}/${entry.name}`).catch(() => "");
        if (/^[\d.]+:\d+$/.test(text)) addresses.push(text);
      }
      return addresses;
    },
    remove: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** In a worker: records this process's metrics address for the primary. */
export async function announcePeer(address: string): Promise<void> {
  const path = Deno.env.get(DIRECTORY_VARIABLE);
  if (path === undefined) return;
  // Written under a temporary name and renamed, so the primary never reads half an address.
  const file = `${path}/${Deno.pid}`;
  await Deno.writeTextFile(`${file}.tmp`, address);
  await Deno.rename(`${file}.tmp`, file);
}
