/**
 * `JWTTokenApi`: the token is a signed JWT (JWS) whose `host` and `port` claims name the
 * target, optionally wrapped in an encrypted JWT (JWE) whose payload is that signed JWT.
 *
 * The source is a key file, re-read when it changes:
 * - a PEM public key (`PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`) verifies RS/PS/ES/EdDSA
 *   signatures;
 * - a PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`) also decrypts JWE
 *   (RSA-OAEP*, ECDH-ES*), and its public half verifies the inner JWS, as upstream;
 * - a JSON JWK works the same way;
 * - anything else is an HMAC secret (HS256/384/512, and `dir`/`A*KW` JWE). For compatibility
 *   with upstream (jwcrypto's `oct` key with the file text as `k`) the base64url-decoding of the
 *   text is tried first, then the raw text; a trailing newline is ignored. Short secrets are
 *   accepted (jwcrypto >= 1.5.7 rejects them, upstream #637).
 *
 * `nbf` and `exp` are enforced with no leeway, `alg: none` never verifies, and the algorithm
 * must fit the key type. RSA1_5 key wrapping is not supported (jose dropped it as insecure). An
 * invalid, expired or wrongly signed token is "not found" with a log line saying why, as
 * upstream; an unreadable or unusable key file is a lookup failure (503).
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import * as jose from "jose";
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { Target, TokenPlugin } from "../types.ts";
import { FileCache } from "./file_cache.ts";
import { targetFromHostPort } from "./target_value.ts";

const logger = getLogger(["websockify", "tokens"]);

const SIGNING_ALGORITHMS: Readonly<Record<string, readonly string[]>> = {
  secret: ["HS256", "HS384", "HS512"],
  rsa: ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
  "rsa-pss": ["PS256", "PS384", "PS512"],
  ec: ["ES256", "ES384", "ES512"],
  ed25519: ["EdDSA", "Ed25519"],
};

/** The key material of a key file. */
export type JwtKey =
  | { readonly kind: "secret"; readonly candidates: readonly Uint8Array[] }
  | {
    readonly kind: "asymmetric";
    /** node's `asymmetricKeyType`: `rsa`, `rsa-pss`, `ec`, `ed25519`, … */
    readonly keyType: string;
    readonly publicJwk: jose.JWK;
    readonly privateJwk: jose.JWK | undefined;
  };

/**
 * Reads the text of a key file.
 *
 * @throws {Error} when the text looks like PEM or JSON but cannot be read as a key
 */
export function parseJwtKey(text: string): JwtKey {
  const trimmed = text.trim();
  if (trimmed.includes("-----BEGIN")) return asymmetric(trimmed, "pem");
  if (trimmed.startsWith("{")) {
    const jwk = JSON.parse(trimmed) as jose.JWK;
    if (jwk.kty === "oct") {
      if (typeof jwk.k !== "string" || jwk.k === "") throw new Error("The 'oct' JWK has no 'k'");
      return { kind: "secret", candidates: [jose.base64url.decode(jwk.k)] };
    }
    return asymmetric(jwk, "jwk");
  }
  const secret = text.replace(/[\r\n]+$/, "");
  if (secret === "") throw new Error("The key file is empty");
  const candidates: Uint8Array[] = [];
  if (/^[A-Za-z0-9_-]+={0,2}$/.test(secret)) {
    try {
      candidates.push(jose.base64url.decode(secret.replace(/=+$/, "")));
    } catch {
      // not base64url after all: only the raw text is a candidate
    }
  }
  candidates.push(new TextEncoder().encode(secret));
  return { kind: "secret", candidates };
}

function asymmetric(key: string | jose.JWK, format: "pem" | "jwk"): JwtKey {
  let privateKey: KeyObject | undefined;
  let publicKey: KeyObject;
  const input = format === "pem"
    ? { key: key as string, format: "pem" as const }
    : { key: key as JsonWebKey, format: "jwk" as const };
  try {
    privateKey = createPrivateKey(input);
    publicKey = createPublicKey(privateKey);
  } catch {
    try {
      publicKey = createPublicKey(input);
    } catch (error) {
      throw new Error(`Not a usable public or private key: ${errorMessage(error)}`);
    }
  }
  return {
    kind: "asymmetric",
    keyType: publicKey.asymmetricKeyType ?? "unknown",
    publicJwk: publicKey.export({ format: "jwk" }) as jose.JWK,
    privateJwk: privateKey?.export({ format: "jwk" }) as jose.JWK | undefined,
  };
}

