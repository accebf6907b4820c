/**
 * Dials TCP targets through libc (FFI) and hands the connected socket to `node:net`, so a connect
 * completes even while thousands of busy sessions saturate the proxy's core.
 *
 * Why: in Deno 2.9.6 a `node:net` connect finishes inside the runtime's I/O phase, where each
 * readiness check spends tokio's cooperative budget (128 per event-loop turn). Busy sessions ahead
 * of it in the ready queue spend that budget on every turn, so the connect's own check keeps
 * failing and is re-queued behind them. Their data still flows (reads do not take budget), but the
 * connect never completes: 146–348 of 1,000 sessions timed out that way (docs/decisions.md,
 * "Starved connects"). Here the connect is started with `connect(2)` on a non-blocking socket and
 * its completion is found with `poll(2)` from a timer, which the runtime runs before its I/O phase;
 * the connected descriptor is then adopted by `new net.Socket({ fd })` and used like any other.
 *
 * Linux only, and only with the FFI permission (`-A`, or `--allow-ffi`); {@link openLibcDialer}
 * returns `undefined` otherwise and the caller dials with `net.connect`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import net from "node:net";
import { constants } from "node:os";
import {
  EINTR,
  errnoName,
  lastErrno,
  type Libc,
  openLibc,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
} from "../ops/libc.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const POLLOUT = 4;
const EINPROGRESS = 115;
/** Until a dial is this old (ms) its completion is looked for on every event-loop turn. */
const EAGER_MS = 2;
/** Longest wait (ms) between two looks at dials still pending. */
const SLOW_SWEEP_MS = 5;

/** A connect error shaped like node:net's: message `connect ECONNREFUSED 127.0.0.1:9`, `code`. */
export class DialError extends Error {
  readonly code: string;
  readonly errno: number;
  constructor(errno: number, address: string, port: number) {
    const code = errnoName(errno);
    super(`connect ${code} ${address}:${port}`);
    this.code = code;
    this.errno = errno;
  }
}

/** A dial given up at its timeout by the dialer itself (not the kernel's `ETIMEDOUT`). */
export class DialTimeout extends DialError {
  constructor(address: string, port: number) {
    super(constants.errno.ETIMEDOUT, address, port);
  }
}

interface Pending {
  fd: number;
  address: string;
  port: number;
  started: number;
  deadline: number;
  resolve: (fd: number) => void;
  reject: (error: Error) => void;
}

/** Dials through libc; one per process (see {@link openLibcDialer}). */
export class LibcDialer {
  readonly #libc: Libc;
  readonly #pending: Pending[] = [];
  readonly #option = new Uint8Array(4);
  readonly #optionLength = new Uint8Array(4);
  #scheduled = false;
  /**
   * The last address dialled and its encoding: a fixed target is dialled again and again, and
   * {@link encodeAddress} costs `net.isIP`'s regular expressions and a split per dial (1.2 % of a
   * set-up profile). `connect(2)` only reads it.
   */
  #last: { address: string; port: number; sockaddr: Uint8Array<ArrayBuffer> } | undefined;

  constructor(libc: Libc) {
    this.#libc = libc;
  }

  /** Dials in flight (tests, metrics). */
  get pending(): number {
    return this.#pending.length;
  }

  /**
   * Connects to the IP literal `address` (v4 or v6) and `port`. Resolves with a connected
   * `net.Socket`; rejects with a {@link DialError} (refused, unreachable, …) or, after
   * `timeoutMs`, with a {@link DialTimeout} (`ETIMEDOUT`). Throws a `RangeError` for an address
   * it cannot encode (a scoped IPv6 address): dial those with `net.connect`.
   */
  async dial(address: string, port: number, timeoutMs: number): Promise<net.Socket> {
    const fd = await this.dialDescriptor(address, port, timeoutMs);
    try {
      return new net.Socket({ fd, readable: true, writable: true });
    } catch (error) {
      this.#libc.close(fd);
      throw error;
    }
  }

