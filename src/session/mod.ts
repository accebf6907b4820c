/**
 * One proxied session: dialling its target, the two-way pump with backpressure in both
 * directions (client frames to target bytes, target bytes to binary frames), heartbeat, the
 * `--record` file, and the session's end. A session starts with an accepted WebSocket channel
 * and a target, and ends with both closed.
 *
 * @module
 */

export { pump, type PumpEnd, type PumpHandle } from "./pump.ts";
export { Recording } from "./record.ts";
export { runSession, type SessionOptions } from "./session.ts";
