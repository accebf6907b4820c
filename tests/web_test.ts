import assert from "node:assert/strict";
import { createWebHandler, type WebHandlerOptions } from "../src/http/web.ts";
import { escapeHtml } from "../src/http/http_response.ts";
import { quotePath } from "../src/http/web_listing.ts";
import type { WebConfig } from "../src/config.ts";
import { AuthError } from "../src/errors.ts";
import { requestInfo } from "../src/http/http.ts";
import type { RequestInfo } from "../src/types.ts";
import { rawExchange } from "./_helpers.ts";
import { parseResponses, rawRequest, startServer, type TestServer } from "./_web_helpers.ts";

const SECRET = "TOP-SECRET-OUTSIDE";

/** A temp dir with `root/` (the web root) and files outside it that must never be served. */
async function makeTree(): Promise<{ dir: string; root: string }> {
  const dir = await Deno.makeTempDir({ prefix: "websockify-web-" });
  const root = `${dir}/root`;
  const files: Record<string, string> = {
    "outside.txt": SECRET,
    "outsidedir/file.txt": SECRET,
    "root/hello.txt": "hello\n",
    "root/app.js": "export const a = 1;\n",
    "root/style.css": "body {}\n",
    "root/data.json": "{}\n",
    "root/pic.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    "root/mod.wasm": "\0asm",
    "root/page.html": "<p>page</p>\n",
    "root/sub/index.html": "<p>sub index.html</p>\n",
    "root/sub/index.htm": "<p>wrong</p>\n",
    "root/sub2/index.htm": "<p>sub2 index.htm</p>\n",
    "root/list/a&b<c>.txt": "x",
    "root/list/q\"uote's.txt": "x",
    "root/list/space name.txt": "x",
    "root/list/Zeta.txt": "x",
    "root/list/alpha.txt": "x",
    "root/list/h\u00e9.txt": "x",
    "root/list/.hidden": SECRET,
    "root/list/back\\slash.txt": SECRET,
    "root/list/dir/x.txt": "x",
    "root/list/<script>alert(1)<\u2215script>.txt": "x",
    "root/.secret": SECRET,
    "root/.git/config": SECRET,
    "root/idx-escape/other.txt": "x",
    "root/back\\slash.txt": SECRET,
  };
  for (const [path, content] of Object.entries(files)) {
    const full = `${dir}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(full, content);
  }
  await Deno.symlink("../outside.txt", `${root}/outside-link`);
  await Deno.symlink(`${dir}/outside.txt`, `${root}/outside-abs-link`);
  await Deno.symlink("../outsidedir", `${root}/outside-dir`);
  await Deno.symlink("hello.txt", `${root}/inside-link`);
  await Deno.symlink(".secret", `${root}/dot-link`);
  await Deno.symlink("../hello.txt", `${root}/list/link`);
  await Deno.symlink("../../outside.txt", `${root}/idx-escape/index.html`);
  await Deno.mkdir(`${root}/empty`);
  return { dir, root };
}

async function withWeb(
  config: Partial<WebConfig>,
  run: (server: TestServer, root: string) => Promise<void>,
  options: WebHandlerOptions = {},
): Promise<void> {
  const { dir, root } = await makeTree();
  const handler = createWebHandler({ root, fileOnly: false, auth: false, ...config }, options);
  const server = await startServer((request, response) => {
    void handler(request, response, requestInfo(request));
  });
  try {
    await run(server, root);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function get(
  server: TestServer,
  path: string,
  init: RequestInit = {},
): Promise<{ response: Response; body: string }> {
  const response = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    redirect: "manual",
    ...init,
  });
  return { response, body: await response.text() };
}

Deno.test("createWebHandler() serves a file with caching headers", async () => {
  await withWeb({}, async (server) => {
    const { response, body } = await get(server, "/hello.txt");
    assert.equal(response.status, 200);
    assert.equal(body, "hello\n");
    assert.equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(response.headers.get("content-length"), "6");
    assert.equal(response.headers.get("accept-ranges"), "bytes");
    assert.match(response.headers.get("last-modified") ?? "", /GMT$/);
    assert.match(response.headers.get("etag") ?? "", /^W\/"/);
  });
});

Deno.test("createWebHandler() sends the usual content types", async () => {
  const expected: Record<string, RegExp> = {
    "/app.js": /^(text|application)\/javascript/,
    "/style.css": /^text\/css/,
    "/data.json": /^application\/json/,
    "/pic.svg": /^image\/svg\+xml/,
    "/mod.wasm": /^application\/wasm$/,
    "/page.html": /^text\/html/,
  };
  await withWeb({}, async (server) => {
    for (const [path, type] of Object.entries(expected)) {
      const { response } = await get(server, path);
      assert.equal(response.status, 200, path);
      assert.match(response.headers.get("content-type") ?? "", type, path);
    }
  });
});

Deno.test("createWebHandler() answers HEAD with headers and no body", async () => {
  await withWeb({}, async (server) => {
    const response = await rawRequest(server.port, "HEAD", "/hello.txt");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-length"), "6");
    assert.equal(response.body, "");
    const listing = await rawRequest(server.port, "HEAD", "/list/");
    assert.equal(listing.status, 200);
    assert.ok(Number(listing.headers.get("content-length")) > 100);
    assert.equal(listing.body, "");
  });
});

Deno.test("createWebHandler() answers If-Modified-Since and If-None-Match with 304", async () => {
  await withWeb({}, async (server) => {
    const first = await get(server, "/hello.txt");
    const lastModified = first.response.headers.get("last-modified") ?? "";
    const etag = first.response.headers.get("etag") ?? "";
    const byDate = await get(server, "/hello.txt", {
      headers: { "If-Modified-Since": lastModified },
    });
    assert.equal(byDate.response.status, 304);
    assert.equal(byDate.body, "");
    const byTag = await get(server, "/hello.txt", { headers: { "If-None-Match": etag } });
    assert.equal(byTag.response.status, 304);
    const old = await get(server, "/hello.txt", {
      headers: { "If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT" },
    });
    assert.equal(old.response.status, 200);
  });
});

Deno.test("createWebHandler() serves ranges with 206 and refuses unsatisfiable ones with 416", async () => {
  await withWeb({}, async (server) => {
    const partial = await get(server, "/hello.txt", { headers: { Range: "bytes=1-3" } });
    assert.equal(partial.response.status, 206);
    assert.equal(partial.body, "ell");
    assert.equal(partial.response.headers.get("content-range"), "bytes 1-3/6");
    const beyond = await get(server, "/hello.txt", { headers: { Range: "bytes=100-200" } });
    assert.equal(beyond.response.status, 416);
    assert.equal(beyond.response.headers.get("content-range"), "bytes */6");
  });
});

Deno.test("createWebHandler() redirects a directory without its slash with 301", async () => {
  await withWeb({}, async (server) => {
    const plain = await get(server, "/sub");
    assert.equal(plain.response.status, 301);
    assert.equal(plain.response.headers.get("location"), "/sub/");
    const query = await get(server, "/sub?a=1&b=2");
    assert.equal(query.response.headers.get("location"), "/sub/?a=1&b=2");
    // Leading slashes collapse, so the Location is never protocol-relative.
    const doubled = await rawRequest(server.port, "GET", "//sub");
    assert.equal(doubled.status, 301);
    assert.equal(doubled.headers.get("location"), "/sub/");
  });
});

Deno.test("createWebHandler() serves index.html, then index.htm, for a directory", async () => {
  await withWeb({}, async (server) => {
    const html = await get(server, "/sub/");
    assert.equal(html.response.status, 200);
    assert.equal(html.body, "<p>sub index.html</p>\n");
    const htm = await get(server, "/sub2/");
    assert.equal(htm.response.status, 200);
    assert.equal(htm.body, "<p>sub2 index.htm</p>\n");
    assert.match(htm.response.headers.get("content-type") ?? "", /^text\/html/);
  });
});

Deno.test("createWebHandler() lists a directory as upstream, escaped and without dotfiles", async () => {
  await withWeb({}, async (server) => {
    const { response, body } = await get(server, "/list/");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    assert.ok(body.includes("<title>Directory listing for /list/</title>"), body);
    assert.ok(body.includes("<h1>Directory listing for /list/</h1>"), body);
    const items = body.split("\n").filter((line) => line.startsWith("<li>"));
    assert.deepEqual(items, [
      '<li><a href="%3Cscript%3Ealert%281%29%3C%E2%88%95script%3E.txt">' +
      "&lt;script&gt;alert(1)&lt;\u2215script&gt;.txt</a></li>",
      '<li><a href="a%26b%3Cc%3E.txt">a&amp;b&lt;c&gt;.txt</a></li>',
      '<li><a href="alpha.txt">alpha.txt</a></li>',
      '<li><a href="dir/">dir/</a></li>',
      '<li><a href="h%C3%A9.txt">h\u00e9.txt</a></li>',
      '<li><a href="link">link@</a></li>',
      '<li><a href="q%22uote%27s.txt">q&quot;uote&#x27;s.txt</a></li>',
      '<li><a href="space%20name.txt">space name.txt</a></li>',
      '<li><a href="Zeta.txt">Zeta.txt</a></li>',
    ]);
    assert.ok(!body.includes("hidden"));
    assert.ok(!body.includes("slash"));
    const empty = await get(server, "/empty/");
    assert.equal(empty.response.status, 200);
    assert.ok(!empty.body.includes("<li>"));
    // The title shows the decoded path, escaped.
    const root = await get(server, "/");
    assert.ok(root.body.includes("Directory listing for /</title>"));
  });
});

Deno.test("createWebHandler() follows its listing's links", async () => {
  await withWeb({}, async (server) => {
    const { body } = await get(server, "/list/");
    const hrefs = [...body.matchAll(/href="([^"]+)"/g)].map((match) => match[1] ?? "");
    assert.equal(hrefs.length, 9);
    assert.ok(hrefs.includes("dir/"));
    for (const href of hrefs) {
      const { response } = await get(server, `/list/${href}`);
      assert.equal(response.status, 200, href);
    }
  });
});

Deno.test("createWebHandler() with fileOnly answers 404 instead of a listing", async () => {
  await withWeb({ fileOnly: true }, async (server) => {
    const listing = await get(server, "/list/");
    assert.equal(listing.response.status, 404);
    assert.ok(!listing.body.includes("alpha.txt"));
    const index = await get(server, "/sub/");
    assert.equal(index.response.status, 200);
    const file = await get(server, "/hello.txt");
    assert.equal(file.response.status, 200);
  });
});

Deno.test("createWebHandler() answers a missing file with 404 File not found", async () => {
  await withWeb({}, async (server) => {
    const response = await rawRequest(server.port, "GET", "/nope.txt");
    assert.equal(response.status, 404);
    assert.equal(response.reason, "File not found");
    assert.match(response.headers.get("content-type") ?? "", /^text\/html/);
    assert.equal(
      Number(response.headers.get("content-length")),
      new TextEncoder().encode(response.body).length,
    );
    const trailing = await rawRequest(server.port, "GET", "/hello.txt/");
    assert.equal(trailing.status, 404);
  });
});

Deno.test("createWebHandler() never serves anything outside the root or a dotfile", async () => {
  const targets = [
    "/../outside.txt",
    "/../../outside.txt",
    "/%2e%2e/outside.txt",
    "/%2E%2E/outside.txt",
    "/..%2foutside.txt",
    "/..%2Foutside.txt",
    "/%2e%2e%2foutside.txt",
    "/..%5coutside.txt",
    "/..\\outside.txt",
    "/%2e%2e%5coutside.txt",
    "/sub/..%2f..%2foutside.txt",
    "/sub/%2e%2e/%2e%2e/outside.txt",
    "/list/..%2f..%2f..%2foutside.txt",
    "/hello.txt%00",
    "/hello.txt%00.html",
    "/%00",
    "/outside-link",
    "/outside-abs-link",
    "/outside-dir/",
    "/outside-dir/file.txt",
    "/outside-dir",
    "/idx-escape/index.html",
    "/.secret",
    "/%2esecret",
    "/.git/config",
    "/.git/",
    "/list/.hidden",
    "/dot-link",
    "/back%5cslash.txt",
    "/back\\slash.txt",
    "/./.secret",
    `/${"..%2f".repeat(20)}etc/passwd`,
    "http://127.0.0.1/../outside.txt",
    "http://127.0.0.1/%2e%2e/outside.txt",
    "../outside.txt",
    "*",
    "/%zz",
  ];
  await withWeb({}, async (server) => {
    for (const target of targets) {
      const response = await rawRequest(server.port, "GET", target);
      assert.ok([400, 403, 404].includes(response.status), `${target}: ${response.status}`);
      assert.ok(!response.body.includes(SECRET), target);
    }
    // Absolute file system paths are relative to the root.
    const absolute = await rawRequest(server.port, "GET", "/etc/passwd");
    assert.equal(absolute.status, 404);
    // An index.html pointing outside is skipped: the directory is listed, the secret is not shown.
    const escapedIndex = await rawRequest(server.port, "GET", "/idx-escape/");
    assert.ok(!escapedIndex.body.includes(SECRET));
  });
});

Deno.test("createWebHandler() follows symlinks that stay inside the root", async () => {
  await withWeb({}, async (server) => {
    const { response, body } = await get(server, "/inside-link");
    assert.equal(response.status, 200);
    assert.equal(body, "hello\n");
  });
});

Deno.test("createWebHandler() keeps the connection alive for pipelined requests", async () => {
  await withWeb({}, async (server) => {
    const request = "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
      "GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n" +
      "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" +
      "GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    const responses = parseResponses(await rawExchange(server.port, request, { mustClose: true }));
    assert.deepEqual(responses.map((response) => response.status), [200, 200, 404, 200]);
    assert.equal(responses[0]?.body, "hello\n");
    assert.equal(responses[3]?.body, "<p>page</p>\n");
  });
});

Deno.test("createWebHandler() answers other methods with 405", async () => {
  await withWeb({}, async (server) => {
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"]) {
      const response = await rawRequest(server.port, method, "/hello.txt", {
        "Content-Length": "0",
      });
      assert.equal(response.status, 405, method);
      assert.equal(response.headers.get("allow"), "GET, HEAD");
    }
  });
});

Deno.test("createWebHandler() without a root answers GET and HEAD with 405", async () => {
  const handler = createWebHandler({ root: undefined, fileOnly: false, auth: false });
  const server = await startServer((request, response) =>
    void handler(request, response, requestInfo(request))
  );
  try {
    const getResponse = await rawRequest(server.port, "GET", "/");
    assert.equal(getResponse.status, 405);
    assert.equal(getResponse.reason, "Method Not Allowed");
    assert.equal(getResponse.headers.get("connection"), "close");
    const head = await rawRequest(server.port, "HEAD", "/index.html");
    assert.equal(head.status, 405);
    assert.equal(head.body, "");
  } finally {
    await server.close();
  }
});

Deno.test("createWebHandler() runs authorize first and answers its AuthError", async () => {
  const seen: string[] = [];
  const authorize = (request: RequestInfo): Promise<void> => {
    seen.push(request.path);
    if (request.headers.get("x-key") === "yes") return Promise.resolve();
    if (request.headers.get("x-key") === "boom") return Promise.reject(new Error("plugin bug"));
    return Promise.reject(
      new AuthError("Unauthorized", {
        status: 401,
        headers: { "WWW-Authenticate": 'Basic realm="Websockify"' },
      }),
    );
  };
  await withWeb({ auth: true }, async (server) => {
    const denied = await rawRequest(server.port, "GET", "/hello.txt");
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("www-authenticate"), 'Basic realm="Websockify"');
    assert.ok(!denied.body.includes("hello"));
    const broken = await rawRequest(server.port, "GET", "/hello.txt", { "X-Key": "boom" });
    assert.equal(broken.status, 500);
    const allowed = await rawRequest(server.port, "GET", "/hello.txt", { "X-Key": "yes" });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.body, "hello\n");
    assert.deepEqual(seen, ["/hello.txt", "/hello.txt", "/hello.txt"]);
  }, { authorize });
});

Deno.test("quotePath() and escapeHtml() encode like Python's quote() and html.escape()", () => {
  assert.equal(quotePath("a b/c!'()*~_.-"), "a%20b/c%21%27%28%29%2A~_.-");
  assert.equal(quotePath("\u00e9"), "%C3%A9");
  assert.equal(escapeHtml(`<a href="x">&'`), "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;");
});
