/**
 * Token plugin registry (placeholder until the token plugins land).
 *
 * @module
 */

import { ConfigError } from "../errors.ts";
import type { TokenPlugin } from "../types.ts";

/** Loads the token plugin `name` with `source`. */
export function loadTokenPlugin(
  name: string,
  _source: string | undefined,
  _cwd: string,
): Promise<TokenPlugin> {
  return Promise.reject(new ConfigError(`Unknown token plugin '${name}'`));
}
