/**
 * `TokenFileName`: the token names a file in a directory, and the file holds `host:port`.
 *
 * Like upstream, the token is reduced to its last path component, so `a/b` looks up `b` and no
 * token can leave the directory; unlike upstream, `.`, `..` and the empty name are "not found"
 * (upstream opens the directory itself and crashes), and the content accepts every target form
 * of the shared parser (`[v6]:port`, `unix_socket:/path`) where upstream splits on every colon.
 *
 * @module
 */

import { join } from "node:path";
import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { Target, TokenPlugin } from "../types.ts";
import { parseTargetValue } from "./target_value.ts";

/** Reduces a token to a safe file name, or `undefined` when nothing safe is left. */
export function tokenFileNameOf(token: string): string | undefined {
  const name = token.slice(token.lastIndexOf("/") + 1);
  if (name === "" || name === "." || name === ".." || name.includes("\0")) return undefined;
  return name;
}

class TokenFileNamePlugin implements TokenPlugin {
  readonly #directory: string;

  constructor(directory: string) {
    this.#directory = directory;
  }

  async lookup(token: string): Promise<Target | null> {
    const name = tokenFileNameOf(token);
    if (name === undefined) return null;
    const path = join(this.#directory, name);
    let text: string;
    try {
      const info = await Deno.stat(path);
      if (!info.isFile) return null;
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new TokenLookupError(`Token file '${path}' cannot be read: ${errorMessage(error)}`, {
        status: 503,
        cause: error,
      });
    }
    try {
      return parseTargetValue(text);
    } catch (error) {
      throw new TokenLookupError(
        `Token file '${path}' does not hold a target: ${errorMessage(error)}`,
        { status: 502, cause: error },
      );
    }
  }
}

/** `TokenFileName`: `source` must be a directory (checked now). */
export async function tokenFileName(source: string | undefined): Promise<TokenPlugin> {
  if (source === undefined || source === "") {
    throw new ConfigError("TokenFileName needs --token-source: give a directory of target files");
  }
  let isDirectory = false;
  try {
    isDirectory = (await Deno.stat(source)).isDirectory;
  } catch (error) {
    throw new ConfigError(
      `TokenFileName plugin requires a directory: '${source}' cannot be read: ${
        errorMessage(error)
      }`,
    );
  }
  if (!isDirectory) {
    throw new ConfigError(
      `TokenFileName plugin requires a directory: '${source}' is not one; use TokenFile for a file`,
    );
  }
  return new TokenFileNamePlugin(source);
}
