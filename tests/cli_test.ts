import assert from "node:assert/strict";
import {
  helpText,
  normaliseOrigin,
  parseArgs,
  parseHostPort,
  parseOrigins,
  VERSION,
} from "../src/cli.ts";
import type { Config } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";

const CWD = "/work/dir";

function run(argv: string[]): Config {
  const parsed = parseArgs(argv, { cwd: CWD });
  assert.equal(parsed.kind, "run", `expected a run config for ${JSON.stringify(argv)}`);
  return (parsed as { kind: "run"; config: Config }).config;
}

function usageError(argv: string[]): string {
  try {
    parseArgs(argv, { cwd: CWD });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `not a ConfigError: ${error}`);
    return error.message;
  }
  assert.fail(`no error for ${JSON.stringify(argv)}`);
}

Deno.test("parseArgs() parses the listen argument forms", () => {
  const cases: [string, string, number][] = [
    ["6080", "", 6080],
    ["127.0.0.1:6080", "127.0.0.1", 6080],
    ["[::1]:6080", "::1", 6080],
    ["::1:6080", "::1", 6080],
    [":6080", "", 6080],
    ["localhost:0", "localhost", 0],
    ["0.0.0.0:65535", "0.0.0.0", 65535],
  ];
  for (const [argument, host, port] of cases) {
    const config = run([argument, "host:5900"]);
    assert.deepEqual(config.listen, { kind: "tcp", host, port, preferIpv6: false }, argument);
  }
});

Deno.test("parseArgs() parses the target argument forms", () => {
  const cases: [string, string, number][] = [
    ["host:5900", "host", 5900],
    ["127.0.0.1:5900", "127.0.0.1", 5900],
    ["[::1]:5900", "::1", 5900],
    ["::1:5900", "::1", 5900],
    ["[fe80::1]:1", "fe80::1", 1],
    [":5900", "localhost", 5900],
    ["vnc.example.com:65535", "vnc.example.com", 65535],
  ];
  for (const [argument, host, port] of cases) {
    const config = run(["6080", argument]);
    assert.deepEqual(
      config.target,
      { kind: "fixed", target: { kind: "tcp", host, port } },
      argument,
    );
  }
});

Deno.test("parseArgs() accepts options and positionals in any order, '--opt=value' and '--opt value'", () => {
  const orders = [
    ["--web", "/srv", "-v", "127.0.0.1:6080", "host:5900"],
    ["127.0.0.1:6080", "--web=/srv", "host:5900", "-v"],
    ["-v", "127.0.0.1:6080", "host:5900", "--web=/srv"],
    ["127.0.0.1:6080", "-v", "host:5900", "--web", "/srv"],
  ];
  const expected = run(orders[0] as string[]);
  assert.equal(expected.web.root, "/srv");
  assert.equal(expected.log.verbose, true);
  assert.deepEqual(expected.listen, {
    kind: "tcp",
    host: "127.0.0.1",
    port: 6080,
    preferIpv6: false,
  });
  for (const argv of orders) assert.deepEqual(run(argv), expected, argv.join(" "));
});

Deno.test("parseArgs() gives every option its default", () => {
  const config = run(["6080", "host:5900"]);
  assert.deepEqual(config, {
    listen: { kind: "tcp", host: "", port: 6080, preferIpv6: false },
    target: { kind: "fixed", target: { kind: "tcp", host: "host", port: 5900 } },
    tls: {
      cert: `${CWD}/self.pem`,
      key: undefined,
      keyPassword: undefined,
      sslOnly: false,
      verifyClient: false,
      cafile: undefined,
      minVersion: "default",
      ciphers: undefined,
    },
    targetTls: { enabled: false, ca: undefined, insecure: false },
    web: { root: undefined, fileOnly: false, auth: false },
    auth: { plugin: undefined, source: undefined, origins: [] },
    log: {
      verbose: false,
      traffic: false,
      file: undefined,
      syslog: undefined,
      legacySyslog: false,
      record: undefined,
    },
    limits: {
      heartbeat: 0,
      inactivityTimeout: 0,
      connectTimeout: 10,
      headerTimeout: 10,
      maxMessageSize: 64 * 1024 * 1024,
      timeout: 0,
      idleTimeout: 0,
      runOnce: false,
    },
    strictBinary: false,
    permessageDeflate: false,
    daemon: false,
    workers: 1,
    admission: { maxConnections: undefined, maxConnectionsPerIp: undefined },
    logFormat: "text",
    trustedProxy: undefined,
    proxyProtocol: false,
    reusePort: false,
    shutdownDelay: 0,
  });
});