  /**
   * As {@link dial}, but resolves with the connected, non-blocking descriptor, which the caller
   * then owns (src/ops/epoll.ts serves it without `node:net`).
   */
  dialDescriptor(address: string, port: number, timeoutMs: number): Promise<number> {
    let last = this.#last;
    if (last === undefined || last.address !== address || last.port !== port) {
      last = this.#last = { address, port, sockaddr: encodeAddress(address, port) };
    }
    const sockaddr = last.sockaddr;
    const fd = this.#libc.socket(
      sockaddr.length === 16 ? AF_INET : AF_INET6,
      SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
      0,
    );
    if (fd < 0) return Promise.reject(new DialError(lastErrno(this.#libc), address, port));
    if (this.#libc.connect(fd, sockaddr, sockaddr.length) !== 0) {
      const errno = lastErrno(this.#libc);
      if (errno !== EINPROGRESS && errno !== EINTR) {
        this.#libc.close(fd);
        return Promise.reject(new DialError(errno, address, port));
      }
    }
    return new Promise((resolve, reject) => {
      const started = performance.now();
      this.#pending.push({
        fd,
        address,
        port,
        started,
        deadline: started + timeoutMs,
        resolve,
        reject,
      });
      this.#schedule(0);
    });
  }

  #schedule(delay: number): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    if (delay === 0) setImmediate(this.#sweep);
    else setTimeout(this.#sweep, delay);
  }

  /** Polls every pending dial once; settles the finished and the expired ones. */
  readonly #sweep = (): void => {
    this.#scheduled = false;
    const pending = this.#pending;
    const count = pending.length;
    if (count === 0) return;
    const fds = new Uint8Array(count * 8);
    const view = new DataView(fds.buffer);
    for (let index = 0; index < count; index++) {
      view.setInt32(index * 8, pending[index]!.fd, true);
      view.setInt16(index * 8 + 4, POLLOUT, true);
    }
    const ready = this.#libc.poll(fds, BigInt(count), 0);
    const now = performance.now();
    let kept = 0;
    let youngest = Infinity;
    for (let index = 0; index < count; index++) {
      const dial = pending[index]!;
      const revents = ready > 0 ? view.getInt16(index * 8 + 6, true) : 0;
      if (revents !== 0) {
        this.#finish(dial);
      } else if (now >= dial.deadline) {
        this.#libc.close(dial.fd);
        dial.reject(new DialTimeout(dial.address, dial.port));
      } else {
        pending[kept++] = dial;
        youngest = Math.min(youngest, now - dial.started);
      }
    }
    pending.length = kept;
    if (kept > 0) {
      this.#schedule(youngest < EAGER_MS ? 0 : Math.min(SLOW_SWEEP_MS, Math.ceil(youngest / 4)));
    }
  };

  /** The socket is writable or failed: SO_ERROR says which. */
  #finish(dial: Pending): void {
    const option = this.#option;
    new DataView(this.#optionLength.buffer).setUint32(0, 4, true);
    const failed = this.#libc.getsockopt(dial.fd, SOL_SOCKET, SO_ERROR, option, this.#optionLength);
    const errno = failed !== 0
      ? lastErrno(this.#libc)
      : new DataView(option.buffer).getInt32(0, true);
    if (errno !== 0) {
      this.#libc.close(dial.fd);
      dial.reject(new DialError(errno, dial.address, dial.port));
      return;
    }
    dial.resolve(dial.fd);
  }
}

/** `sockaddr_in` (16 bytes) or `sockaddr_in6` (28 bytes) for an IP literal and port. */
export function encodeAddress(address: string, port: number): Uint8Array<ArrayBuffer> {
  const version = net.isIP(address);
  if (version === 4) {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET, true);
    view.setUint16(2, port, false);
    bytes.set(address.split(".").map(Number), 4);
    return bytes;
  }
  if (version === 6 && !address.includes("%")) {
    const bytes = new Uint8Array(28);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET6, true);
    view.setUint16(2, port, false);
    bytes.set(ipv6Bytes(address), 8);
    return bytes;
  }
  throw new RangeError(`'${address}' is not an IP address the libc dialer can encode`);
}

/** The 16 bytes of a valid IPv6 literal (`::` and a trailing dotted IPv4 part included). */
export function ipv6Bytes(address: string): Uint8Array {
  let text = address;
  const tail: number[] = [];
  if (text.includes(".")) {
    const colon = text.lastIndexOf(":");
    const quad = text.slice(colon + 1).split(".").map(Number);
    tail.push((quad[0]! << 8) | quad[1]!, (quad[2]! << 8) | quad[3]!);
    text = text.slice(0, colon);
    if (text.endsWith(":")) text += ":";
  }
  const groups = (part: string) => part === "" ? [] : part.split(":").map((g) => parseInt(g, 16));
  const gap = text.indexOf("::");
  const left = groups(gap < 0 ? text : text.slice(0, gap));
  const right = gap < 0 ? [] : groups(text.slice(gap + 2));
  const zeros = 8 - tail.length - left.length - right.length;
  const all = [...left, ...new Array<number>(Math.max(0, zeros)).fill(0), ...right, ...tail];
  const bytes = Buffer.alloc(16);
  all.forEach((group, index) => bytes.writeUInt16BE(group, index * 2));
  return bytes;
}

let dialer: LibcDialer | undefined;

/** The process's libc dialer, or `undefined` when libc cannot be used ({@link openLibc}). */
export function openLibcDialer(): LibcDialer | undefined {
  const libc = openLibc();
  if (libc === undefined) return undefined;
  return dialer ??= new LibcDialer(libc);
}
