// A JavaScript plugin exporting its factory as `tokenPlugin`.
export function tokenPlugin(source) {
  if (source === "fail") throw new Error("bad source for the named plugin");
  return { lookup: async (token) => ({ kind: "unix", path: `/run/${source}/${token}` }) };
}