/** One row per option of the OPTIONS table: arguments and the config value they must produce. */
const OPTION_CASES: [string[], (config: Config) => unknown, unknown][] = [
  [["-v"], (c) => c.log.verbose, true],
  [["--verbose"], (c) => c.log.verbose, true],
  [["--traffic"], (c) => c.log.traffic, true],
  [["--record", "rec/session"], (c) => c.log.record, `${CWD}/rec/session`],
  [["--record=/abs/rec"], (c) => c.log.record, "/abs/rec"],
  [["--log-file", "ws.log"], (c) => c.log.file, `${CWD}/ws.log`],
  [["--syslog", "/dev/log"], (c) => c.log.syslog, { kind: "unix", path: "/dev/log" }],
  [["--syslog", "logs.example:514"], (c) => c.log.syslog, {
    kind: "udp",
    host: "logs.example",
    port: 514,
  }],
  [["--syslog", "[::1]:514"], (c) => c.log.syslog, { kind: "udp", host: "::1", port: 514 }],
  [["--syslog", ":514"], (c) => c.log.syslog, { kind: "udp", host: "localhost", port: 514 }],
  [["--syslog", "/dev/log", "--legacy-syslog"], (c) => c.log.legacySyslog, true],
  [["--run-once"], (c) => c.limits.runOnce, true],
  [["--timeout", "30"], (c) => c.limits.timeout, 30],
  [["--idle-timeout=2.5"], (c) => c.limits.idleTimeout, 2.5],
  [["--cert", "cert.pem"], (c) => c.tls.cert, `${CWD}/cert.pem`],
  [["--cert=/etc/ssl/c.pem"], (c) => c.tls.cert, "/etc/ssl/c.pem"],
  [["--key", "key.pem"], (c) => c.tls.key, `${CWD}/key.pem`],
  [["--key-password", "s3cret"], (c) => c.tls.keyPassword, "s3cret"],
  [["--ssl-only"], (c) => c.tls.sslOnly, true],
  [["--ssl-target"], (c) => c.targetTls.enabled, true],
  [["--ssl-target", "--ssl-target-ca", "ca.pem"], (c) => c.targetTls.ca, `${CWD}/ca.pem`],
  [["--ssl-target", "--ssl-target-insecure"], (c) => c.targetTls.insecure, true],
  [["--verify-client"], (c) => c.tls.verifyClient, true],
  [["--verify-client", "--cafile", "ca.pem"], (c) => c.tls.cafile, `${CWD}/ca.pem`],
  [["--ssl-version", "tlsv1_1"], (c) => c.tls.minVersion, "tlsv1_1"],
  [["--ssl-version=tlsv1_2"], (c) => c.tls.minVersion, "tlsv1_2"],
  [["--ssl-version", "tlsv1_3"], (c) => c.tls.minVersion, "tlsv1_3"],
  [["--ssl-version", "default"], (c) => c.tls.minVersion, "default"],
  [["--ssl-ciphers", "ECDHE+AESGCM"], (c) => c.tls.ciphers, "ECDHE+AESGCM"],
  [["--web", "www"], (c) => c.web.root, `${CWD}/www`],
  [["--web", "/srv/www", "--file-only"], (c) => c.web.fileOnly, true],
  [["--web", "www", "--auth-plugin", "BasicHTTPAuth", "--web-auth"], (c) => c.web.auth, true],
  [["--auth-plugin", "BasicHTTPAuth"], (c) => c.auth.plugin, "BasicHTTPAuth"],
  [["--auth-plugin", "BasicHTTPAuth", "--auth-source", "u:p"], (c) => c.auth.source, "u:p"],
  [["--origin", "https://a.example"], (c) => c.auth.origins, ["https://a.example"]],
  [["--heartbeat", "5"], (c) => c.limits.heartbeat, 5],
  [["--inactivity-timeout", "2.5"], (c) => c.limits.inactivityTimeout, 2.5],
  [["--strict-binary"], (c) => c.strictBinary, true],
  [["--permessage-deflate"], (c) => c.permessageDeflate, true],
  [["--connect-timeout", "0.5"], (c) => c.limits.connectTimeout, 0.5],
  [["--header-timeout", "0"], (c) => c.limits.headerTimeout, 0],
  [["--max-message-size", "1048576"], (c) => c.limits.maxMessageSize, 1048576],
  [["--max-message-size", "64k"], (c) => c.limits.maxMessageSize, 65536],
  [["--max-message-size", "2M"], (c) => c.limits.maxMessageSize, 2 * 1024 * 1024],
  [["--max-message-size", "1GiB"], (c) => c.limits.maxMessageSize, 1024 ** 3],
  [["--workers", "4"], (c) => c.workers, 4],
  [["-D"], (c) => c.daemon, true],
  [["--daemon"], (c) => c.daemon, true],
  [["--workers=256"], (c) => c.workers, 256],
  [["--max-connections", "100"], (c) => c.admission.maxConnections, 100],
  [["--max-connections-per-ip=3"], (c) => c.admission.maxConnectionsPerIp, 3],
  [["--log-format", "json"], (c) => c.logFormat, "json"],
  [["--log-format=text"], (c) => c.logFormat, "text"],
  [["--trusted-proxy", "127.0.0.1, 10.0.0.0/8,::1"], (c) => c.trustedProxy, [
    "127.0.0.1",
    "10.0.0.0/8",
    "::1",
  ]],
  [["--proxy-protocol"], (c) => c.proxyProtocol, true],
  [["--reuse-port"], (c) => c.reusePort, true],
  [["--metrics", "0", "--shutdown-delay", "1.5"], (c) => c.shutdownDelay, 1.5],
];

