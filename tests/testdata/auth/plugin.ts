// A custom auth plugin as documented in src/auth/mod.ts: default export, a factory.
import { AuthError } from "../../../src/errors.ts";
import type { AuthPlugin, RequestInfo, Target } from "../../../src/types.ts";

export default function (source: string | undefined): AuthPlugin {
  return {
    authenticate(request: RequestInfo, target?: Target): Promise<void> {
      if (request.headers.get("x-token") === source) return Promise.resolve();
      const where = target?.kind === "tcp" ? `${target.host}:${target.port}` : "files";
      return Promise.reject(
        new AuthError("Token Required", { status: 403, logDetail: `bad x-token for ${where}` }),
      );
    },
  };
}
