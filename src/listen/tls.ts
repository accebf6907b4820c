/**
 * TLS towards clients: loads and checks the certificate, key and client CA at start-up (so a bad
 * file is a clear error, not a `[SSL] PEM lib` at the first client as upstream), hands the
 * listener the current secure context, verifies client certificates, and reloads renewed files
 * without a restart.
 *
 * Measured facts about `node:tls` in Deno 2.9.6 that shape this module:
 * - `tls.createSecureContext()` checks nothing: garbage PEM, a key that does not match the
 *   certificate and a wrong passphrase all "succeed" and only fail at handshakes. Hence the
 *   explicit checks with `node:crypto` in {@link ServerTls.load}.
 * - With `requestCert` and `rejectUnauthorized` a client certificate is required and its
 *   handshake signature is checked (proof of key possession), but the chain is NOT checked
 *   against `ca`: a self-signed certificate with any CN is accepted and `socket.authorized` is
 *   always `false`. Hence {@link ServerTls.authorize}, which checks the chain itself.
 * - `minVersion` is honoured; TLS 1.0 and 1.1 are never offered (rustls). `ciphers` is only
 *   syntax-checked and then ignored, so `--ssl-ciphers` cannot be honoured and is refused.
 *
 * @module
 */

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { basename, dirname } from "node:path";
import type net from "node:net";
import tls from "node:tls";
import type { TlsConfig } from "../config.ts";
import { ConfigError, errorMessage } from "../errors.ts";
import { getLog } from "../ops/log.ts";
import type { ClientIdentity } from "../types.ts";

const log = getLog("tls");

/** `--ssl-version` → `minVersion` of the secure context; `undefined` keeps the runtime's. */
const MIN_VERSIONS: Readonly<Record<TlsConfig["minVersion"], tls.SecureVersion | undefined>> = {
  default: undefined,
  // rustls never speaks TLS 1.0/1.1, so "at least 1.1" is honoured by "at least 1.2".
  tlsv1_1: "TLSv1.2",
  tlsv1_2: "TLSv1.2",
  tlsv1_3: "TLSv1.3",
};

/** How long file-change events are collected before one reload. */
const WATCH_DEBOUNCE_MS = 250;

/** A TLS client that failed its handshake or whose certificate was refused. */
export class TlsHandshakeError extends Error {
  override name = "TlsHandshakeError";
  /** The client just went away (EOF, reset) before finishing: log at debug level only. */
  readonly quiet: boolean;

  /** Creates a handshake failure; `quiet` marks an uninteresting disconnect. */
  constructor(message: string, options: { quiet?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.quiet = options.quiet ?? false;
  }
}

/** Options of {@link ServerTls.accept}. */
export interface AcceptOptions {
  /** Milliseconds the client may take to finish the handshake; 0 waits forever. @default 10000 */
  readonly timeoutMs?: number;
}

/** Outcome of {@link ServerTls.reload}. */
export type ReloadResult = "reloaded" | "unchanged" | "failed";

/** Everything loaded from the files, swapped as a whole on reload. */
interface Material {
  readonly context: tls.SecureContext;
  /** Certificates of `--cafile`, each trusted as an anchor for client certificates. */
  readonly anchors: readonly X509Certificate[];
  /** The server's leaf certificate. */
  readonly leaf: X509Certificate;
  /** The files' contents, to skip rebuilding when nothing changed. */
  readonly fingerprint: string;
}

const identities = new WeakMap<tls.TLSSocket, ClientIdentity>();

/**
 * The server side of TLS for one listener. Build it with {@link ServerTls.load}; each new
 * connection uses the secure context current at that moment, so {@link ServerTls.reload} takes
 * effect for new connections while existing ones continue.
 */
export class ServerTls {
  readonly #config: TlsConfig;
  #material: Material;
  #queue: Promise<unknown> = Promise.resolve();
  #watcher: Deno.FsWatcher | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  private constructor(config: TlsConfig, material: Material) {
    this.#config = config;
    this.#material = material;
  }

  /**
   * Loads and checks the certificate, key and client CA. Resolves to `undefined` when the
   * certificate file does not exist and nothing requires it (the banner then says "No SSL/TLS
   * support (no cert file)"). Throws {@link ConfigError} with a message saying what to fix for
   * every other problem: `--ssl-only`, `--verify-client` or `--key` without the certificate,
   * unreadable files, bad PEM, a key that does not match, an encrypted key without or with a
   * wrong `--key-password`, `--ssl-ciphers`, and `--verify-client` without a usable `--cafile`.
   */
  static async load(config: TlsConfig): Promise<ServerTls | undefined> {
    checkOptions(config);
    if (!(await exists(config.cert))) {
      if (config.sslOnly) {
        throw new ConfigError(
          `SSL only and '${config.cert}' not found: create the certificate or pass --cert CERT`,
        );
      }
      if (config.verifyClient || config.key !== undefined) {
        const flag = config.verifyClient ? "--verify-client" : "--key";
        throw new ConfigError(
          `${flag} needs a server certificate but '${config.cert}' was not found: ` +
            "pass --cert CERT",
        );
      }
      return undefined;
    }
    const material = await loadMaterial(config);
    describe(material, config);
    return new ServerTls(config, material);
  }