Deno.test("parseArgs() maps every option into its Config field", () => {
  for (const [options, pick, expected] of OPTION_CASES) {
    const config = run([...options, "6080", "host:5900"]);
    assert.deepEqual(pick(config), expected, options.join(" "));
  }
});

Deno.test("parseArgs() maps -6 into listen.preferIpv6", () => {
  for (const flag of ["-6", "--prefer-ipv6"]) {
    assert.deepEqual(run([flag, "6080", "h:1"]).listen, {
      kind: "tcp",
      host: "",
      port: 6080,
      preferIpv6: true,
    });
  }
});

Deno.test("parseArgs() maps --unix-listen and --unix-listen-mode, taking no listen argument", () => {
  assert.deepEqual(run(["--unix-listen", "ws.sock", "host:5900"]).listen, {
    kind: "unix",
    path: `${CWD}/ws.sock`,
    mode: 0o600,
  });
  for (const mode of ["660", "0660", "0o660"]) {
    const config = run(["--unix-listen=/run/ws.sock", "--unix-listen-mode", mode, "h:1"]);
    assert.deepEqual(config.listen, { kind: "unix", path: "/run/ws.sock", mode: 0o660 }, mode);
  }
});

Deno.test("parseArgs() maps --unix-target to a fixed unix target", () => {
  assert.deepEqual(run(["--unix-target", "vnc.sock", "6080"]).target, {
    kind: "fixed",
    target: { kind: "unix", path: `${CWD}/vnc.sock` },
  });
});

Deno.test("parseArgs() maps --token-plugin, --token-source and --host-token", () => {
  assert.deepEqual(run(["--token-plugin", "TokenFile", "6080"]).target, {
    kind: "tokens",
    plugin: "TokenFile",
    source: undefined,
    hostToken: false,
  });
  assert.deepEqual(
    run(["6080", "--token-plugin=TokenRedis", "--token-source", "redis:6379", "--host-token"])
      .target,
    { kind: "tokens", plugin: "TokenRedis", source: "redis:6379", hostToken: true },
  );
});

Deno.test("parseArgs() turns --target-config into TokenFile with an absolute path", () => {
  assert.deepEqual(run(["--target-config", "tokens.cfg", "6080"]).target, {
    kind: "tokens",
    plugin: "TokenFile",
    source: `${CWD}/tokens.cfg`,
    hostToken: false,
  });
  assert.deepEqual(run(["--target-config=/etc/ws/tokens", "6080"]).target, {
    kind: "tokens",
    plugin: "TokenFile",
    source: "/etc/ws/tokens",
    hostToken: false,
  });
});

