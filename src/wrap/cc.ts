/**
 * Builds a C source with the system compiler at first use and caches the result by source hash
 * in `$XDG_CACHE_HOME/websockify` or `~/.cache/websockify` (a private temporary directory when the
 * cache is not writable). Wrap mode builds `rebind.so` with it (src/wrap/rebind.ts), the bench its
 * load generator (scripts/loadgen.ts). Compiling on the machine instead of shipping binaries keeps
 * both portable across architectures and libc versions.
 *
 * @module
 */

import { errorMessage, StartupError } from "../errors.ts";

/** What to build. */
export interface CBuild {
  /** The C source text. */
  readonly source: string;
  /** File name of the result, before the hash: `rebind` gives `rebind-<hash><suffix>`. */
  readonly name: string;
  /** File name ending of the result, such as `.so`. @default "" */
  readonly suffix?: string;
  /** Compiler arguments before `-o OUTPUT SOURCE`. */
  readonly flags: readonly string[];
  /** Compiler arguments after the source (libraries). @default [] */
  readonly libraries?: readonly string[];
  /** What is built and for what, for error messages: "rebind.so for wrap mode". */
  readonly what: string;
  /** Directory for the result. @default "$XDG_CACHE_HOME/websockify" or "~/.cache/websockify" */
  readonly cacheDir?: string;
  /** Compilers to try, in order. @default [$CC, "cc", "gcc"] */
  readonly compilers?: readonly string[];
}

/**
 * Returns the absolute path of the built file, compiling it when the cache has none for this
 * source. Throws {@link StartupError} when no compiler is found or compiling fails.
 */
export async function buildCached(build: CBuild): Promise<string> {
  const name = `${build.name}-${await sourceHash(build.source)}${build.suffix ?? ""}`;
  const compilers = build.compilers ?? defaultCompilers();
  const directory = build.cacheDir ?? defaultCacheDir();
  if (directory !== undefined) {
    const cached = `${directory}/${name}`;
    if (await isFile(cached)) return cached;
    try {
      await Deno.mkdir(directory, { recursive: true, mode: 0o700 });
      return await buildInto(build, directory, cached, compilers);
    } catch (error) {
      if (error instanceof StartupError) throw error;
      // The cache is not writable: build into a private temporary directory instead.
    }
  }
  const temporary = await Deno.makeTempDir({ prefix: `websockify-${build.name}-` });
  return await buildInto(build, temporary, `${temporary}/${name}`, compilers);
}

async function buildInto(
  build: CBuild,
  directory: string,
  output: string,
  compilers: readonly string[],
): Promise<string> {
  const work = await Deno.makeTempDir({ dir: directory, prefix: ".build-" });
  try {
    const source = `${work}/${build.name}.c`;
    const built = `${work}/${build.name}${build.suffix ?? ""}`;
    await Deno.writeTextFile(source, build.source);
    await compile(build, compilers, source, built);
    // A rename is atomic, so concurrent starts never use a half-written file.
    await Deno.rename(built, output);
    return output;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

async function compile(
  build: CBuild,
  compilers: readonly string[],
  source: string,
  output: string,
): Promise<void> {
  for (const compiler of compilers) {
    let result;
    try {
      result = await new Deno.Command(compiler, {
        args: [...build.flags, "-o", output, source, ...(build.libraries ?? [])],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw new StartupError(
        `Cannot run the C compiler '${compiler}' to build ${build.what}: ${errorMessage(error)}`,
      );
    }
    if (result.success) return;
    const detail = new TextDecoder().decode(result.stderr).trim().split("\n").slice(0, 5);
    throw new StartupError(
      `Building ${build.what} with '${compiler}' failed: ${detail.join(" / ")}; ` +
        "install the C library headers (Debian: apt-get install libc6-dev)",
    );
  }
  throw new StartupError(
    `Cannot build ${build.what}: no C compiler found (tried ${
      compilers.map((name) => `'${name}'`).join(", ")
    }): install gcc (Debian: apt-get install gcc libc6-dev) or set CC`,
  );
}

async function sourceHash(source: string): Promise<string> {
  const data = new TextEncoder().encode(`${Deno.build.target}\n${source}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...digest.subarray(0, 8)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

function defaultCacheDir(): string | undefined {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/websockify`;
  const home = Deno.env.get("HOME");
  return home ? `${home}/.cache/websockify` : undefined;
}

function defaultCompilers(): string[] {
  const fromEnv = Deno.env.get("CC")?.trim();
  return [...new Set([...(fromEnv ? [fromEnv] : []), "cc", "gcc"])];
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
