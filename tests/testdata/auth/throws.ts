// The factory throws.
export default function (_source: string | undefined): never {
  throw new Error("cannot reach the user database");
}
