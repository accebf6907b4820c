// A token plugin that routes by the client address: the source is `ADDRESS=PORT`; requests whose
// clientAddress is ADDRESS go to 127.0.0.1:PORT, others are unknown (404).
import type { TokenPluginFactory } from "../../../src/types.ts";

const factory: TokenPluginFactory = (source) => {
  const [address, port] = (source ?? "").split("=");
  return {
    lookup: (_token, request) =>
      Promise.resolve(
        request.clientAddress === address
          ? { kind: "tcp", host: "127.0.0.1", port: Number(port) }
          : null,
      ),
  };
};
export default factory;
