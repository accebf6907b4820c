/**
 * Token plugins: one proxy, many targets. {@link loadTokenPlugin} turns `--token-plugin NAME
 * --token-source ARG` into a {@link TokenPlugin}, checking what can be checked at start-up.
 *
 * Built-in plugins carry upstream's names (bare, or dotted as
 * `websockify.token_plugins.TokenFile`): `ReadOnlyTokenFile`, `TokenFile`, `TokenFileName`,
 * `BaseTokenAPI`, `JSONTokenApi`, `JWTTokenApi`, `TokenRedis`, `UnixDomainSocketDirectory`.
 *
 * A custom plugin is a TypeScript or JavaScript module given by path (`./my_plugin.ts`,
 * `/abs/plugin.js`, `file:///…`). Its default export, or its export named `tokenPlugin`, is a
 * `TokenPluginFactory` (see `src/types.ts`): called once with the `--token-source` string (or
 * `undefined`), it returns (or resolves to) an object with
 * `lookup(token, request) => Promise<Target | null>` and optionally `close()`:
 *
 * ```ts
 * // my_plugin.ts
 * import type { TokenPluginFactory } from "websockify/src/types.ts";
 * const factory: TokenPluginFactory = (source) => ({
 *   lookup: async (token) => token === source ? { kind: "tcp", host: "127.0.0.1", port: 5900 } : null,
 * });
 * export default factory;
 * ```
 *
 * `lookup` returns `null` for an unknown token (answered 404) and throws for a failed lookup
 * (answered 502/503; throw `TokenLookupError` from `src/errors.ts` to choose the status).
 *
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { RequestInfo, Target, TokenPlugin, TokenPluginFactory } from "../types.ts";
import { jwtTokenApi } from "./jwt.ts";
import { tokenRedis } from "./redis.ts";
import { baseTokenApi, jsonTokenApi } from "./token_api.ts";
import { readOnlyTokenFile, tokenFile } from "./token_file.ts";
import { tokenFileName } from "./token_file_name.ts";
import { unixSocketDirectory } from "./unix_socket_directory.ts";

export { extractToken } from "./extract.ts";
export { formatTarget } from "./target_value.ts";

/** A built-in plugin: its factory, and whether its source is a path (resolved against cwd). */
interface BuiltinPlugin {
  readonly factory: TokenPluginFactory;
  readonly sourceIsPath: boolean;
}

/** The built-in plugins by upstream name. */
export const TOKEN_PLUGINS: Readonly<Record<string, BuiltinPlugin>> = {
  ReadOnlyTokenFile: { factory: readOnlyTokenFile, sourceIsPath: true },
  TokenFile: { factory: tokenFile, sourceIsPath: true },
  TokenFileName: { factory: tokenFileName, sourceIsPath: true },
  BaseTokenAPI: { factory: (source) => baseTokenApi(source), sourceIsPath: false },
  JSONTokenApi: { factory: (source) => jsonTokenApi(source), sourceIsPath: false },
  JWTTokenApi: { factory: jwtTokenApi, sourceIsPath: true },
  TokenRedis: { factory: (source) => tokenRedis(source), sourceIsPath: false },
  UnixDomainSocketDirectory: { factory: unixSocketDirectory, sourceIsPath: true },
};

/**
 * Calls `plugin.lookup`, turning anything it throws that is not already a
 * {@link TokenLookupError} (a custom plugin's plain `Error`, a bug) into a 502 lookup failure,
 * so a failing plugin is never answered as "not found" nor as a bare 500.
 */
export async function lookupTarget(
  plugin: TokenPlugin,
  token: string,
  request: RequestInfo,
): Promise<Target | null> {
  try {
    return await plugin.lookup(token, request);
  } catch (error) {
    if (error instanceof TokenLookupError) throw error;
    throw new TokenLookupError(`Token plugin failed: ${errorMessage(error)}`, {
      status: 502,
      cause: error,
    });
  }
}

const UPSTREAM_PREFIX = "websockify.token_plugins.";

/** Whether a `--token-plugin` value names a module file rather than a built-in. */
export function isModulePath(name: string): boolean {
  return name.startsWith("file:") || name.startsWith(".") || isAbsolute(name) ||
    /\.(ts|mts|js|mjs)$/.test(name);
}

/**
 * Builds the token plugin named by `--token-plugin`.
 *
 * @param name a built-in name, `websockify.token_plugins.<Name>`, or a module path
 * @param source `--token-source`; relative paths of file-based built-ins resolve against `cwd`
 * @param cwd the directory relative paths are resolved against
 * @throws {ConfigError} for an unknown name, a module that cannot be loaded or has no factory,
 * or a source the plugin rejects (missing file, not a directory, bad URL, bad Redis source)
 */
export async function loadTokenPlugin(
  name: string,
  source: string | undefined,
  cwd: string,
): Promise<TokenPlugin> {
  if (isModulePath(name)) return await loadModulePlugin(name, source, cwd);
  const bare = name.startsWith(UPSTREAM_PREFIX) ? name.slice(UPSTREAM_PREFIX.length) : name;
  const builtin = Object.hasOwn(TOKEN_PLUGINS, bare) ? TOKEN_PLUGINS[bare] : undefined;
  if (builtin === undefined) throw unknownPlugin(name, bare);
  const resolved = builtin.sourceIsPath && source !== undefined && source !== ""
    ? resolve(cwd, source)
    : source;
  return await builtin.factory(resolved);
}

function unknownPlugin(name: string, bare: string): ConfigError {
  const names = Object.keys(TOKEN_PLUGINS);
  const close = names.find((candidate) => candidate.toLowerCase() === bare.toLowerCase());
  const hint = close !== undefined
    ? `did you mean '${close}'?`
    : bare.includes(".")
    ? "Python plugin classes cannot be loaded; give a built-in name or a path to a .ts/.js module"
    : `use one of ${names.join(", ")}, or a path to a .ts/.js module such as ./my_plugin.ts`;
  return new ConfigError(`Unknown token plugin '${name}': ${hint}`);
}

async function loadModulePlugin(
  name: string,
  source: string | undefined,
  cwd: string,
): Promise<TokenPlugin> {
  const url = name.startsWith("file:") ? name : pathToFileURL(resolve(cwd, name)).href;
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (error) {
    throw new ConfigError(`Token plugin module '${name}' cannot be loaded: ${errorMessage(error)}`);
  }
  const factory = module["default"] ?? module["tokenPlugin"];
  if (typeof factory !== "function") {
    throw new ConfigError(
      `Token plugin module '${name}' has no factory: export a TokenPluginFactory as default or as 'tokenPlugin'`,
    );
  }
  let plugin: unknown;
  try {
    plugin = await (factory as TokenPluginFactory)(source);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`Token plugin module '${name}' failed to start: ${errorMessage(error)}`);
  }
  if (typeof (plugin as Partial<TokenPlugin> | null)?.lookup !== "function") {
    throw new ConfigError(
      `Token plugin module '${name}' returned no plugin: the factory must return an object with lookup()`,
    );
  }
  return plugin as TokenPlugin;
}