  /** Whether plain (non-TLS) clients are refused (`--ssl-only`). */
  get sslOnly(): boolean {
    return this.#config.sslOnly;
  }

  /** Whether clients must present a certificate signed by `--cafile` (`--verify-client`). */
  get verifyClient(): boolean {
    return this.#config.verifyClient;
  }

  /**
   * Options for `new tls.TLSSocket(socket, options)` with the current certificate. With
   * `--verify-client` the caller MUST call {@link ServerTls.authorize} on `"secure"`, because
   * Deno does not check the client's chain; {@link ServerTls.accept} does both.
   */
  socketOptions(): tls.TLSSocketOptions {
    const verify = this.#config.verifyClient;
    return {
      isServer: true,
      secureContext: this.#material.context,
      requestCert: verify,
      rejectUnauthorized: verify,
    };
  }

  /**
   * Checks the client certificate of a socket that finished its handshake. Without
   * `--verify-client` it returns `undefined`. With it, it returns the verified identity (also
   * available later through {@link clientIdentityOf}) or throws {@link TlsHandshakeError} when
   * the client sent no certificate, or one that is expired or not issued by a `--cafile` CA.
   */
  authorize(socket: tls.TLSSocket): ClientIdentity | undefined {
    if (!this.#config.verifyClient) return undefined;
    const peer = socket.getPeerCertificate();
    const raw = (peer as { raw?: Uint8Array } | null)?.raw;
    if (raw === undefined || raw.length === 0) {
      throw new TlsHandshakeError("Client certificate required: the client sent none");
    }
    const leaf = verifyClientCertificate(raw, this.#material.anchors, new Date(), this.#config);
    const identity = identityOf(leaf);
    identities.set(socket, identity);
    return identity;
  }

  /**
   * Wraps a freshly accepted socket (whose first byte was 0x16 or 0x80) in TLS, waits for the
   * handshake and checks the client certificate. Resolves with the TLS socket, ready to be
   * emitted to `node:http` as a "connection". Rejects with {@link TlsHandshakeError} (after
   * destroying the socket) on handshake failure, refused certificate, or timeout, so a client
   * that stalls mid-handshake costs one socket and one timer, never the accept loop.
   */
  accept(socket: net.Socket, options: AcceptOptions = {}): Promise<tls.TLSSocket> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const secure = new tls.TLSSocket(socket, this.socketOptions());
      // Stays attached: an error after the handshake must never be an uncaught exception.
      secure.on("error", (error) => log.debug(`TLS socket error: ${error.message}`));
      const finish = (error: TlsHandshakeError | undefined) => {
        clearTimeout(timer);
        secure.off("secure", onSecure).off("error", onError).off("close", onClose);
        if (error === undefined) return resolve(secure);
        secure.destroy();
        socket.destroy();
        reject(error);
      };
      const onSecure = () => {
        try {
          this.authorize(secure);
          finish(undefined);
        } catch (error) {
          finish(
            error instanceof TlsHandshakeError ? error : new TlsHandshakeError(
              `Client certificate check failed: ${errorMessage(error)}`,
              { cause: error },
            ),
          );
        }
      };
      const onError = (error: Error) =>
        finish(new TlsHandshakeError(`TLS handshake failed: ${error.message}`, { cause: error }));
      const onClose = () =>
        finish(new TlsHandshakeError("Client closed during the TLS handshake", { quiet: true }));
      const timer = timeoutMs > 0
        ? setTimeout(
          () =>
            finish(new TlsHandshakeError(`TLS handshake timed out after ${timeoutMs / 1000} s`)),
          timeoutMs,
        )
        : undefined;
      secure.once("secure", onSecure).once("error", onError).once("close", onClose);
    });
  }

  /**
   * Re-reads the certificate, key and CA files. New material is used for new connections; a bad
   * renewal is logged as an error and the previous certificate keeps serving. Calls are
   * serialised and never reject. Wire SIGHUP to this.
   */
  reload(): Promise<ReloadResult> {
    const run = this.#queue.then(() => this.#reloadNow());
    this.#queue = run;
    return run;
  }

  async #reloadNow(): Promise<ReloadResult> {
    try {
      const material = await loadMaterial(this.#config, this.#material.fingerprint);
      if (material === undefined) {
        log.debug(`TLS files unchanged, nothing to reload`);
        return "unchanged";
      }
      this.#material = material;
      log.info(`Reloaded TLS certificate '${this.#config.cert}' (${
        material.leaf.subject
          .replaceAll("\n", ", ")
      }, valid until ${material.leaf.validTo})`);
      return "reloaded";
    } catch (error) {
      log.error(
        `TLS certificate reload failed, still serving the previous certificate: ${
          errorMessage(error)
        }`,
      );
      return "failed";
    }
  }

  /**
   * Watches the certificate, key and CA files (their directories, so replaced files and
   * symlink swaps as done by certbot or Kubernetes are seen) and reloads after changes settle.
   * Reading three small files per change is the whole cost; unchanged contents are not rebuilt.
   */
  watch(): void {
    if (this.#watcher !== undefined) return;
    const files = [this.#config.cert, this.#config.key, this.#config.cafile]
      .filter((file): file is string => file !== undefined);
    const names = new Set(files);
    const directories = [...new Set(files.map((file) => dirname(file)))];
    try {
      this.#watcher = Deno.watchFs(directories, { recursive: false });
    } catch (error) {
      log.warn(`Cannot watch TLS files for renewal (${errorMessage(error)}): use SIGHUP to reload`);
      return;
    }
    const watcher = this.#watcher;
    (async () => {
      for await (const event of watcher) {
        // Kubernetes secret volumes swap a "..data" symlink instead of touching the files.
        if (event.paths.some((path) => names.has(path) || basename(path).startsWith(".."))) {
          this.#schedule();
        }
      }
    })().catch((error) => log.warn(`TLS file watcher stopped: ${errorMessage(error)}`));
  }

  #schedule(): void {
    clearTimeout(this.#timer);
    const timer = setTimeout(() => {
      this.#timer = undefined;
      void this.reload();
    }, WATCH_DEBOUNCE_MS);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Stops watching. Connections already made are not affected. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#watcher?.close();
    this.#watcher = undefined;
  }
}

/**
 * The verified client certificate of a TLS socket, as checked by {@link ServerTls.authorize};
 * `undefined` for plain sockets, without `--verify-client`, or before authorisation. Never read
 * from headers: this is the out-of-band channel for `RequestInfo.clientIdentity`.
 */
export function clientIdentityOf(socket: tls.TLSSocket): ClientIdentity | undefined {
  return identities.get(socket);
}

function checkOptions(config: TlsConfig): void {
  if (config.ciphers !== undefined) {
    throw new ConfigError(
      `--ssl-ciphers '${config.ciphers}' cannot be honoured: Deno's TLS (rustls) always uses ` +
        "its fixed modern suites (TLS 1.3 AES-GCM/ChaCha20, TLS 1.2 ECDHE with AES-GCM/" +
        "ChaCha20) and ignores cipher lists; remove the option, or use --ssl-version tlsv1_3",
    );
  }
  if (config.verifyClient && config.cafile === undefined) {
    throw new ConfigError(
      "--verify-client needs --cafile FILE: the CA certificate(s) that sign client certificates",
    );
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    // Any other failure (permissions) is reported by the read that follows.
    return !(error instanceof Deno.errors.NotFound);
  }
}

async function readFile(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ConfigError(`${what} '${path}' not found: check the path`);
    }
    throw new ConfigError(
      `Cannot read ${what} '${path}': ${errorMessage(error)}: check the path and its permissions`,
    );
  }
}

