import assert from "node:assert/strict";
import {
  childrenOf,
  envWithoutV8Flags,
  gone,
  MAIN,
  runMain,
  startEcho,
  startProxy,
  within,
} from "./_helpers.ts";
import { planV8Flags, V8_FLAGS } from "../src/ops/v8_flags.ts";

/** DENO_V8_FLAGS of process `pid`, or undefined. */
function v8FlagsOf(pid: number): string | undefined {
  const environ = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0");
  const entry = environ.find((line) => line.startsWith("DENO_V8_FLAGS="));
  return entry?.slice("DENO_V8_FLAGS=".length);
}

function cmdlineOf(pid: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter(Boolean);
}

Deno.test("planV8Flags: runs again only without DENO_V8_FLAGS, --v8-flags or a binary", () => {
  const args = ["6080", "localhost:5900"];
  const plan = (argv: string[] | undefined, env?: string, execName = "deno", own = args) =>
    planV8Flags(own, { env, argv, execName }).kind;
  const argv = ["deno", "run", "-A", "main.ts", ...args];
  assert.deepEqual(planV8Flags(args, { env: undefined, argv, execName: "deno" }), {
    kind: "rerun",
    argv,
  });
  assert.equal(plan(argv, "--no-optimize-for-size"), "keep");
  assert.equal(plan(["deno", "run", "-A", "--v8-flags=--trace-gc", "main.ts", ...args]), "keep");
  assert.equal(plan(["deno", "run", "--v8-flags", "--trace-gc", "-A", "main.ts", ...args]), "keep");
  // After the script it is the program's argument, not the runtime's.
  const late = ["--v8-flags=x", ...args];
  assert.equal(plan(["deno", "run", "-A", "main.ts", ...late], undefined, "deno", late), "rerun");
  assert.equal(plan(["deno", "main.ts", ...args]), "rerun");
  assert.equal(plan(["./websockify", ...args], undefined, "websockify"), "keep");
  assert.equal(plan(undefined), "keep");
});

Deno.test("deno run -A main.ts runs itself again in place with the V8 flags", async () => {
  await using echo = startEcho();
  const args = ["127.0.0.1:0", `127.0.0.1:${echo.port}`];
  const proxy = await startProxy(args, { deno: ["-A"], env: envWithoutV8Flags(), clearEnv: true });
  // Same PID (the test's child), same command line, the flags in its environment, no child.
  assert.equal(v8FlagsOf(proxy.pid), V8_FLAGS);
  assert.deepEqual(cmdlineOf(proxy.pid), [Deno.execPath(), "run", "-A", MAIN, ...args]);
  assert.deepEqual(childrenOf(proxy.pid), []);
  proxy.kill("SIGTERM");
  const status = await within(proxy.status, 10000, "exit after SIGTERM");
  assert.equal(status.code, 0);
  assert.equal(proxy.stderr().match(/WebSocket server settings/g)?.length, 1, proxy.stderr());
  assert.match(proxy.stderr(), /Got SIGTERM: closing sessions and exiting/);
});

Deno.test("the user's own DENO_V8_FLAGS or --v8-flags are used as given", async () => {
  await using echo = startEcho();
  const args = ["127.0.0.1:0", `127.0.0.1:${echo.port}`];
  {
    await using proxy = await startProxy(args, {
      deno: ["-A"],
      env: { ...envWithoutV8Flags(), DENO_V8_FLAGS: "--no-optimize-for-size" },
      clearEnv: true,
    });
    assert.equal(v8FlagsOf(proxy.pid), "--no-optimize-for-size");
  }
  {
    const deno = ["-A", "--v8-flags=--no-optimize-for-size"];
    await using proxy = await startProxy(args, { deno, env: envWithoutV8Flags(), clearEnv: true });
    assert.equal(v8FlagsOf(proxy.pid), undefined);
  }
  {
    // Without -A the runtime's arguments cannot be read: nothing happens (the start task sets
    // DENO_V8_FLAGS itself).
    const deno = ["--allow-net", "--allow-read", "--allow-env", "--allow-sys", "--allow-ffi"];
    await using proxy = await startProxy(args, { deno, env: envWithoutV8Flags(), clearEnv: true });
    assert.equal(v8FlagsOf(proxy.pid), undefined);
  }
});

Deno.test("usage errors and --help do not depend on the run in place", async () => {
  const bad = await runMain(["--no-such-option"]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr.match(/websockify: error:/g)?.length, 1, bad.stderr);
  const help = await runMain(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: websockify/m);
});

Deno.test("-D's background process and --workers' copies run with the V8 flags", async () => {
  await using echo = startEcho();
  const dir = await Deno.makeTempDir();
  const logFile = `${dir}/websockify.log`;
  const daemon = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "-D", "--log-file", logFile, "127.0.0.1:0", `127.0.0.1:${echo.port}`],
    env: envWithoutV8Flags(),
    clearEnv: true,
    stdin: "null",
  }).output();
  const stderr = new TextDecoder().decode(daemon.stderr);
  assert.equal(daemon.code, 0, stderr);
  const pid = Number(/running in the background as process (\d+)/.exec(stderr)?.[1]);
  assert.ok(pid > 0, stderr);
  try {
    assert.equal(v8FlagsOf(pid), V8_FLAGS);
  } finally {
    Deno.kill(pid, "SIGTERM");
    await gone(pid, 8000, "daemon exit");
    await Deno.remove(dir, { recursive: true });
  }

  const args = ["--workers", "2", "127.0.0.1:0", `127.0.0.1:${echo.port}`];
  await using proxy = await startProxy(args, {
    deno: ["-A"],
    env: envWithoutV8Flags(),
    clearEnv: true,
  });
  assert.equal(v8FlagsOf(proxy.pid), V8_FLAGS);
  // A copy counts once its exec is done (its command line names main.ts): between the spawn and
  // the end of execve, /proc shows no environment yet (seen once in CI).
  const started = (pid: number) => {
    try {
      return cmdlineOf(pid).includes(MAIN);
    } catch {
      return false;
    }
  };
  let workers: number[] = [];
  await within(
    (async () => {
      while ((workers = childrenOf(proxy.pid)).length < 1 || !workers.every(started)) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })(),
    15000,
    "the --workers copy",
  );
  for (const worker of workers) {
    assert.equal(v8FlagsOf(worker), V8_FLAGS, cmdlineOf(worker).join(" "));
  }
});

Deno.test("deno task start and deno task compile give V8 the same flags main.ts applies", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))) as {
    tasks: Record<string, string>;
  };
  assert.match(config.tasks.start!, new RegExp(`DENO_V8_FLAGS=${V8_FLAGS} `));
  assert.ok(config.tasks.compile!.includes(` --v8-flags=${V8_FLAGS} `), config.tasks.compile!);
});
