/**
 * Builds `rebind.so`, the `bind()` interposer of wrap mode, from `rebind.c` with the system C
 * compiler at first use, and caches it by source hash (`~/.cache/websockify/rebind-<hash>.so`).
 * Compiling here instead of shipping a binary keeps the program portable across architectures
 * and libc versions; the cost is a one-off ~0.3 s compile and a C compiler on the machine.
 *
 * @module
 */

import { errorMessage, StartupError } from "../errors.ts";
import REBIND_SOURCE from "./rebind.c" with { type: "text" };

/** Options of {@link buildRebindLibrary}. */
export interface RebindOptions {
  /** Directory for the built library. @default "$XDG_CACHE_HOME/websockify" or "~/.cache/websockify" */
  readonly cacheDir?: string;
  /** Compilers to try, in order. @default [$CC, "cc", "gcc"] */
  readonly compilers?: readonly string[];
}

/** The C source of the interposer (for tests and diagnostics). */
export const REBIND_C: string = REBIND_SOURCE;

/**
 * Returns the absolute path of a built `rebind.so`, compiling it when the cache has none for
 * this source. Throws {@link StartupError} when no compiler is found or compiling fails.
 */
export async function buildRebindLibrary(options: RebindOptions = {}): Promise<string> {
  const name = `rebind-${await sourceHash()}.so`;
  const compilers = options.compilers ?? defaultCompilers();
  const directory = options.cacheDir ?? defaultCacheDir();
  if (directory !== undefined) {
    const cached = `${directory}/${name}`;
    if (await isFile(cached)) return cached;
    try {
      await Deno.mkdir(directory, { recursive: true, mode: 0o700 });
      return await buildInto(directory, cached, compilers);
    } catch (error) {
      if (error instanceof StartupError) throw error;
      // The cache is not writable: build into a private temporary directory instead.
    }
  }
  const temporary = await Deno.makeTempDir({ prefix: "websockify-rebind-" });
  return await buildInto(temporary, `${temporary}/${name}`, compilers);
}

async function buildInto(
  directory: string,
  output: string,
  compilers: readonly string[],
): Promise<string> {
  const work = await Deno.makeTempDir({ dir: directory, prefix: ".build-" });
  try {
    const source = `${work}/rebind.c`;
    const built = `${work}/rebind.so`;
    await Deno.writeTextFile(source, REBIND_C);
    await compile(compilers, source, built);
    // A rename is atomic, so concurrent starts never load a half-written library.
    await Deno.rename(built, output);
    return output;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

async function compile(compilers: readonly string[], source: string, output: string) {
  for (const compiler of compilers) {
    let result;
    try {
      result = await new Deno.Command(compiler, {
        args: ["-shared", "-fPIC", "-O2", "-o", output, source, "-ldl"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw new StartupError(
        `Cannot run the C compiler '${compiler}' to build rebind.so for wrap mode: ${
          errorMessage(error)
        }`,
      );
    }
    if (result.success) return;
    const detail = new TextDecoder().decode(result.stderr).trim().split("\n").slice(0, 5);
    throw new StartupError(
      `Building rebind.so for wrap mode with '${compiler}' failed: ${detail.join(" / ")}; ` +
        "install the C library headers (Debian: apt-get install libc6-dev)",
    );
  }
  throw new StartupError(
    `Wrap mode needs a C compiler to build rebind.so, and none of ${
      compilers.map((name) => `'${name}'`).join(", ")
    } was found: install gcc (Debian: apt-get install gcc libc6-dev) or set CC`,
  );
}

async function sourceHash(): Promise<string> {
  const data = new TextEncoder().encode(`${Deno.build.target}\n${REBIND_C}`);
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