Deno.test("parseArgs() takes the wrap command after '--' with --wrap-mode", () => {
  assert.deepEqual(run(["6080", "--", "vncserver", "-geometry", "800x600"]).target, {
    kind: "wrap",
    command: ["vncserver", "-geometry", "800x600"],
    mode: "exit",
  });
  assert.deepEqual(run(["--wrap-mode", "respawn", "6080", "--", "cmd"]).target, {
    kind: "wrap",
    command: ["cmd"],
    mode: "respawn",
  });
  assert.deepEqual(run(["--wrap-mode=ignore", "6080", "--", "cmd"]).target, {
    kind: "wrap",
    command: ["cmd"],
    mode: "ignore",
  });
});

Deno.test("parseArgs() returns the help and version text to print", () => {
  for (const flag of ["-h", "--help"]) {
    const parsed = parseArgs([flag], { cwd: CWD });
    assert.equal(parsed.kind, "print");
    assert.equal((parsed as { text: string }).text, helpText());
  }
  assert.deepEqual(parseArgs(["--version"], { cwd: CWD }), { kind: "print", text: `${VERSION}\n` });
});

/** Usage errors: arguments and a pattern the ConfigError message must match. */
const USAGE_ERRORS: [string[], RegExp][] = [
  [[], /^Too few arguments$/],
  [["6080"], /^Too few arguments$/],
  [["-v", "--web", "/srv"], /^Too few arguments$/],
  [["--unix-listen", "ws.sock"], /^Too few arguments$/],
  [["6080", "host:5900", "extra"], /^Too many arguments$/],
  [["--unix-listen", "ws.sock", "6080", "host:5900"], /^Too many arguments$/],
  [["--token-plugin", "TokenFile", "6080", "host:5900"], /^Too many arguments: .*--token-plugin/],
  [["--target-config", "t.cfg", "6080", "host:5900"], /^Too many arguments: .*--token-plugin/],
  [["--unix-target", "/s", "6080", "host:5900"], /^Too many arguments: .*--unix-target/],
  [["abc", "host:5900"], /^Error parsing listen port: 'abc'/],
  [["", "host:5900"], /^Error parsing listen port: ''/],
  [["host:", "host:5900"], /^Error parsing listen port: ''/],
  [["70000", "host:5900"], /^Error parsing listen port: '70000'/],
  [["-1", "host:5900"], /^Unknown option '-1'/],
  [["127.0.0.1:x", "host:5900"], /^Error parsing listen port: 'x'/],
  [["6080", "host"], /^Error parsing target: 'host' is not host:port/],
  [["6080", "5900"], /^Error parsing target: '5900' is not host:port/],
  [["6080", "[::1]"], /^Error parsing target: '\[::1\]' is not host:port/],
  [["6080", "host:x"], /^Error parsing target port: 'x'/],
  [["6080", "host:"], /^Error parsing target port: ''/],
  [["6080", "host:0"], /^Error parsing target port: '0'/],
  [["6080", "host:65536"], /^Error parsing target port: '65536'/],
  [["6080", "host: 1"], /^Error parsing target port: ' 1'/],
  [["--syslog", "logs:x", "6080", "h:1"], /^Error parsing syslog port: 'x'/],
  [["--syslog", "logs:0", "6080", "h:1"], /^Error parsing syslog port: '0'/],
  [["--syslog", "logs:65536", "6080", "h:1"], /^Error parsing syslog port: '65536'/],
  [
    ["--unix-listen", "s", "--unix-listen-mode", "999", "h:1"],
    /^Error parsing listen unix socket mode: '999'/,
  ],
  [
    ["--unix-listen", "s", "--unix-listen-mode", "rw", "h:1"],
    /^Error parsing listen unix socket mode: 'rw'/,
  ],
  [["--token-source", "x", "6080"], /^You must use --token-plugin to use --token-source$/],
  [["--host-token", "6080", "h:1"], /^You must use --token-plugin to use --host-token$/],
  [["--auth-source", "x", "6080", "h:1"], /^You must use --auth-plugin to use --auth-source$/],
  [["--web", "w", "--web-auth", "6080", "h:1"], /^You must use --auth-plugin to use --web-auth$/],
  [["--auth-plugin", "A", "--web-auth", "6080", "h:1"], /^You must use --web to use --web-auth$/],
  [["--legacy-syslog", "6080", "h:1"], /^You must use --syslog to use --legacy-syslog$/],
  [["--cafile", "ca.pem", "6080", "h:1"], /^You must use --verify-client to use --cafile$/],
  [
    ["--ssl-target-ca", "ca.pem", "6080", "h:1"],
    /^You must use --ssl-target to use --ssl-target-ca$/,
  ],
  [
    ["--ssl-target-insecure", "6080", "h:1"],
    /^You must use --ssl-target to use --ssl-target-insecure$/,
  ],
  [["--bogus", "6080", "h:1"], /^Unknown option '--bogus'/],
  [["-x", "6080", "h:1"], /^Unknown option '-x'/],
  [["--verbos", "6080", "h:1"], /^Unknown option '--verbos' \(did you mean --verbose\?\)$/],
  [["--verbose=yes", "6080", "h:1"], /--verbose/],
  [["--cert"], /^Option '--cert <CERT>' argument missing/],
  [
    ["--ssl-version", "sslv3", "6080", "h:1"],
    /--ssl-version.*'sslv3'.*default, tlsv1_1, tlsv1_2, tlsv1_3/,
  ],
  [["--wrap-mode", "kill", "6080", "--", "cmd"], /--wrap-mode.*'kill'.*exit, ignore, respawn/],
  [["6080", "--"], /^No command to wrap after '--'/],
];

