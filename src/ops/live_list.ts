/**
 * A set of short-lived members kept in array slots instead of a `Set` or `Map` (issue 12).
 *
 * Why: a long-lived `Set` or `Map` whose members come and go (one per connection) lets V8's
 * young-generation GC keep members, and all they refer to, until the next full GC. Each time its
 * hash table fills with deleted entries V8 allocates a new one, and the obsolete table still
 * points at the members it held; once such a table is in the old generation, a scavenge takes its
 * pointers as roots, dead table or not (docs/decisions.md, "Set-up: what each connection leaves
 * to the full GC"; the listener's connections in a Set: 0.9–1.3 KB promoted per session against
 * 0.15 here, tests/gc_promotion_test.ts). Here a slot is emptied in place when its member leaves
 * and reused by the next one, so the array's store is replaced only when more members are held at
 * once than ever before (a replaced store would keep its members as an obsolete table does).
 *
 * @module
 */

/** A member's place in a {@link LiveList}; give it back to {@link LiveList.remove}. */
export interface LiveSlot<T> {
  readonly value: T;
}

interface Slot<T> extends LiveSlot<T> {
  /** Index in the list's array, -1 once removed. */
  index: number;
}

/** Members in no particular order. */
export class LiveList<T> {
  readonly #slots: (Slot<T> | undefined)[] = [];
  /** Indices of empty slots (small integers: nothing for the GC to follow). */
  readonly #free: number[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(value: T): LiveSlot<T> {
    const index = this.#free.pop() ?? this.#slots.length;
    const slot: Slot<T> = { value, index };
    this.#slots[index] = slot;
    this.#size++;
    return slot;
  }

  /** Takes `slot` out; a slot already removed (or another list's) is ignored. */
  remove(slot: LiveSlot<T>): void {
    const own = slot as Slot<T>;
    if (own.index < 0 || this.#slots[own.index] !== own) return;
    this.#slots[own.index] = undefined;
    this.#free.push(own.index);
    own.index = -1;
    this.#size--;
  }

  /** The members now: a copy, so that the caller may add and remove while it goes through it. */
  values(): T[] {
    const values: T[] = [];
    for (const slot of this.#slots) if (slot !== undefined) values.push(slot.value);
    return values;
  }
}
