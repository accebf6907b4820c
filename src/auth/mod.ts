/**
 * Auth plugins: the built-ins by their upstream names, custom plugin modules, and the response
 * for a denial.
 *
 * `--auth-plugin` takes a built-in name (`BasicHTTPAuth`, `ExpectOrigin`, `ClientCertCNAuth`, also
 * as the dotted upstream path `websockify.auth_plugins.BasicHTTPAuth`) or a module path. A module
 * path starts with `./`, `../`, `/` or `file:`, or ends in `.ts`, `.js`, `.mts` or `.mjs`; relative
 * paths are resolved against the working directory. The module must export a factory
 * `(source: string | undefined) => AuthPlugin | Promise<AuthPlugin>` as its default export or as
 * `authPlugin`; the plugin's `authenticate(request, target?)` resolves to allow and throws an
 * `AuthError` to deny (anything else it throws is answered with 500):
 *
 * ```ts
 * // my_auth.ts — run with: websockify --auth-plugin ./my_auth.ts --auth-source secret-token ...
 * import { AuthError } from "./src/errors.ts";
 * import type { AuthPlugin, RequestInfo } from "./src/types.ts";
 *
 * export default function (source: string | undefined): AuthPlugin {
 *   return {
 *     authenticate(request: RequestInfo): Promise<void> {
 *       if (request.headers.get("x-token") === source) return Promise.resolve();
 *       return Promise.reject(new AuthError("Forbidden", { status: 403 }));
 *     },
 *   };
 * }
 * ```
 *
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ConfigError, errorMessage } from "../errors.ts";
import type { AuthPlugin, AuthPluginFactory } from "../types.ts";
import { basicHttpAuth } from "./basic.ts";
import { clientCertCnAuth } from "./client_cert_cn.ts";
import { expectOrigin } from "./origin.ts";

export { toAuthError, writeAuthError } from "./response.ts";
export { checkOrigin } from "./origin.ts";

/** The built-in plugins by their upstream class names. */
export const BUILTIN_AUTH_PLUGINS: Readonly<Record<string, AuthPluginFactory>> = {
  BasicHTTPAuth: basicHttpAuth,
  ExpectOrigin: expectOrigin,
  ClientCertCNAuth: clientCertCnAuth,
};

/**
 * Builds the auth plugin named by `--auth-plugin` with `--auth-source` `source`. Module paths are
 * resolved against `cwd`. Throws `ConfigError` for an unknown name, a module that cannot be
 * loaded or does not export a factory, a factory that does not return an `AuthPlugin`, or a
 * factory that throws (a built-in without its source, for instance).
 */
export async function loadAuthPlugin(
  name: string,
  source: string | undefined,
  cwd: string,
): Promise<AuthPlugin> {
  const [label, factory] = isModulePath(name)
    ? [`module '${name}'`, await importFactory(name, cwd)]
    : [`'${name}'`, builtinFactory(name)];
  let plugin: unknown;
  try {
    plugin = await factory(source);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`Auth plugin ${label} failed to start: ${errorMessage(error)}`);
  }
  if (!isAuthPlugin(plugin)) {
    throw new ConfigError(
      `Auth plugin ${label}: the factory returned ${describe(plugin)}, not an object with an ` +
        "authenticate(request, target) method: return { authenticate } from the factory",
    );
  }
  return plugin;
}

/** Whether `name` names a module rather than a built-in. */
export function isModulePath(name: string): boolean {
  return /^(\.{1,2}\/|\/|file:)/.test(name) || /\.(ts|js|mts|mjs)$/.test(name);
}

function builtinFactory(name: string): AuthPluginFactory {
  const short = name.slice(name.lastIndexOf(".") + 1);
  const factory = Object.hasOwn(BUILTIN_AUTH_PLUGINS, short)
    ? BUILTIN_AUTH_PLUGINS[short]
    : undefined;
  if (factory === undefined) {
    throw new ConfigError(
      `Unknown auth plugin '${name}': use one of ${Object.keys(BUILTIN_AUTH_PLUGINS).join(", ")} ` +
        "or a module path such as ./my_auth.ts",
    );
  }
  return factory;
}

async function importFactory(name: string, cwd: string): Promise<AuthPluginFactory> {
  const url = name.startsWith("file:")
    ? name
    : pathToFileURL(isAbsolute(name) ? name : resolve(cwd, name)).href;
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (error) {
    throw new ConfigError(
      `Cannot load auth plugin module '${name}' (${url}): ${errorMessage(error)}: check the path`,
    );
  }
  const exported = module["default"] ?? module["authPlugin"];
  if (typeof exported !== "function") {
    const names = Object.keys(module).join(", ") || "nothing";
    throw new ConfigError(
      `Auth plugin module '${name}' exports ${names}: export a factory ` +
        "(source) => AuthPlugin as default or as 'authPlugin'",
    );
  }
  if (/^class\b/.test(Function.prototype.toString.call(exported))) {
    throw new ConfigError(
      `Auth plugin module '${name}' exports a class: export a factory function instead, ` +
        "e.g. export default (source) => new MyPlugin(source)",
    );
  }
  return exported as AuthPluginFactory;
}

function isAuthPlugin(value: unknown): value is AuthPlugin {
  return typeof value === "object" && value !== null &&
    typeof (value as { authenticate?: unknown }).authenticate === "function";
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return `an object with keys ${Object.keys(value).join(", ")}`;
  return typeof value;
}
