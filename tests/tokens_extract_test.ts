import assert from "node:assert/strict";
import { extractToken } from "../src/tokens/extract.ts";
import {
  formatTarget,
  parseTargetValue,
  targetFromHostPort,
  TargetValueError,
} from "../src/tokens/target_value.ts";

const noHeaders = new Headers();

Deno.test("extractToken() takes the first non-empty token parameter, decoded", () => {
  assert.equal(extractToken("/websockify?token=abc", noHeaders, false), "abc");
  assert.equal(extractToken("/?token=one&token=two", noHeaders, false), "one");
  assert.equal(extractToken("/?token=&token=two", noHeaders, false), "two");
  assert.equal(extractToken("/?a=1&token=a%20b+c%2Fd", noHeaders, false), "a b c/d");
  assert.equal(extractToken("/?token=%C3%A9t%C3%A9", noHeaders, false), "été");
  assert.equal(extractToken("/?token=abc%0A", noHeaders, false), "abc");
  assert.equal(extractToken("/?token=100%", noHeaders, false), "100%");
  assert.equal(extractToken("/?tok%65n=x", noHeaders, false), "x");
});

Deno.test("extractToken() reads absolute URIs and ignores the fragment", () => {
  assert.equal(
    extractToken("https://localhost:6080/websockify?token=blah", noHeaders, false),
    "blah",
  );
  assert.equal(extractToken("/?token=abc#frag", noHeaders, false), "abc");
  assert.equal(extractToken("/#?token=abc", noHeaders, false), undefined);
});

Deno.test("extractToken() returns undefined when no token is present", () => {
  assert.equal(extractToken("/websockify", noHeaders, false), undefined);
  assert.equal(extractToken("/?token=", noHeaders, false), undefined);
  assert.equal(extractToken("/?token", noHeaders, false), undefined);
  assert.equal(extractToken("/?other=1", noHeaders, false), undefined);
});

Deno.test("extractToken() with hostToken uses the Host header without its port", () => {
  const host = (value: string) => new Headers({ host: value });
  assert.equal(
    extractToken("/?token=ignored", host("vnc1.example.com:6080"), true),
    "vnc1.example.com",
  );
  assert.equal(extractToken("/", host("vnc1.example.com"), true), "vnc1.example.com");
  assert.equal(extractToken("/", host("[::1]:6080"), true), "::1");
  assert.equal(extractToken("/", host("[fe80::1]"), true), "fe80::1");
  assert.equal(extractToken("/?token=x", new Headers(), true), undefined);
  assert.equal(extractToken("/", host(""), true), undefined);
});

Deno.test("parseTargetValue() splits at the last colon and strips brackets", () => {
  assert.deepEqual(parseTargetValue("example.com:5900"), {
    kind: "tcp",
    host: "example.com",
    port: 5900,
  });
  assert.deepEqual(parseTargetValue(" [::1]:5901\n"), { kind: "tcp", host: "::1", port: 5901 });
  assert.deepEqual(parseTargetValue("::1:5902"), { kind: "tcp", host: "::1", port: 5902 });
  assert.deepEqual(parseTargetValue("unix_socket:/run/vnc:1.sock"), {
    kind: "unix",
    path: "/run/vnc:1.sock",
  });
});

Deno.test("parseTargetValue() rejects missing or bad ports and empty hosts", () => {
  for (
    const bad of [
      "host",
      "host:",
      "host:0",
      "host:65536",
      "host:59a",
      ":5900",
      "[]:1",
      "unix_socket:",
    ]
  ) {
    assert.throws(() => parseTargetValue(bad), TargetValueError, bad);
  }
});

Deno.test("targetFromHostPort() accepts numeric and string ports and unix_socket", () => {
  assert.deepEqual(targetFromHostPort("h", 1), { kind: "tcp", host: "h", port: 1 });
  assert.deepEqual(targetFromHostPort("h", "65535"), { kind: "tcp", host: "h", port: 65535 });
  assert.deepEqual(targetFromHostPort("unix_socket", "/s"), { kind: "unix", path: "/s" });
  assert.throws(() => targetFromHostPort(undefined, 1), TargetValueError);
  assert.throws(() => targetFromHostPort("h", undefined), TargetValueError);
  assert.throws(() => targetFromHostPort("h", 1.5), TargetValueError);
});

Deno.test("formatTarget() brackets IPv6 hosts", () => {
  assert.equal(formatTarget({ kind: "tcp", host: "::1", port: 1 }), "[::1]:1");
  assert.equal(formatTarget({ kind: "tcp", host: "h", port: 2 }), "h:2");
  assert.equal(formatTarget({ kind: "unix", path: "/s" }), "unix:/s");
});
