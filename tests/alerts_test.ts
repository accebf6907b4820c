/**
 * deploy/alerts.yml: Prometheus accepts the rules (`promtool check rules`), each alert fires on the
 * series that should raise it and stays quiet on an idle instance (`promtool test rules`), and every
 * `websockify_*` series the rules read is one `--metrics` publishes (docs/deploy.md's table, which
 * tests/metrics_test.ts checks against a live `/metrics`).
 */
import assert from "node:assert/strict";
import { promtool } from "./_metrics_helpers.ts";

const RULES = new URL("../deploy/alerts.yml", import.meta.url).pathname;
const GUIDE = new URL("../docs/deploy.md", import.meta.url).pathname;

/** Series for instance `a` that raise every rule, and instance `quiet` with zero rates. */
const SERIES: [string, string, string][] = [
  // [series, instance a's samples, instance quiet's samples], one sample a minute
  ["up", "0x40", "1x40"],
  ["websockify_target_connect_failures_total", "0+60x40", "0x40"],
  ["websockify_sessions_total", "0+60x40", "0+60x40"],
  ['websockify_handshake_failures_total{reason="not_upgrade"}', "0+1x40", "0x40"],
  ['websockify_handshake_failures_total{reason="header_timeout"}', "0+120x40", "0x40"],
  ['websockify_tls_failures_total{reason="handshake"}', "0+1x40", "0x40"],
  ['websockify_connections_refused_total{reason="max_connections"}', "0+1x40", "0x40"],
  ['websockify_sessions_ended_total{reason="target_error"}', "0+12x40", "0x40"],
];

/** Each alert with the annotations it must carry for instance `a` (and none for `quiet`). */
const EXPECTED: Record<string, { severity: string; summary: string; description: string }> = {
  WebsockifyDown: {
    severity: "critical",
    summary: "websockify on a does not answer /metrics",
    description: "The process is down or its --metrics listener is unreachable.",
  },
  WebsockifyTargetUnreachable: {
    severity: "critical",
    summary: "More than 10 % of sessions on a cannot reach their target",
    description: "Check the target host (VNC server, token file entries) and --connect-timeout.",
  },
  WebsockifyUpgradeHeadersLost: {
    severity: "warning",
    summary: "websockify on a receives HTTP requests without Upgrade",
    description: "A front proxy drops the Upgrade and Connection headers (see deploy/nginx.conf).",
  },
  WebsockifyCertificateRejected: {
    severity: "warning",
    summary: "TLS handshakes fail on a",
    description:
      "The log says which clients; install the CA on them or use a certificate they trust.",
  },
  WebsockifyConnectionLimit: {
    severity: "warning",
    summary: "websockify on a refuses sessions at --max-connections",
    description: "Raise --max-connections or add instances behind the balancer.",
  },
  WebsockifyStalledRequests: {
    severity: "warning",
    summary: "More than one stalled request a second on a",
    description: "Slow or hostile clients; the proxy closes them after --header-timeout.",
  },
  WebsockifyTargetErrors: {
    severity: "warning",
    summary: "Sessions on a end in target errors",
    description: "The target resets its connections; see the debug log for the error.",
  },
};

/** The series name with job and instance added to its labels. */
function withInstance(series: string, instance: string): string {
  const labels = `job="websockify",instance="${instance}"`;
  return series.includes("{") ? series.replace("{", `{${labels},`) : `${series}{${labels}}`;
}

/** A promtool unit test file (JSON is YAML) for the rules at `rules`. */
function unitTests(rules: string, alerts: string[]): string {
  const inputSeries = SERIES.flatMap(([series, busy, quiet]) => [
    { series: withInstance(series, "a"), values: busy },
    { series: withInstance(series, "quiet"), values: quiet },
  ]);
  const expect = (at: string, firing: boolean) =>
    alerts.map((name) => {
      const expected = EXPECTED[name]!;
      const labels: Record<string, string> = { severity: expected.severity, instance: "a" };
      // WebsockifyDown reads `up` as it is, so its alert keeps the job label too.
      if (name === "WebsockifyDown") labels.job = "websockify";
      return {
        eval_time: at,
        alertname: name,
        exp_alerts: firing
          ? [{
            exp_labels: labels,
            exp_annotations: { summary: expected.summary, description: expected.description },
          }]
          : [],
      };
    });
  return JSON.stringify({
    rule_files: [rules],
    evaluation_interval: "1m",
    tests: [{
      interval: "1m",
      input_series: inputSeries,
      // Nothing has fired before its `for` has run; everything has by 30 minutes.
      alert_rule_test: [...expect("30s", false), ...expect("30m", true)],
    }],
  });
}

function alertNames(text: string): string[] {
  return [...text.matchAll(/^\s*- alert: (\w+)/gm)].map((match) => match[1]!);
}

Deno.test("deploy/alerts.yml: promtool accepts the rules", async () => {
  const checked = await promtool(["check", "rules", RULES]);
  assert.equal(checked.code, 0, checked.output);
  const count = alertNames(await Deno.readTextFile(RULES)).length;
  assert.match(checked.output, new RegExp(`SUCCESS: ${count} rules found`));
});

Deno.test("deploy/alerts.yml: every alert fires on its series and stays quiet on an idle instance", async () => {
  const alerts = alertNames(await Deno.readTextFile(RULES));
  assert.deepEqual([...alerts].sort(), Object.keys(EXPECTED).sort(), "alerts without a case");
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/alerts_test.yml`;
    await Deno.writeTextFile(file, unitTests(RULES, alerts));
    const tested = await promtool(["test", "rules", file]);
    assert.equal(tested.code, 0, tested.output);
    assert.match(tested.output, /SUCCESS/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deploy/alerts.yml reads only series that --metrics publishes", async () => {
  const rules = await Deno.readTextFile(RULES);
  const guide = await Deno.readTextFile(GUIDE);
  const published = new Set([...guide.matchAll(/^\| `(websockify_\w+)`/gm)].map((m) => m[1]));
  const used = new Set([...rules.matchAll(/\b(websockify_\w+)/g)].map((m) => m[1]!));
  assert.ok(used.size >= 6, `only ${used.size} series used`);
  for (const series of used) assert.ok(published.has(series), `${series} is not published`);
});