/** Loads everything; resolves to `undefined` when the contents equal `previous`. */
async function loadMaterial(config: TlsConfig): Promise<Material>;
async function loadMaterial(config: TlsConfig, previous: string): Promise<Material | undefined>;
async function loadMaterial(config: TlsConfig, previous?: string): Promise<Material | undefined> {
  const certText = await readFile(config.cert, "Certificate file");
  const keyText = config.key === undefined ? certText : await readFile(config.key, "Key file");
  const caText = config.verifyClient && config.cafile !== undefined
    ? await readFile(config.cafile, "CA file")
    : "";
  const fingerprint = `${certText}\0${keyText}\0${caText}\0${config.keyPassword ?? ""}`;
  if (fingerprint === previous) return undefined;

  const chain = parseCertificates(certText, config.cert, "certificate");
  const leaf = chain[0]!;
  const keyFile = config.key ?? config.cert;
  const key = parseKey(keyText, keyFile, config.keyPassword);
  if (!leaf.checkPrivateKey(key)) {
    throw new ConfigError(
      `Certificate '${config.cert}' does not match key '${keyFile}': ` +
        "pass the key that belongs to the certificate with --key KEY",
    );
  }
  const anchors = caText === "" ? [] : parseCertificates(caText, config.cafile!, "CA file");
  const keyPem = key.export({ type: "pkcs8", format: "pem" }).toString();
  const minVersion = MIN_VERSIONS[config.minVersion];
  const context = tls.createSecureContext({
    cert: chain.map((certificate) => certificate.toString()).join(""),
    key: keyPem,
    ...(minVersion === undefined ? {} : { minVersion }),
    ...(caText === "" ? {} : { ca: caText }),
  });
  return { context, anchors, leaf, fingerprint };
}

