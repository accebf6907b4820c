/**
 * The V8 flags the proxy needs to keep its memory flat under churn (docs/decisions.md, "Memory
 * under churn: applied"). V8 reads its flags once, before any JavaScript runs, so a process started
 * without them (`deno run -A main.ts`, the `jsr:` line) replaces itself, as soon as this module is
 * imported, with the same command line and `DENO_V8_FLAGS` set: `execve` through libc (FFI), so
 * the PID, open standard streams, signals and exit code stay as they were and no parent is left.
 * The variable is also the loop guard, and `-D`'s background process and `--workers`' copies
 * inherit it. Flags the user gave (`DENO_V8_FLAGS`, `--v8-flags`) are used as they are; a
 * compiled binary has its flags built in (`deno task compile`). Without `-A` the runtime's
 * arguments cannot be read (Deno wants all permissions for `/proc/self`), so nothing happens:
 * the start task sets the variable itself.
 *
 * @module
 */

/** The flags (comma separated, as `DENO_V8_FLAGS` takes them). */
export const V8_FLAGS = "--optimize-for-size";

/** The environment variable Deno reads V8 flags from. */
export const V8_FLAGS_VARIABLE = "DENO_V8_FLAGS";

/** Why this process runs as it is, or how it should run itself again. */
export type V8FlagsPlan =
  | { readonly kind: "keep"; readonly reason: string }
  | { readonly kind: "rerun"; readonly argv: readonly string[] };

/** Whether a permission is granted (never prompts). */
function granted(descriptor: Deno.PermissionDescriptor): boolean {
  return Deno.permissions.querySync(descriptor).state === "granted";
}

function envGet(name: string): string | undefined {
  if (!granted({ name: "env", variable: name })) return undefined;
  return Deno.env.get(name);
}

/** This process's own command line (`/proc/self/cmdline`), or undefined off Linux. */
function ownCommandLine(): string[] | undefined {
  if (!granted({ name: "read", path: "/proc/self/cmdline" })) return undefined;
  try {
    const text = new TextDecoder().decode(Deno.readFileSync("/proc/self/cmdline"));
    const argv = text.split("\0");
    if (argv.at(-1) === "") argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}

/** What {@link planV8Flags} decides from. */
export interface V8FlagsSources {
  /** `DENO_V8_FLAGS`, when set (and readable). */
  readonly env: string | undefined;
  /** The process's command line, when readable. */
  readonly argv: readonly string[] | undefined;
  /** The executable's file name: `deno`, or a compiled binary's name. */
  readonly execName: string;
}

/** This process's sources. */
export function ownSources(): V8FlagsSources {
  return {
    env: envGet(V8_FLAGS_VARIABLE),
    argv: ownCommandLine(),
    execName: Deno.execPath().split("/").pop() ?? "",
  };
}

/**
 * Decides from the environment, the runtime's own arguments (those before the script) and
 * whether this is a compiled binary. `scriptArgs` are `Deno.args`.
 */
export function planV8Flags(
  scriptArgs: readonly string[],
  { env, argv, execName }: V8FlagsSources = ownSources(),
): V8FlagsPlan {
  if (env !== undefined) return { kind: "keep", reason: `${V8_FLAGS_VARIABLE} is set` };
  if (!/^deno(\.exe)?$/.test(execName)) {
    return { kind: "keep", reason: "a compiled binary has its V8 flags built in" };
  }
  if (argv === undefined || argv.length < scriptArgs.length + 1) {
    return { kind: "keep", reason: "the command line cannot be read" };
  }
  // [deno, ...runtime arguments, script, ...scriptArgs]; bare `deno main.ts` has none.
  const runtimeArgs = argv.slice(1, argv.length - scriptArgs.length - 1);
  if (runtimeArgs.some((arg) => arg === "--v8-flags" || arg.startsWith("--v8-flags="))) {
    return { kind: "keep", reason: "--v8-flags is given" };
  }
  return { kind: "rerun", argv };
}

function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(`${text}\0`);
  const buffer = new Uint8Array(new ArrayBuffer(bytes.length));
  buffer.set(bytes);
  return buffer;
}

/** A NULL-terminated array of pointers to `strings` (kept alive in `keep`). */
function pointerArray(strings: readonly string[], keep: Uint8Array[]): BigUint64Array<ArrayBuffer> {
  const array = new BigUint64Array(strings.length + 1);
  strings.forEach((text, index) => {
    const bytes = cString(text);
    keep.push(bytes);
    array[index] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes)));
  });
  return array;
}

/** Replaces this process with `argv` and `env`; returns only if `execve` failed. */
function execve(program: string, argv: readonly string[], env: Record<string, string>): void {
  const libc = Deno.dlopen("libc.so.6", {
    execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  });
  const keep: Uint8Array[] = [];
  const path = cString(program);
  const args = pointerArray(argv, keep);
  const envp = pointerArray(Object.entries(env).map(([key, value]) => `${key}=${value}`), keep);
  libc.symbols.execve(path, args, envp);
  libc.close();
}

/** The variable `--workers` hands the port to its copies in (src/ops/workers.ts). */
const WORKER_VARIABLE = "WEBSOCKIFY_WORKER_PORT";

/** Options that print and exit: no reason to start V8 again for them. */
const PRINTING = new Set(["-h", "--help", "--version"]);

/**
 * With FFI permitted, replaces this process with itself run with {@link V8_FLAGS} (same PID,
 * environment, open standard streams). Returns if no run is needed or possible.
 */
export function rerunInPlace(scriptArgs: readonly string[]): void {
  if (!granted({ name: "ffi" }) || !granted({ name: "env" })) return;
  if (scriptArgs.some((arg) => PRINTING.has(arg))) return;
  const plan = planV8Flags(scriptArgs);
  if (plan.kind === "keep") return;
  try {
    execve(Deno.execPath(), plan.argv, { ...Deno.env.toObject(), [V8_FLAGS_VARIABLE]: V8_FLAGS });
  } catch {
    // No libc.so.6 (not glibc): applyV8Flags() runs a child instead.
  }
}

// At import, before the rest of main.ts's modules are evaluated: the run in place costs one
// start-up of the runtime, not of the whole program. Not for --workers' copies (their parent has
// the flags in DENO_V8_FLAGS already, and their IPC channel must stay as node:cluster set it up).
if (
  Deno.mainModule === new URL("../../main.ts", import.meta.url).href &&
  !(granted({ name: "env", variable: WORKER_VARIABLE }) && Deno.env.get(WORKER_VARIABLE))
) {
  rerunInPlace(Deno.args);
}
