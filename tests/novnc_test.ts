// Real-browser end-to-end tests: headless Debian Chromium (driven by playwright-core) loads
// noVNC from the proxy's --web root and shows a TigerVNC desktop, and a small page served by
// the proxy echoes through it to a TCP echo server with basic auth and an origin check.
//
// Needs the Debian packages in .ci/apt/novnc.txt. Run alone with
//   deno test --allow-all --unstable-net tests/novnc_test.ts
// and against the Python reference with NOVNC_TEST_PROXY=python. The noVNC test checks a
// screenshot of the page and removes it; NOVNC_SCREENSHOT=/path/to/file.png keeps it there.

import assert from "node:assert/strict";
import { join } from "node:path";
import type { Page } from "playwright-core";
import {
  DENO_WEBSOCKIFY,
  launchChromium,
  NOVNC_ROOT,
  type ProxySpec,
  PYTHON_WEBSOCKIFY,
  type RunningProxy,
  setRootColour,
  startEchoServer,
  startProxy,
  startXClient,
  startXvnc,
  type VncServer,
  withTimeout,
} from "./_novnc_helpers.ts";

/**
 * The proxy under test: ours (main.ts), or with `NOVNC_TEST_PROXY=python` Debian's Python
 * websockify 0.10, to check that the tests hold for the reference too.
 */
const PROXY = Deno.env.get("NOVNC_TEST_PROXY") === "python" ? PYTHON_WEBSOCKIFY : DENO_WEBSOCKIFY;

const ECHO_ROOT = new URL("./testdata/novnc/", import.meta.url).pathname;
const PAGE_TIMEOUT_MS = 15_000;
const TEST_TIMEOUT_MS = 60_000;

type Rgb = readonly [number, number, number];
const ORANGE: Rgb = [0xff, 0x80, 0x00];
const BLUE: Rgb = [0x00, 0x40, 0xc0];
const GREEN: Rgb = [0x00, 0xc0, 0x40];

function hex(rgb: readonly number[]): string {
  return "#" + rgb.map((value) => value.toString(16).padStart(2, "0")).join("");
}

/** The part of a DOM canvas the pixel read-back uses (the tests are checked without the DOM lib). */
interface CanvasLike {
  width: number;
  height: number;
  getContext(kind: "2d"): {
    getImageData(x: number, y: number, width: number, height: number): { data: Uint8ClampedArray };
  } | null;
}

/** Reads the RGB of the given points of the noVNC canvas. */
function readCanvas(page: Page, points: readonly (readonly [number, number])[]) {
  return page.locator("#noVNC_container canvas").evaluate((element, points) => {
    const canvas = element as unknown as CanvasLike;
    const context = canvas.getContext("2d");
    if (!context) return null;
    return {
      width: canvas.width,
      height: canvas.height,
      pixels: points.map(([x, y]) => Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3))),
    };
  }, points);
}

/** Points of the 800x600 desktop and the colour each must show. */
type Expected = readonly { point: readonly [number, number]; colour: Rgb }[];

