import assert from "node:assert/strict";
import { LiveList } from "../src/ops/live_list.ts";

Deno.test("LiveList holds what was added until removed, and reuses emptied slots", () => {
  const list = new LiveList<string>();
  const a = list.add("a");
  const b = list.add("b");
  const c = list.add("c");
  assert.equal(list.size, 3);
  assert.deepEqual(list.values().sort(), ["a", "b", "c"]);
  list.remove(b);
  assert.equal(list.size, 2);
  assert.deepEqual(list.values().sort(), ["a", "c"]);
  // Removing twice, or a slot of another list, changes nothing.
  list.remove(b);
  list.remove(new LiveList<string>().add("a"));
  assert.equal(list.size, 2);
  const d = list.add("d");
  assert.deepEqual(list.values().sort(), ["a", "c", "d"]);
  list.remove(a);
  list.remove(c);
  list.remove(d);
  assert.equal(list.size, 0);
  assert.deepEqual(list.values(), []);
});

Deno.test("LiveList.values() is a copy: members may leave while the caller goes through it", () => {
  const list = new LiveList<number>();
  const slots = [1, 2, 3, 4].map((value) => list.add(value));
  const seen: number[] = [];
  for (const value of list.values()) {
    seen.push(value);
    for (const slot of slots) list.remove(slot);
    list.add(10 + value);
  }
  assert.deepEqual(seen.sort(), [1, 2, 3, 4]);
  assert.deepEqual(list.values().sort(), [11, 12, 13, 14]);
});
