/**
 * Checks of a WebSocket upgrade request that websockify clients depend on, with upstream's exact
 * 400 reasons, and sub-protocol selection. Pure functions over header values.
 *
 * @module
 */

import { acceptKey } from "./accept_key.ts";

/** The outcome of {@link checkUpgrade}: the protocol to answer with, or a 400 reason. */
export type UpgradeCheck =
  | { readonly ok: true; readonly protocol: string | undefined }
  | { readonly ok: false; readonly reason: string };

/** Header values of an upgrade request (absent headers are `undefined`). */
export interface UpgradeHeaders {
  readonly version: string | undefined;
  readonly key: string | undefined;
  readonly protocol: string | undefined;
}

/**
 * Validates version and key and picks the sub-protocol. Versions 8 and 13 are accepted (the ones
 * `ws` implements; upstream also takes the draft version 7, which no current client sends).
 */
export function checkUpgrade(headers: UpgradeHeaders): UpgradeCheck {
  if (headers.version === undefined) {
    return { ok: false, reason: "Missing Sec-WebSocket-Version header" };
  }
  const version = headers.version.trim();
  if (version !== "8" && version !== "13") {
    return { ok: false, reason: `Unsupported protocol version ${version}` };
  }
  if (headers.key === undefined || headers.key.trim() === "") {
    return { ok: false, reason: "Missing Sec-WebSocket-Key header" };
  }
  if (!isValidKey(headers.key.trim())) {
    return { ok: false, reason: "Invalid Sec-WebSocket-Key header" };
  }
  return selectProtocol(headers.protocol);
}

/**
 * Upstream's rule: answer `binary` when offered, no protocol when none is offered, and
 * `400 Invalid protocol selected` otherwise. Unlike upstream, list items are trimmed, so
 * `base64, binary` (what browsers send for `["base64", "binary"]`) works.
 */
export function selectProtocol(header: string | undefined): UpgradeCheck {
  const offered = (header ?? "").split(",").map((item) => item.trim()).filter((item) => item);
  if (offered.length === 0) return { ok: true, protocol: undefined };
  if (offered.includes("binary")) return { ok: true, protocol: "binary" };
  return { ok: false, reason: "Invalid protocol selected" };
}

function isValidKey(key: string): boolean {
  // RFC 6455 §4.1: the base64 encoding of 16 random bytes.
  return /^[A-Za-z0-9+/]{22}==$/.test(key);
}

/**
 * The 101 response accepting an upgrade with `key` (RFC 6455 §4.2.2), answering `protocol` when
 * one was selected and `extensions` when one was accepted; the same bytes `ws` sends.
 */
export function switchingProtocolsResponse(
  key: string,
  protocol: string | undefined,
  extensions?: string,
): string {
  const accept = acceptKey(key);
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${accept}\r\n` +
    (protocol === undefined ? "" : `Sec-WebSocket-Protocol: ${protocol}\r\n`) +
    (extensions === undefined ? "" : `Sec-WebSocket-Extensions: ${extensions}\r\n`) + "\r\n";
}
