// A custom auth plugin exported by name, with an async factory.
import type { AuthPlugin } from "../../../src/types.ts";

export async function authPlugin(source: string | undefined): Promise<AuthPlugin> {
  await Promise.resolve();
  return { authenticate: () => source === "open" ? Promise.resolve() : Promise.reject(new Error("closed")) };
}