Deno.test("parseArgs() rejects bad command lines with upstream's usage errors", () => {
  for (const [argv, pattern] of USAGE_ERRORS) {
    const message = usageError(argv);
    assert.match(message, pattern, JSON.stringify(argv));
    assert.ok(!message.endsWith("."), `trailing period: ${message}`);
    assert.match(message, /^[A-Z]/, `not sentence case: ${message}`);
  }
});

Deno.test("--shutdown-delay takes seconds and needs --metrics", () => {
  for (const value of ["-1", "abc", "5s", "1e3"]) {
    assert.equal(
      usageError(["--metrics", "0", "--shutdown-delay", value, "6080", "h:1"]),
      `--shutdown-delay takes a number of seconds (0 or more), not '${value}'`,
    );
  }
  assert.equal(
    usageError(["--shutdown-delay", "1", "6080", "h:1"]),
    "--shutdown-delay needs --metrics: its /healthz 503 is what takes the proxy out of the balancer",
  );
  assert.equal(run(["--shutdown-delay", "0", "6080", "h:1"]).shutdownDelay, 0);
});

Deno.test("parseArgs() rejects bad numbers for every numeric option", () => {
  const seconds = [
    "--heartbeat",
    "--inactivity-timeout",
    "--timeout",
    "--idle-timeout",
    "--connect-timeout",
    "--header-timeout",
  ];
  for (const option of seconds) {
    for (const value of ["-1", "abc", "", " ", "Infinity", "NaN", "0x10", "1e3", "5s"]) {
      const message = usageError([option, value, "6080", "h:1"]);
      assert.equal(
        message,
        `${option} takes a number of seconds (0 or more), not '${value}'`,
        `${option} ${JSON.stringify(value)}`,
      );
    }
    assert.ok(run([`${option}=0.25`, "6080", "h:1"]), option);
  }
  for (const value of ["0", "-5", "1.5M", "abc", "", "64T", "0x100", "99999999999999999999"]) {
    assert.match(
      usageError(["--max-message-size", value, "6080", "h:1"]),
      /^--max-message-size takes a size in bytes such as 65536 or 64M, not '/,
      JSON.stringify(value),
    );
  }
  for (const value of ["0", "257", "1.5", "-1", "abc", "", "0x10", " 2", "1e2"]) {
    assert.equal(
      usageError(["--workers", value, "6080", "h:1"]),
      `--workers takes a whole number from 1 to 256, not '${value}'`,
      JSON.stringify(value),
    );
  }
});

