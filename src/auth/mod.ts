/**
 * Auth plugin registry (placeholder until the auth plugins land).
 *
 * @module
 */

import { ConfigError } from "../errors.ts";
import type { AuthPlugin } from "../types.ts";

/** Loads the auth plugin `name` with `source`. */
export function loadAuthPlugin(
  name: string,
  _source: string | undefined,
  _cwd: string,
): Promise<AuthPlugin> {
  return Promise.reject(new ConfigError(`Unknown auth plugin '${name}'`));
}