/** Polls the canvas until every point shows its colour; throws with the last reading after 10 s. */
async function waitForCanvas(page: Page, expected: Expected) {
  const points = expected.map(({ point }) => point);
  const deadline = Date.now() + 10_000;
  let last: Awaited<ReturnType<typeof readCanvas>> = null;
  for (let attempt = 0; attempt < 200 && Date.now() < deadline; attempt++) {
    last = await readCanvas(page, points);
    const shown = last?.pixels;
    if (
      shown?.every((pixel, index) => hex(pixel) === hex(expected[index]!.colour))
    ) {
      return last!;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const wanted = expected.map(({ point, colour }) => `${point} ${hex(colour)}`).join(", ");
  throw new Error(`Canvas never showed ${wanted}: last reading ${JSON.stringify(last)}`);
}

/**
 * Fails the test when `body` takes longer than the bound. Every wait inside has its own shorter
 * timeout, so this is only a backstop against a hang nobody foresaw.
 */
function bounded(body: () => Promise<void>): () => Promise<void> {
  return () => withTimeout(body(), TEST_TIMEOUT_MS, "the test body");
}

/** Points outside and inside the xlogo window at 200x100+100+50 (interior 101..300, 51..150). */
const OUTSIDE = [[0, 0], [799, 0], [0, 599], [799, 599], [400, 300], [95, 100], [
  310,
  100,
]] as const;
const INSIDE = [[110, 60], [200, 100], [290, 140]] as const;

function expect(points: readonly (readonly [number, number])[], colour: Rgb): Expected {
  return points.map((point) => ({ point, colour }));
}

/** An 800x600 Xvnc with an orange root, the proxy serving noVNC, and Chromium connected to it. */
interface NoVncSession extends AsyncDisposable {
  readonly vnc: VncServer;
  readonly proxy: RunningProxy;
  readonly page: Page;
}

/** Starts Xvnc, the proxy (with `spec`'s options) and Chromium, and waits for "Connected". */
async function openNoVnc(spec: Partial<ProxySpec> = {}): Promise<NoVncSession> {
  await using stack = new AsyncDisposableStack();
  const vnc = stack.use(await startXvnc({ geometry: "800x600", depth: 24 }));
  await setRootColour(vnc.display, hex(ORANGE));
  const proxy = stack.use(
    await startProxy(PROXY, { target: `127.0.0.1:${vnc.port}`, web: NOVNC_ROOT, ...spec }),
  );
  const chromium = stack.use(await launchChromium());
  const page = await chromium.browser.newPage({ viewport: { width: 1024, height: 768 } });
  page.setDefaultTimeout(PAGE_TIMEOUT_MS);
  const url = `http://127.0.0.1:${proxy.port}/vnc.html?autoconnect=true&resize=off` +
    `&path=websockify&logging=warn`;
  const response = await page.goto(url);
  assert.equal(response?.status(), 200);
  await page.locator("#noVNC_status", { hasText: "Connected" }).waitFor().catch(async (error) => {
    const shown = await page.textContent("#noVNC_status", { timeout: 1_000 }).catch(() => null);
    throw new Error(
      `noVNC did not connect: its status says '${shown}'; proxy output:\n` + proxy.process.output,
      { cause: error },
    );
  });
  // Everything started: the session owns it now (disposed in reverse order of start).
  const owned = stack.move();
  return { vnc, proxy, page, [Symbol.asyncDispose]: () => owned.disposeAsync() };
}

Deno.test(
  "noVNC served by the proxy connects to Xvnc and shows the remote desktop",
  bounded(async () => {
    await using session = await openNoVnc();
    const { vnc, page } = session;
    const status = await page.textContent("#noVNC_status");
    assert.equal(status, "Connected (unencrypted) to websockify-e2e");

    // The root window first: the whole 800x600 desktop is orange.
    const first = await waitForCanvas(page, expect([...OUTSIDE, ...INSIDE], ORANGE));
    assert.deepEqual([first.width, first.height], [800, 600]);

    // Then a window drawn by an X client, and a new root colour: the session is live and the
    // pixels land where the server put them.
    await using _window = startXClient(vnc.display, "xlogo", [
      "-geometry",
      "200x100+100+50",
      "-bg",
      hex(GREEN),
      "-fg",
      hex(GREEN),
    ]);
    await waitForCanvas(page, [...expect(OUTSIDE, ORANGE), ...expect(INSIDE, GREEN)]);
    await setRootColour(vnc.display, hex(BLUE));
    await waitForCanvas(page, [...expect(OUTSIDE, BLUE), ...expect(INSIDE, GREEN)]);

    // Removed afterwards (each run used to leave one in /tmp); NOVNC_SCREENSHOT=path keeps it.
    const kept = Deno.env.get("NOVNC_SCREENSHOT");
    const directory = kept ? undefined : await Deno.makeTempDir({ prefix: "novnc_test_" });
    const screenshot = kept ?? join(directory!, "novnc.png");
    try {
      await page.screenshot({ path: screenshot });
      const png = await Deno.readFile(screenshot);
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
      if (kept) console.log(`noVNC screenshot: ${screenshot}`);
    } finally {
      if (directory) await Deno.remove(directory, { recursive: true });
    }
  }),
);

Deno.test(
  "noVNC through --permessage-deflate: Chromium negotiates compression and the desktop is live",
  bounded(async () => {
    await using session = await openNoVnc({ permessageDeflate: true });
    const { vnc, proxy, page } = session;
    await waitForCanvas(page, expect([...OUTSIDE, ...INSIDE], ORANGE));
    await setRootColour(vnc.display, hex(BLUE));
    await waitForCanvas(page, expect([...OUTSIDE, ...INSIDE], BLUE));
    assert.match(proxy.process.output, /Compression: permessage-deflate/);
  }),
);

/** The result of the page's `echo()` (tests/testdata/novnc/echo.html). */
interface EchoResult {
  opened: boolean;
  echoed: number[] | null;
  closeCode: number | null;
  error: string | null;
}

/** Calls the page's `echo(url, bytes, timeoutMs)` and returns what happened. */
function echoFromPage(page: Page, url: string, bytes: number[]): Promise<EchoResult> {
  return page.evaluate(
    ([url, bytes]) =>
      (globalThis as unknown as {
        echo(url: string, bytes: number[], timeoutMs: number): Promise<EchoResult>;
      }).echo(url, bytes, 5_000),
    [url, bytes] as const,
  );
}

const PAYLOAD = Array.from({ length: 256 }, (_, index) => index);
const ECHOED: EchoResult = { opened: true, echoed: PAYLOAD, closeCode: null, error: null };

/** Collects Chromium's reasons for failed WebSocket connections of `page`. */
function socketErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("websocket", (socket) => socket.on("socketerror", (error) => errors.push(error)));
  return errors;
}

/** Asserts that the page's WebSocket failed before opening, for the reason `reason`. */
function assertRefused(result: EchoResult, errors: string[], reason: RegExp): void {
  assert.equal(result.opened, false, `the WebSocket opened: ${JSON.stringify(result)}`);
  assert.equal(result.echoed, null);
  assert.equal(result.closeCode, 1006);
  assert.equal(errors.length, 1, `expected one socket error, got ${JSON.stringify(errors)}`);
  assert.match(errors[0] ?? "", reason);
}

Deno.test(
  "browser WebSocket through the proxy to a TCP echo server needs the basic auth credentials",
  bounded(async () => {
    await using echoServer = startEchoServer();
    await using proxy = await startProxy(PROXY, {
      target: `127.0.0.1:${echoServer.port}`,
      web: ECHO_ROOT,
      basicAuth: "user:pass",
    });
    await using chromium = await launchChromium();
    const page = await chromium.browser.newPage();
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);
    const errors = socketErrors(page);
    // Without --web-auth the page itself is served to anyone.
    assert.equal((await page.goto(`http://127.0.0.1:${proxy.port}/echo.html`))?.status(), 200);

    const host = `127.0.0.1:${proxy.port}`;
    const anonymous = await echoFromPage(page, `ws://${host}/websockify`, PAYLOAD);
    assertRefused(anonymous, errors, /HTTP Authentication failed/);
    errors.length = 0;
    const wrong = await echoFromPage(page, `ws://user:wrong@${host}/websockify`, PAYLOAD);
    assertRefused(wrong, errors, /HTTP Authentication failed/);
    errors.length = 0;

    // Chromium sends the userinfo of a ws:// URL as basic credentials (and caches them for the
    // origin afterwards, which is why the refused attempts come first).
    assert.deepEqual(
      await echoFromPage(page, `ws://user:pass@${host}/websockify`, PAYLOAD),
      ECHOED,
    );
    assert.deepEqual(errors, []);
  }),
);

