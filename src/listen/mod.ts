/**
 * Listening and TLS: the accept loop on `node:net`, the first-byte sniff that sends TLS
 * handshakes to `node:tls`, the header timeout that drops slow clients, and the server
 * certificate with its reload and our own client-certificate chain check (Deno's `node:tls`
 * accepts any self-signed client certificate). What leaves this folder is a socket, plain or
 * TLS, with the facts the rest of the proxy needs about it (`ConnectionInfo`).
 *
 * @module
 */

export { type ConnectionInfo, connectionInfo, formatPeer, Listener } from "./listener.ts";
export { clientIdentityOf, ServerTls } from "./tls.ts";
