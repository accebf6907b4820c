/**
 * The WebSocket protocol (RFC 6455) on a raw socket: the opening handshake's checks and the 101
 * response, the streaming frame reader that unmasks and forwards payload piece by piece as it
 * arrives, frame encoding, and the channel that ties both to a socket (ping, pong, close
 * handshake, backpressure towards the client). Nothing here knows about targets or sessions.
 *
 * @module
 */

export { type ChannelHandlers, WebSocketChannel } from "./channel.ts";
export { encodeFrame, FrameReader, OPCODE } from "./framer.ts";
export { checkUpgrade, switchingProtocolsResponse } from "./handshake.ts";
