/**
 * Deadlines of one length for many short-lived things (the header timeout of every connection),
 * with one runtime timer for all of them instead of a `setTimeout` each (issue 12).
 *
 * Why: a `setTimeout` per connection costs a node:timers `Timeout`, a runtime timer, its closure
 * and map updates in the runtime on every set-up, only to be cleared a millisecond later. Here a
 * deadline is an entry in a {@link LiveList}; the one timer is set for the earliest deadline when
 * there is none sooner, and when it fires it ends what is due and is set again for what is left.
 * Entries come in order of their deadlines, so with connections that come and go quickly the timer
 * fires about once per length. It does not keep the process alive (the sockets do).
 *
 * @module
 */

import { LiveList, type LiveSlot } from "./live_list.ts";

/**
 * Least time (ms) between two firings: a flood of connections whose deadlines spread over time
 * costs a scan of the entries every few milliseconds, not one per deadline; a deadline is then
 * ended up to this much late, never early.
 */
const COALESCE_MS = 5;

interface Entry<T> {
  readonly value: T;
  /** `performance.now()` at which the deadline is due. */
  readonly due: number;
  slot: LiveSlot<Entry<T>> | undefined;
}

/** What {@link Deadlines.add} returns: give it back to {@link Deadlines.cancel}. */
export interface Deadline {
  readonly due: number;
}

/** Calls `expired(value)` once `delayMs` have passed since `add(value)`, unless cancelled. */
export class Deadlines<T> {
  readonly #delayMs: number;
  readonly #expired: (value: T) => void;
  readonly #entries = new LiveList<Entry<T>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the timer fires; Infinity: not set. */
  #timerDue = Infinity;

  constructor(delayMs: number, expired: (value: T) => void) {
    this.#delayMs = delayMs;
    this.#expired = expired;
  }

  /** Entries not yet due nor cancelled (tests). */
  get size(): number {
    return this.#entries.size;
  }

  add(value: T): Deadline {
    const entry: Entry<T> = { value, due: performance.now() + this.#delayMs, slot: undefined };
    entry.slot = this.#entries.add(entry);
    if (entry.due < this.#timerDue) this.#arm(entry.due);
    return entry;
  }

  /** Takes the deadline back; one already due or cancelled is ignored. */
  cancel(deadline: Deadline): void {
    const entry = deadline as Entry<T>;
    if (entry.slot === undefined) return;
    this.#entries.remove(entry.slot);
    entry.slot = undefined;
  }

  #arm(due: number): void {
    clearTimeout(this.#timer);
    this.#timerDue = due;
    this.#timer = setTimeout(this.#fire, Math.max(0, due - performance.now()));
    Deno.unrefTimer(this.#timer);
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#timerDue = Infinity;
    const now = performance.now();
    const expired: Entry<T>[] = [];
    let next = Infinity;
    for (const entry of this.#entries.values()) {
      if (entry.due <= now) expired.push(entry);
      else next = Math.min(next, entry.due);
    }
    for (const entry of expired) this.cancel(entry);
    // Set again before the callbacks run: one that adds a deadline finds the timer in place.
    if (next < this.#timerDue) this.#arm(Math.max(next, now + COALESCE_MS));
    for (const entry of expired) this.#expired(entry.value);
  };
}
