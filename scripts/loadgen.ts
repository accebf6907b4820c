/**
 * Builds `scripts/loadgen.c` (the bench's C load generator and TCP target; its CLI is in the
 * file's header) with the system C compiler, `-O2`, and caches the binary by source hash in
 * `$XDG_CACHE_HOME/websockify` or `~/.cache/websockify` (a temporary directory when neither is
 * writable), as wrap mode does with rebind.c (src/wrap/rebind.ts).
 *
 * ```ts
 * import { buildLoadgen } from "./loadgen.ts";
 * const loadgen = await buildLoadgen(); // absolute path of the binary
 * ```
 *
 * @module
 */

const SOURCE_URL = new URL("./loadgen.c", import.meta.url);

/** Returns the path of a built loadgen, compiling it when the cache has none for this source. */
export async function buildLoadgen(): Promise<string> {
  const source = await Deno.readTextFile(SOURCE_URL);
  const name = `loadgen-${await hashOf(source)}`;
  for (const place of [...cacheDirs(), null]) {
    // Last resort: a private temporary directory.
    const directory = place ?? await Deno.makeTempDir({ prefix: "websockify-loadgen-" });
    const cached = `${directory}/${name}`;
    if (await isFile(cached)) return cached;
    try {
      await Deno.mkdir(directory, { recursive: true, mode: 0o700 });
    } catch {
      continue;
    }
    const work = await Deno.makeTempDir({ dir: directory, prefix: ".loadgen-" }).catch(() =>
      undefined
    );
    if (work === undefined) continue;
    try {
      await compile(SOURCE_URL.pathname, `${work}/loadgen`);
      // A rename is atomic: two benches starting at once never run a half-written binary.
      await Deno.rename(`${work}/loadgen`, cached);
      return cached;
    } finally {
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  }
  throw new Error("No writable directory to build scripts/loadgen.c into");
}

function cacheDirs(): string[] {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME");
  if (xdg) return [`${xdg}/websockify`];
  return home ? [`${home}/.cache/websockify`] : [];
}

async function compile(source: string, output: string): Promise<void> {
  const fromEnv = Deno.env.get("CC")?.trim();
  const compilers = [...new Set([...(fromEnv ? [fromEnv] : []), "cc", "gcc"])];
  for (const compiler of compilers) {
    let result;
    try {
      result = await new Deno.Command(compiler, {
        args: ["-O2", "-o", output, source],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    if (result.success) return;
    const detail = new TextDecoder().decode(result.stderr).trim().split("\n").slice(0, 5);
    throw new Error(
      `Building scripts/loadgen.c with '${compiler}' failed: ${detail.join(" / ")}; ` +
        "install the C library headers (Debian: apt-get install libc6-dev)",
    );
  }
  throw new Error(
    `The bench needs a C compiler to build its load generator (scripts/loadgen.c), and none of ${
      compilers.map((name) => `'${name}'`).join(", ")
    } was found: install gcc (Debian: apt-get install gcc libc6-dev) or set CC`,
  );
}

async function hashOf(source: string): Promise<string> {
  const data = new TextEncoder().encode(`${Deno.build.target}\n${source}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...digest.subarray(0, 8)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

if (import.meta.main) console.log(await buildLoadgen());