Deno.test(
  "browser WebSocket reuses the basic auth credentials of a page behind --web-auth",
  bounded(async () => {
    await using echoServer = startEchoServer();
    await using proxy = await startProxy(PROXY, {
      target: `127.0.0.1:${echoServer.port}`,
      web: ECHO_ROOT,
      basicAuth: "user:pass",
      webAuth: true,
    });
    await using chromium = await launchChromium();
    const pageUrl = `http://127.0.0.1:${proxy.port}/echo.html`;

    const anonymous = await chromium.browser.newPage();
    anonymous.setDefaultTimeout(PAGE_TIMEOUT_MS);
    // Playwright cancels a challenge it has no credentials for.
    await assert.rejects(anonymous.goto(pageUrl), /net::ERR_INVALID_AUTH_CREDENTIALS/);

    // Playwright answers the page's 401 challenge; Chromium caches the credentials and sends
    // them with the WebSocket handshake to the same origin (Playwright itself does not answer
    // WebSocket challenges).
    const context = await chromium.browser.newContext({
      httpCredentials: { username: "user", password: "pass" },
    });
    const page = await context.newPage();
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);
    const errors = socketErrors(page);
    assert.equal((await page.goto(pageUrl))?.status(), 200);
    assert.deepEqual(
      await echoFromPage(page, `ws://127.0.0.1:${proxy.port}/websockify`, PAYLOAD),
      ECHOED,
    );
    assert.deepEqual(errors, []);
  }),
);

Deno.test(
  "browser WebSocket through a proxy with an origin list opens only from an allowed origin",
  bounded(async () => {
    await using echoServer = startEchoServer();
    const target = `127.0.0.1:${echoServer.port}`;
    // The page server: the browser's Origin is http://127.0.0.1:PORT or http://localhost:PORT
    // depending on how the page was addressed. The checked proxy is started once PORT is known.
    await using pages = await startProxy(PROXY, { target, web: ECHO_ROOT });
    const allowed = `http://127.0.0.1:${pages.port}`;
    await using checked = await startProxy(PROXY, { target, origins: [allowed] });
    const socketUrl = `ws://127.0.0.1:${checked.port}/websockify`;
    await using chromium = await launchChromium();

    const page = await chromium.browser.newPage();
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);
    const errors = socketErrors(page);
    assert.equal((await page.goto(`${allowed}/echo.html`))?.status(), 200);
    assert.deepEqual(await echoFromPage(page, socketUrl, PAYLOAD), ECHOED);
    assert.deepEqual(errors, []);

    const foreign = await chromium.browser.newPage();
    foreign.setDefaultTimeout(PAGE_TIMEOUT_MS);
    const foreignErrors = socketErrors(foreign);
    assert.equal((await foreign.goto(`http://localhost:${pages.port}/echo.html`))?.status(), 200);
    const refused = await echoFromPage(foreign, socketUrl, PAYLOAD);
    assertRefused(refused, foreignErrors, /Unexpected response code: 403/);
  }),
);
