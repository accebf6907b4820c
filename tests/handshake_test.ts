import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { acceptKey } from "../src/websocket/accept_key.ts";
import { checkUpgrade, selectProtocol, type UpgradeCheck } from "../src/websocket/handshake.ts";
import { rawExchange, startEcho, startProxy, upgradeRequest } from "./_helpers.ts";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const decoder = new TextDecoder();

Deno.test("acceptKey() answers as node:crypto's SHA-1 does, for valid keys and any other text", () => {
  const guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  const expected = (key: string) => createHash("sha1").update(key + guid).digest("base64");
  // RFC 6455 §1.3's example, and the same key with the whitespace a header value may carry.
  assert.equal(acceptKey(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  assert.equal(acceptKey(` ${KEY}\t`), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  // 2,000 random 16-byte keys, as clients make them.
  for (let round = 0; round < 2000; round++) {
    const key = randomBytes(16).toString("base64");
    assert.equal(acceptKey(key), expected(key), key);
  }
  // Not valid keys (24 characters but not ASCII, other lengths): the general path, UTF-8 as ws.
  for (const key of ["", "a", "é".repeat(24), "ключ".repeat(6), "A".repeat(23), "A".repeat(25)]) {
    assert.equal(acceptKey(key), expected(key), key);
  }
});

Deno.test("selectProtocol() picks binary, no protocol, or refuses as upstream", () => {
  const cases: [string | undefined, UpgradeCheck][] = [
    [undefined, { ok: true, protocol: undefined }],
    ["", { ok: true, protocol: undefined }],
    [" , ", { ok: true, protocol: undefined }],
    ["binary", { ok: true, protocol: "binary" }],
    ["binary, base64", { ok: true, protocol: "binary" }],
    // Upstream compares untrimmed items, so it refuses this; browsers send exactly this form.
    ["base64, binary", { ok: true, protocol: "binary" }],
    ["base64,binary", { ok: true, protocol: "binary" }],
    ["  binary  ", { ok: true, protocol: "binary" }],
    ["base64", { ok: false, reason: "Invalid protocol selected" }],
    ["foobar, gazonk", { ok: false, reason: "Invalid protocol selected" }],
    ["Binary", { ok: false, reason: "Invalid protocol selected" }],
    ["binaryx", { ok: false, reason: "Invalid protocol selected" }],
  ];
  for (const [header, expected] of cases) {
    assert.deepEqual(selectProtocol(header), expected, JSON.stringify(header));
  }
});

Deno.test("checkUpgrade() accepts versions 8 and 13 and refuses others", () => {
  const cases: [string | undefined, UpgradeCheck][] = [
    ["13", { ok: true, protocol: undefined }],
    ["8", { ok: true, protocol: undefined }],
    [" 13 ", { ok: true, protocol: undefined }],
    ["7", { ok: false, reason: "Unsupported protocol version 7" }],
    ["5", { ok: false, reason: "Unsupported protocol version 5" }],
    ["20", { ok: false, reason: "Unsupported protocol version 20" }],
    ["", { ok: false, reason: "Unsupported protocol version " }],
    [undefined, { ok: false, reason: "Missing Sec-WebSocket-Version header" }],
  ];
  for (const [version, expected] of cases) {
    assert.deepEqual(
      checkUpgrade({ version, key: KEY, protocol: undefined }),
      expected,
      JSON.stringify(version),
    );
  }
});

Deno.test("checkUpgrade() requires a valid Sec-WebSocket-Key", () => {
  const cases: [string | undefined, UpgradeCheck][] = [
    [KEY, { ok: true, protocol: "binary" }],
    [" DKURYVK9cRFul1vOZVA56Q== ", { ok: true, protocol: "binary" }],
    [undefined, { ok: false, reason: "Missing Sec-WebSocket-Key header" }],
    ["", { ok: false, reason: "Missing Sec-WebSocket-Key header" }],
    ["   ", { ok: false, reason: "Missing Sec-WebSocket-Key header" }],
    ["not base64", { ok: false, reason: "Invalid Sec-WebSocket-Key header" }],
    ["dGhlIHNhbXBsZSBub25jZQ", { ok: false, reason: "Invalid Sec-WebSocket-Key header" }],
    ["dGhlIHNhbXBsZSBub25jZQ=", { ok: false, reason: "Invalid Sec-WebSocket-Key header" }],
    ["dGhlIHNhbXBsZSBub25jZQ==dGhl", { ok: false, reason: "Invalid Sec-WebSocket-Key header" }],
    ["c2hvcnQ=", { ok: false, reason: "Invalid Sec-WebSocket-Key header" }],
  ];
  for (const [key, expected] of cases) {
    assert.deepEqual(
      checkUpgrade({ version: "13", key, protocol: "binary" }),
      expected,
      JSON.stringify(key),
    );
  }
});

Deno.test("checkUpgrade() checks the version before the key, and the key before the protocol", () => {
  assert.deepEqual(checkUpgrade({ version: "7", key: undefined, protocol: "base64" }), {
    ok: false,
    reason: "Unsupported protocol version 7",
  });
  assert.deepEqual(checkUpgrade({ version: "13", key: "bad", protocol: "base64" }), {
    ok: false,
    reason: "Invalid Sec-WebSocket-Key header",
  });
  assert.deepEqual(checkUpgrade({ version: "13", key: KEY, protocol: "base64" }), {
    ok: false,
    reason: "Invalid protocol selected",
  });
  assert.deepEqual(checkUpgrade({ version: "13", key: KEY, protocol: "base64, binary" }), {
    ok: true,
    protocol: "binary",
  });
});

Deno.test("proxy answers the handshake checks on the wire (400 reasons, 101 with binary)", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const withHeaders = (version: string | undefined, key: string | undefined, protocol?: string) =>
    [
      "GET / HTTP/1.1",
      "Host: 127.0.0.1",
      "Upgrade: websocket",
      "Connection: Upgrade",
      ...(key === undefined ? [] : [`Sec-WebSocket-Key: ${key}`]),
      ...(version === undefined ? [] : [`Sec-WebSocket-Version: ${version}`]),
      ...(protocol === undefined ? [] : [`Sec-WebSocket-Protocol: ${protocol}`]),
      "",
      "",
    ].join("\r\n");
  const cases: [string, RegExp][] = [
    [withHeaders("13", KEY, "base64"), /^HTTP\/1\.1 400 Invalid protocol selected\r\n/],
    [withHeaders("7", KEY), /^HTTP\/1\.1 400 Unsupported protocol version 7\r\n/],
    [withHeaders(undefined, KEY), /^HTTP\/1\.1 400 Missing Sec-WebSocket-Version header\r\n/],
    [withHeaders("13", undefined), /^HTTP\/1\.1 400 Missing Sec-WebSocket-Key header\r\n/],
    [withHeaders("13", "bad"), /^HTTP\/1\.1 400 Invalid Sec-WebSocket-Key header\r\n/],
    [
      withHeaders("13", KEY, "base64, binary"),
      /^HTTP\/1\.1 101 [^\r]*\r\n(?:[^\r]+\r\n)*Sec-WebSocket-Protocol: binary\r\n/i,
    ],
    [
      upgradeRequest("/"),
      /^HTTP\/1\.1 101 [^\r]*\r\n(?:[^\r]+\r\n)*Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i,
    ],
  ];
  const answers = await Promise.all(
    cases.map(async ([request]) =>
      decoder.decode(await rawExchange(proxy.port, request, { ms: 1500 }))
    ),
  );
  cases.forEach(([request, pattern], index) => {
    assert.match(answers[index]!, pattern, request);
  });
  assert.doesNotMatch(answers[6]!, /Sec-WebSocket-Protocol/i);
});
