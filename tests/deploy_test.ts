/**
 * deploy/websockify.service: `systemd-analyze verify` accepts every directive of the real file
 * (only the ExecStart binary is swapped for one that exists here), and its stop timeout leaves
 * room for the proxy's shutdown grace.
 *
 * @module
 */

import assert from "node:assert/strict";

const UNIT = new URL("../deploy/websockify.service", import.meta.url).pathname;
const SERVER = new URL("../src/server.ts", import.meta.url).pathname;
const INSTALLED = "/usr/local/bin/websockify";

Deno.test("deploy/websockify.service passes systemd-analyze verify without warnings", async () => {
  const text = await Deno.readTextFile(UNIT);
  assert.match(text, new RegExp(`^ExecStart=${INSTALLED} `, "m"));
  const dir = await Deno.makeTempDir();
  try {
    // verify insists the ExecStart binary exists: a stand-in at a temporary path, rest unchanged.
    const binary = `${dir}/websockify`;
    await Deno.copyFile("/bin/true", binary);
    await Deno.chmod(binary, 0o755);
    const unit = `${dir}/websockify.service`;
    await Deno.writeTextFile(unit, text.replace(`ExecStart=${INSTALLED} `, `ExecStart=${binary} `));
    const result = await new Deno.Command("/usr/bin/systemd-analyze", {
      args: ["verify", unit],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const output = new TextDecoder().decode(result.stdout) +
      new TextDecoder().decode(result.stderr);
    assert.equal(result.code, 0, output);
    // Unknown or misspelt directives are warnings with exit 0: any output at all is a defect.
    assert.equal(output.trim(), "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("systemd-analyze verify reports a misspelt directive (the check above can fail)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const unit = `${dir}/bad.service`;
    await Deno.writeTextFile(unit, "[Service]\nExecStart=/bin/true\nLockPersonalty=yes\n");
    const result = await new Deno.Command("/usr/bin/systemd-analyze", {
      args: ["verify", unit],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.match(new TextDecoder().decode(result.stderr), /Unknown key 'LockPersonalty'/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deploy/websockify.service: hardening, reload and a stop timeout above the drain", async () => {
  const text = await Deno.readTextFile(UNIT);
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, "m").exec(text)?.[1];
  assert.equal(value("DynamicUser"), "yes");
  assert.equal(value("NoNewPrivileges"), "yes");
  assert.equal(value("ProtectSystem"), "strict");
  assert.equal(value("CapabilityBoundingSet"), "");
  assert.equal(value("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
  assert.equal(value("SystemCallFilter"), "@system-service");
  assert.equal(value("ExecReload"), "/bin/kill -HUP $MAINPID");
  assert.equal(value("KillSignal"), "SIGTERM");
  assert.equal(value("MemoryDenyWriteExecute"), undefined, "V8's JIT needs W+X memory");
  const grace = Number(
    /const SHUTDOWN_GRACE_MS = (\d+);/.exec(await Deno.readTextFile(SERVER))?.[1],
  );
  assert.ok(grace > 0, "SHUTDOWN_GRACE_MS not found in src/server.ts");
  assert.ok(Number(value("TimeoutStopSec")) * 1000 >= 2 * grace, "TimeoutStopSec too short");
});
