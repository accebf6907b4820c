// The factory returns something that is not an AuthPlugin.
export default function (_source: string | undefined): unknown {
  return { check: () => true };
}
