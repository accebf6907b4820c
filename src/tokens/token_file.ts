/**
 * `TokenFile` and `ReadOnlyTokenFile`: targets listed in a file, or in every regular file of a
 * directory, one `token: host:port` per line.
 *
 * Format (upstream's, with its bugs fixed):
 * - the token and target are separated by a colon followed by whitespace (`tok: host:port`,
 *   `tok:\thost:port`); `tok:host:port` is a syntax error, as upstream;
 * - lines starting with `#` and blank lines are ignored (upstream HEAD logs blank lines as
 *   errors);
 * - targets are `host:port`, `[v6]:port`, `v6:port` or `unix_socket:/path` (upstream keeps the
 *   brackets of `[::1]:5900` and then fails to dial);
 * - in a directory, files are read in name order and a later duplicate token wins; names
 *   starting with `.` (editor swap files) are skipped;
 * - syntax errors are logged with the file and its own line number, once per change of the
 *   file (upstream logs the source and a line counter running across all files).
 *
 * Both plugins see edits, additions and removals on the next connection; an unchanged file
 * costs a `stat` per lookup. `ReadOnlyTokenFile` is kept as an alias: upstream's "read once"
 * never held in its fork-per-connection model, where every connection re-read the file.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { join } from "node:path";
import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { Target, TokenPlugin } from "../types.ts";
import { FileCache } from "./file_cache.ts";
import { parseTargetValue } from "./target_value.ts";

const logger = getLogger(["websockify", "tokens"]);

/** The tokens of one file, in file order. */
export type TokenTable = ReadonlyMap<string, Target>;

/**
 * Parses the text of one token file. Bad lines are reported through `onError` with their
 * 1-based line number and left out.
 */
export function parseTokenFile(
  text: string,
  onError: (line: number, reason: string) => void,
): TokenTable {
  const table = new Map<string, Target>();
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const parts = line.split(/:\s/);
    if (parts.length !== 2) {
      onError(index + 1, "expected 'token: host:port' with a space after the first colon");
      return;
    }
    const [token = "", value = ""] = parts;
    if (token.trim() === "") {
      onError(index + 1, "the token before the colon is empty");
      return;
    }
    try {
      table.set(token.trim(), parseTargetValue(value));
    } catch (error) {
      onError(index + 1, errorMessage(error));
    }
  });
  return table;
}

function parseLogged(path: string): (text: string) => TokenTable {
  return (text) =>
    parseTokenFile(text, (line, reason) => {
      logger.error("Syntax error in {path} on line {line}: {reason}", { path, line, reason });
    });
}

/** A token file, or a directory of them, re-read when it changes. */
class TokenFilePlugin implements TokenPlugin {
  readonly #source: string;
  readonly #isDirectory: boolean;
  #files = new Map<string, FileCache<TokenTable>>();
  #unreadable = new Set<string>();

  constructor(source: string, isDirectory: boolean) {
    this.#source = source;
    this.#isDirectory = isDirectory;
  }

  async lookup(token: string): Promise<Target | null> {
    let found: Target | null = null;
    for (const cache of await this.#caches()) {
      let table: TokenTable;
      try {
        table = await cache.get();
        this.#unreadable.delete(cache.path);
      } catch (error) {
        if (!this.#isDirectory) {
          throw new TokenLookupError(
            `Token file '${cache.path}' cannot be read: ${errorMessage(error)}`,
            { status: 503, cause: error },
          );
        }
        // One unreadable file in a directory does not hide the tokens of the others.
        if (!this.#unreadable.has(cache.path)) {
          this.#unreadable.add(cache.path);
          logger.error("Token file {path} cannot be read: {reason}", {
            path: cache.path,
            reason: errorMessage(error),
          });
        }
        continue;
      }
      found = table.get(token) ?? found;
    }
    return found;
  }

  /** The caches of the current files, in name order; new files get a cache, gone ones lose it. */
  async #caches(): Promise<FileCache<TokenTable>[]> {
    if (!this.#isDirectory) {
      let cache = this.#files.get(this.#source);
      if (cache === undefined) {
        cache = new FileCache(this.#source, parseLogged(this.#source));
        this.#files.set(this.#source, cache);
      }
      return [cache];
    }
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(this.#source)) {
        if (entry.name.startsWith(".") || entry.isDirectory) continue;
        names.push(entry.name);
      }
    } catch (error) {
      throw new TokenLookupError(
        `Token directory '${this.#source}' cannot be read: ${errorMessage(error)}`,
        { status: 503, cause: error },
      );
    }
    names.sort();
    const next = new Map<string, FileCache<TokenTable>>();
    for (const name of names) {
      const path = join(this.#source, name);
      if (!(await isRegularFile(path))) continue;
      next.set(path, this.#files.get(path) ?? new FileCache(path, parseLogged(path)));
    }
    this.#files = next;
    return [...next.values()];
  }
}

async function isRegularFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false; // removed between the listing and the stat, or a dangling symlink
  }
}

async function openTokenFiles(name: string, source: string | undefined): Promise<TokenPlugin> {
  if (source === undefined || source === "") {
    throw new ConfigError(
      `${name} needs --token-source: give a token file or a directory of token files`,
    );
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(source);
  } catch (error) {
    throw new ConfigError(
      `Token file '${source}' cannot be read: ${
        errorMessage(error)
      }: check the --token-source path`,
    );
  }
  const plugin = new TokenFilePlugin(source, info.isDirectory);
  await plugin.lookup(""); // reports syntax errors at start-up rather than at the first client
  return plugin;
}

/** `TokenFile`: a token file or directory, re-read whenever it changes. */
export function tokenFile(source: string | undefined): Promise<TokenPlugin> {
  return openTokenFiles("TokenFile", source);
}

/** `ReadOnlyTokenFile`: the same as {@link tokenFile} (see the module notes). */
export function readOnlyTokenFile(source: string | undefined): Promise<TokenPlugin> {
  return openTokenFiles("ReadOnlyTokenFile", source);
}
