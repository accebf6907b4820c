/**
 * Targets: dialling where a session goes (TCP on `node:net`, unix sockets and verified TLS on
 * `Deno.connect`) and the `TargetConnection` each kind of target is driven through by the pump.
 *
 * @module
 */

export { SocketConnection } from "./socket_target.ts";
export { describeTarget, dialTarget } from "./target.ts";
export { checkTargetTls } from "./target_tls.ts";
