/**
 * The verified TLS client certificate of a connection (`--verify-client`), as the
 * {@link ClientIdentity} that auth plugins such as `ClientCertCNAuth` read. It is taken from the
 * TLS session only, never from request headers, and only when the certificate chain was verified
 * against the configured CA (`socket.authorized`).
 *
 * @module
 */

import { TLSSocket } from "node:tls";
import type { ClientIdentity } from "./types.ts";

/** Returns the verified client certificate's identity, or undefined (plain, none, unverified). */
export function clientIdentityOf(socket: unknown): ClientIdentity | undefined {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined;
  const certificate = socket.getPeerCertificate();
  if (certificate === null || Object.keys(certificate).length === 0) return undefined;
  const subject: Record<string, string> = {};
  for (const [key, value] of Object.entries(certificate.subject ?? {})) {
    // Repeated attributes (e.g. two OUs) come as arrays; keep them comma-joined.
    subject[key] = Array.isArray(value) ? value.join(",") : String(value);
  }
  const commonName = subject["CN"] ?? "";
  return { commonName, subject, fingerprint256: certificate.fingerprint256 ?? "" };
}