Deno.test("parseArgs() rejects an --origin entry that is not an origin", () => {
  for (const value of ["https://a.example/path", "http://", "https://a.example/?q=1", "::"]) {
    assert.match(
      usageError(["--origin", value, "6080", "h:1"]),
      /^--origin: '.*' is not an origin: use scheme:\/\/host\[:port\]/,
      value,
    );
  }
});

Deno.test("parseArgs() rejects a bad --trusted-proxy entry with one line naming it", () => {
  const cases: [string, string][] = [
    ["10.0.0.0/33", "--trusted-proxy: '10.0.0.0/33' has a bad prefix length: give 0 to 32"],
    [
      "127.0.0.1,foo",
      "--trusted-proxy: 'foo' is not an IP address or CIDR range: give e.g. 10.0.0.1, 10.0.0.0/8 or ::1",
    ],
    [",", "--trusted-proxy: the list is empty: give addresses or CIDR ranges"],
  ];
  for (const [value, message] of cases) {
    assert.equal(usageError(["--trusted-proxy", value, "6080", "h:1"]), message, value);
  }
});

Deno.test("parseHostPort() splits at the last colon and strips IPv6 brackets", () => {
  const cases: [string, "listen" | "target", { host: string; port: number }][] = [
    ["6080", "listen", { host: "", port: 6080 }],
    ["0", "listen", { host: "", port: 0 }],
    ["h:1", "target", { host: "h", port: 1 }],
    ["[::1]:6080", "listen", { host: "::1", port: 6080 }],
    ["::1:6080", "target", { host: "::1", port: 6080 }],
    ["[2001:db8::1]:443", "target", { host: "2001:db8::1", port: 443 }],
    [":80", "target", { host: "", port: 80 }],
  ];
  for (const [value, what, expected] of cases) {
    assert.deepEqual(parseHostPort(value, what), expected, value);
  }
  assert.throws(
    () => parseHostPort("host", "target"),
    /^ConfigError: Error parsing target: 'host'/,
  );
  assert.throws(() => parseHostPort("h:p", "listen"), /Error parsing listen port: 'p'/);
  assert.throws(() => parseHostPort("h:65536", "target"), /Error parsing target port: '65536'/);
});

Deno.test("parseOrigins() normalises, splits on commas and spaces, and expands scheme-less entries", () => {
  assert.deepEqual(parseOrigins(undefined), []);
  assert.deepEqual(parseOrigins(""), []);
  assert.deepEqual(parseOrigins("https://A.Example:443"), ["https://a.example"]);
  assert.deepEqual(parseOrigins("http://a.example:80, https://b.example:8443"), [
    "http://a.example",
    "https://b.example:8443",
  ]);
  assert.deepEqual(parseOrigins("a.example b.example:8080"), [
    "http://a.example",
    "https://a.example",
    "http://b.example:8080",
    "https://b.example:8080",
  ]);
  assert.deepEqual(parseOrigins("https://a.example/"), ["https://a.example"]);
  assert.deepEqual(parseOrigins("http://[::1]:6080"), ["http://[::1]:6080"]);
  assert.throws(() => parseOrigins("https://a.example/x"), ConfigError);
});

Deno.test("normaliseOrigin() returns scheme://host[:port] or undefined", () => {
  const cases: [string, string | undefined][] = [
    ["https://example.com", "https://example.com"],
    ["HTTPS://EXAMPLE.COM:443/", "https://example.com"],
    ["http://example.com:8080", "http://example.com:8080"],
    ["http://example.com:80", "http://example.com"],
    ["https://example.com/path", undefined],
    ["not a url", undefined],
    ["file:///etc/passwd", undefined],
    ["", undefined],
  ];
  for (const [value, expected] of cases) assert.equal(normaliseOrigin(value), expected, value);
});

Deno.test("helpText() lists the usage forms", () => {
  const text = helpText();
  assert.match(
    text,
    /^Usage: websockify \[options\] \[source_addr:\]source_port target_addr:target_port/,
  );
  assert.match(text, /--token-plugin=CLASS \[source_addr:\]source_port/);
  assert.match(text, /--unix-target=FILE \[source_addr:\]source_port/);
  assert.match(text, /-- WRAP_COMMAND_LINE/);
});
