/**
 * `UnixDomainSocketDirectory`: the token names a Unix socket inside a directory.
 *
 * The token may name a socket in a subdirectory (`team/vnc1`), as upstream allows, but the
 * resolved path must stay inside the directory after `..` is normalised and symlinks are
 * followed (upstream HEAD's `Path.absolute()` lets `../x` and `%2e%2e%2f` escape, and returns a
 * `PosixPath` its own dialler rejects). Anything that is not an existing socket inside the
 * directory is "not found".
 *
 * @module
 */

import { isAbsolute, join, sep } from "node:path";
import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { Target, TokenPlugin } from "../types.ts";

class UnixSocketDirectoryPlugin implements TokenPlugin {
  readonly #directory: string;

  constructor(directory: string) {
    this.#directory = directory;
  }

  async lookup(token: string): Promise<Target | null> {
    if (token === "" || token.includes("\0") || isAbsolute(token)) return null;
    let root: string;
    try {
      root = await Deno.realPath(this.#directory);
    } catch (error) {
      throw new TokenLookupError(
        `Socket directory '${this.#directory}' cannot be read: ${errorMessage(error)}`,
        { status: 503, cause: error },
      );
    }
    let resolved: string;
    try {
      resolved = await Deno.realPath(join(root, token));
    } catch {
      return null; // missing, or a dangling symlink
    }
    if (!resolved.startsWith(root.endsWith(sep) ? root : root + sep)) return null;
    try {
      if (!(await Deno.stat(resolved)).isSocket) return null;
    } catch {
      return null;
    }
    return { kind: "unix", path: resolved };
  }
}

/** `UnixDomainSocketDirectory`: `source` must be a directory (checked now). */
export async function unixSocketDirectory(source: string | undefined): Promise<TokenPlugin> {
  if (source === undefined || source === "") {
    throw new ConfigError(
      "UnixDomainSocketDirectory needs --token-source: give the directory holding the sockets",
    );
  }
  let isDirectory = false;
  try {
    isDirectory = (await Deno.stat(source)).isDirectory;
  } catch (error) {
    throw new ConfigError(`Socket directory '${source}' cannot be read: ${errorMessage(error)}`);
  }
  if (!isDirectory) {
    throw new ConfigError(
      `UnixDomainSocketDirectory plugin requires a directory: '${source}' is not one`,
    );
  }
  return new UnixSocketDirectoryPlugin(source);
}