interface PemBlock {
  readonly label: string;
  readonly text: string;
}

function pemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const match of text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g)) {
    blocks.push({ label: match[1]!, text: match[0] + "\n" });
  }
  return blocks;
}

function parseCertificates(text: string, path: string, what: string): X509Certificate[] {
  const blocks = pemBlocks(text).filter((block) => block.label === "CERTIFICATE");
  if (blocks.length === 0) {
    throw new ConfigError(
      `No PEM certificate in ${what} '${path}': expected a '-----BEGIN CERTIFICATE-----' block`,
    );
  }
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block.text);
    } catch (error) {
      throw new ConfigError(
        `Certificate ${index + 1} in ${what} '${path}' is not valid: ${errorMessage(error)}: ` +
          "replace it with a PEM X.509 certificate",
      );
    }
  });
}

function parseKey(text: string, path: string, password: string | undefined): KeyObject {
  const block = pemBlocks(text).find((candidate) => candidate.label.endsWith("PRIVATE KEY"));
  if (block === undefined) {
    throw new ConfigError(
      `No private key in '${path}': pass --key KEY, or append the PEM key to the certificate file`,
    );
  }
  const encrypted = block.label === "ENCRYPTED PRIVATE KEY" ||
    /Proc-Type:\s*4,ENCRYPTED/.test(block.text);
  if (encrypted && password === undefined) {
    throw new ConfigError(`Key '${path}' is encrypted: pass its password with --key-password`);
  }
  try {
    return encrypted
      ? createPrivateKey({ key: block.text, passphrase: password! })
      : createPrivateKey(block.text);
  } catch (error) {
    throw new ConfigError(
      encrypted
        ? `Cannot decrypt key '${path}': check --key-password`
        : `Key '${path}' is not a valid PEM private key: ${errorMessage(error)}`,
    );
  }
}

function describe(material: Material, config: TlsConfig): void {
  const { leaf } = material;
  const subject = leaf.subject.replaceAll("\n", ", ");
  log.debug(`TLS certificate '${config.cert}': ${subject}, valid until ${leaf.validTo}`);
  if (leaf.validToDate.getTime() < Date.now()) {
    log.warn(`TLS certificate '${config.cert}' expired on ${leaf.validTo}: clients will refuse it`);
  }
}

/**
 * Checks a client certificate against the `--cafile` anchors: within its validity period, and
 * either one of the anchors itself or issued and signed by an anchor that is a CA and valid now.
 * Chains through intermediates work when the intermediates are in `--cafile`.
 */
function verifyClientCertificate(
  raw: Uint8Array,
  anchors: readonly X509Certificate[],
  now: Date,
  config: TlsConfig,
): X509Certificate {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(raw);
  } catch (error) {
    throw new TlsHandshakeError(`Client certificate unreadable: ${errorMessage(error)}`);
  }
  const subject = leaf.subject.replaceAll("\n", ", ");
  if (now < leaf.validFromDate || now > leaf.validToDate) {
    throw new TlsHandshakeError(
      `Client certificate '${subject}' is not valid now (${leaf.validFrom} to ${leaf.validTo})`,
    );
  }
  const valid = (anchor: X509Certificate) =>
    now >= anchor.validFromDate && now <= anchor.validToDate;
  const trusted = anchors.some((anchor) =>
    valid(anchor) && (
      anchor.fingerprint256 === leaf.fingerprint256 ||
      (anchor.ca && leaf.checkIssued(anchor) && leaf.verify(anchor.publicKey))
    )
  );
  if (!trusted) {
    throw new TlsHandshakeError(
      `Client certificate '${subject}' is not issued by a CA in '${config.cafile}'`,
    );
  }
  return leaf;
}

function identityOf(certificate: X509Certificate): ClientIdentity {
  const subject: Record<string, string> = Object.create(null);
  for (const line of certificate.subject.split("\n")) {
    const equals = line.indexOf("=");
    const key = line.slice(0, equals);
    if (equals > 0 && !(key in subject)) subject[key] = line.slice(equals + 1);
  }
  return Object.freeze({
    commonName: subject["CN"] ?? "",
    subject: Object.freeze(subject),
    fingerprint256: certificate.fingerprint256,
  });
}
