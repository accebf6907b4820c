// A custom token plugin as a user would write it: default export is a TokenPluginFactory.
import type { TokenPluginFactory } from "../../../src/types.ts";

const factory: TokenPluginFactory = (source) => ({
  lookup: (token, request) =>
    Promise.resolve(
      token === source ? { kind: "tcp", host: request.peer.split(":")[0] ?? "", port: 5900 } : null,
    ),
});
export default factory;