/** Why a token was refused, for the log line; the lookup then answers "not found". */
class InvalidTokenError extends Error {
  override name = "InvalidTokenError";
}

/**
 * Verifies a JWS or a JWE-wrapped JWS with `key` and returns its target.
 *
 * @throws {InvalidTokenError} when the token is malformed, wrongly signed, expired, not yet
 * valid, or lacks usable `host`/`port` claims
 */
export async function verifyJwtToken(token: string, key: JwtKey): Promise<Target> {
  try {
    const jws = token.split(".").length === 5 ? await decrypt(token, key) : token;
    const claims = await verify(jws, key);
    return targetFromHostPort(claims["host"], claims["port"]);
  } catch (error) {
    throw new InvalidTokenError(describeJoseError(error), { cause: error });
  }
}

async function verify(jws: string, key: JwtKey): Promise<jose.JWTPayload> {
  if (key.kind === "secret") {
    return (await withEachSecret(
      key.candidates,
      async (secret) =>
        (await jose.jwtVerify(jws, secret, { algorithms: [...SIGNING_ALGORITHMS["secret"]!] }))
          .payload,
    ));
  }
  const algorithms = SIGNING_ALGORITHMS[key.keyType];
  if (algorithms === undefined) throw new Error(`A '${key.keyType}' key cannot verify a JWT`);
  const { payload } = await jose.jwtVerify(
    jws,
    (header) => jose.importJWK(key.publicJwk, header.alg),
    { algorithms: [...algorithms] },
  );
  return payload;
}

async function decrypt(jwe: string, key: JwtKey): Promise<string> {
  const decode = (result: jose.CompactDecryptResult) => new TextDecoder().decode(result.plaintext);
  if (key.kind === "secret") {
    return await withEachSecret(
      key.candidates,
      async (secret) => decode(await jose.compactDecrypt(jwe, secret)),
    );
  }
  const privateJwk = key.privateJwk;
  if (privateJwk === undefined) {
    throw new Error("An encrypted token needs a private key in the key file, not a public one");
  }
  return decode(await jose.compactDecrypt(jwe, (header) => jose.importJWK(privateJwk, header.alg)));
}

/** Tries each secret candidate until one passes the signature or decryption check. */
async function withEachSecret<T>(
  candidates: readonly Uint8Array[],
  attempt: (secret: Uint8Array) => Promise<T>,
): Promise<T> {
  let last: unknown = new Error("No secret to try");
  for (const secret of candidates) {
    try {
      return await attempt(secret);
    } catch (error) {
      const wrongKey = error instanceof jose.errors.JWSSignatureVerificationFailed ||
        error instanceof jose.errors.JWEDecryptionFailed ||
        (error instanceof TypeError && /key|length/i.test(error.message));
      if (!wrongKey) throw error;
      last = error;
    }
  }
  throw last;
}

function describeJoseError(error: unknown): string {
  if (error instanceof jose.errors.JWTExpired) return "Token has expired";
  if (error instanceof jose.errors.JWTClaimValidationFailed && error.claim === "nbf") {
    return "Token can not be used yet";
  }
  if (error instanceof jose.errors.JWSSignatureVerificationFailed) {
    return "The signature does not match the key file";
  }
  return errorMessage(error);
}

class JwtPlugin implements TokenPlugin {
  readonly #key: FileCache<JwtKey>;

  constructor(path: string) {
    this.#key = new FileCache(path, parseJwtKey);
  }

  async lookup(token: string): Promise<Target | null> {
    let key: JwtKey;
    try {
      key = await this.#key.get();
    } catch (error) {
      throw new TokenLookupError(
        `Key file '${this.#key.path}' cannot be used: ${errorMessage(error)}`,
        { status: 503, cause: error },
      );
    }
    try {
      return await verifyJwtToken(token, key);
    } catch (error) {
      logger.warn("Failed to parse token: {reason}", { reason: errorMessage(error) });
      return null;
    }
  }
}

/** `JWTTokenApi`: `source` is the key file, checked now. */
export async function jwtTokenApi(source: string | undefined): Promise<TokenPlugin> {
  if (source === undefined || source === "") {
    throw new ConfigError(
      "JWTTokenApi needs --token-source: give a key file (PEM key or HMAC secret)",
    );
  }
  try {
    parseJwtKey(await Deno.readTextFile(source));
  } catch (error) {
    throw new ConfigError(`Key file '${source}' cannot be used: ${errorMessage(error)}`);
  }
  return new JwtPlugin(source);
}
