/**
 * Sockets served by our own epoll loop through FFI instead of by Deno's `node:net` (issue 12).
 *
 * An {@link FdSocket} is a connected, non-blocking TCP socket given by its descriptor. It offers
 * the part of `net.Socket` that the session code uses (`data`, `end`, `error`, `close` and `drain`
 * events, `write` with callbacks, `cork`, `end`, `destroy`, `pause`, `resume`), so the channel,
 * the pump and the target connection run on it unchanged. All sockets of a process share one
 * {@link EpollLoop}: it polls without blocking (`epoll_wait` with timeout 0) once per event-loop
 * turn while sockets are ready, and when none is, waits in a thread (a non-blocking FFI call) so
 * an idle proxy uses no CPU. Reads and writes are plain `read` and `send` calls.
 *
 * Why: Deno 2.9.6 serves `node:net` handles through a ready queue with tokio's cooperative budget
 * (docs/decisions.md, "Starved connects and accepts"); its per-message cost is several times a
 * read and a send. Measured in docs/decisions.md, "Sessions on our own epoll loop".
 *
 * Linux only; {@link openEpoll} returns `undefined` where it cannot be used (no FFI permission,
 * not Linux, no glibc), and callers keep the `node:net` socket.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import { constants } from "node:os";
import process from "node:process";
import { errnoName } from "./libc.ts";
import { getLog } from "./log.ts";

/** The libc functions the loop calls (exported for tests that wrap one of them). */
export const EPOLL_SYMBOLS = {
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  epoll_wait_blocking: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  splice: { parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** The loop's libc functions, as `Deno.dlopen` gives them. */
export type Epoll = Deno.DynamicLibrary<typeof EPOLL_SYMBOLS>["symbols"];

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EPOLLIN = 0x001;
const EPOLLOUT = 0x004;
const EPOLLERR = 0x008;
const EPOLLHUP = 0x010;
const EPOLLRDHUP = 0x2000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const MSG_MORE = 0x8000;
const SPLICE_F_MOVE = 1;
const SPLICE_F_NONBLOCK = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const F_SETPIPE_SZ = 1031;
const SHUT_WR = 1;
const SOL_SOCKET = 1;
const SO_KEEPALIVE = 9;
const SO_RCVBUF = 8;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const TCP_KEEPIDLE = 4;
const EAGAIN = 11;
const EINTR = 4;
const ECONNABORTED = 103;
const EIO = 5;
/**
 * What splice(2) answers when it will not move between these descriptors here (a kernel, a
 * sandbox or a seccomp filter without it), as opposed to a socket error: EPERM, EINVAL, ENOSYS,
 * EOPNOTSUPP. The process then reads and sends as before splicing ({@link EpollLoop.refusesSplice}).
 */
const SPLICE_REFUSALS = new Set([1, 22, 38, 95]);
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const AF_INET = 2;
const AF_INET6 = 10;

/** `struct epoll_event` is packed on x86-64 (12 bytes); 16 bytes elsewhere. */
const EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const EVENT_DATA = Deno.build.arch === "x86_64" ? 4 : 8;
/**
 * Most events served per poll, that is per event-loop turn. A new session needs a dozen turns
 * (accept, request, dial, 101) that wait behind each poll: with 2,000 busy sessions, new ones
 * waited 1.4 s at 1,024 events per poll, 250 ms at 128 and 115 ms at 32, for 5–8 % less echo
 * throughput at 32 than at 1,024 (docs/decisions.md, "Sessions on our own epoll loop").
 */
const MAX_EVENTS = 64;
/**
 * How long (ms) the loop keeps polling once per turn after the last event before it waits in a
 * thread: an answer that comes back within it (a request/response round trip) is read without the
 * thread's wake-up, which cost about 80 µs per message.
 */
const SPIN_MS = 0.5;
/** Read size through the loop's scratch buffer, and of a fresh buffer after a large read. */
const READ_SIZE = 64 * 1024;
/**
 * Read size after a read of {@link READ_SIZE} or more: the peer sends faster than it is read, so
 * one read, one event-loop turn and one send carry up to four times as much (the pump still sends
 * the client messages of at most 64 KiB). docs/decisions.md, "One way: 256 KiB reads".
 */
const FULL_READ_SIZE = 256 * 1024;
/**
 * Capacity asked for a splice pipe: room for a 64 KiB move in pieces of any size (a pipe holds
 * 16 pieces by default, whatever their size).
 */
const PIPE_SIZE = 256 * 1024;
/**
 * Receive buffer asked for (SO_RCVBUF; the kernel doubles it, within net.core.rmem_max) on a
 * socket's first splice: the kernel grows a receive buffer by itself only for reads (`recvmsg`),
 * so a spliced socket stayed at 128 KiB and its sender waited for the window half of the time.
 */
const SPLICE_RECEIVE_BUFFER = 2 * 1024 * 1024;
/** Most moves into a splice pipe per event: as much as one {@link FULL_READ_SIZE} read. */
const SPLICES_PER_EVENT = FULL_READ_SIZE / READ_SIZE;
/** A read at least this large makes the next one go into a fresh buffer instead of the scratch. */
const LARGE_READ = 16 * 1024;
/** `write()` returns false once this much is queued (node's default high-water mark). */
const HIGH_WATER = 16 * 1024;
/** Queued chunks up to this size in all are copied into one send; larger ones go by sendmsg. */
const JOIN_LIMIT = 16 * 1024;
/** Most chunks in one sendmsg. */
const MAX_IOV = 64;
/** Most connections accepted per listener event, so a flood cannot hold one poll. */
const ACCEPT_BATCH = 16;
/** Bytes a socket keeps while no one listens for `data` (before the 101); then it pauses. */
const UNCLAIMED_LIMIT = 64 * 1024;
/** How long (ms) a listener stops accepting after an error such as EMFILE (level-triggered). */
const ACCEPT_PAUSE_MS = 100;

/** A socket's one `data` listener, or whether it has none or several (FdSocket.#dataListener). */
type DataListener = ((chunk: Buffer) => void) | "none" | "several";

/** The bytes of a queue entry whose bytes are in a splice pipe. */
const EMPTY = new Uint8Array(0);

/** What the loop serves: a connected socket or a listening one. */
interface Watched {
  readonly fd: number;
  ready(events: number, scratch: Uint8Array): void;
}

/** A socket error with node's `code`, `errno` and `syscall`, as net.Socket emits them. */
export class SocketError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(errno: number, syscall: string) {
    const code = errnoName(errno);
    super(`${syscall} ${code}`);
    this.name = "Error";
    this.code = code;
    this.errno = -errno;
    this.syscall = syscall;
  }
}

interface Queued {
  bytes: Uint8Array;
  callback: ((error?: Error | null) => void) | undefined;
  /** Bytes of this entry still in the socket's splice pipe (`bytes` is then empty); else 0. */
  spliced: number;
}

/**
 * Where a socket's reads can go without passing through user space ({@link FdSocket.spliceTo}):
 * a pipe that another socket empties. Used for bulk target data on its way to a client.
 */
export interface SpliceSink {
  /** The write end of the pipe for the next read, or -1: read it as usual. */
  pipe(): number;
  /** `count` bytes (more than 0) were moved into the pipe. */
  moved(count: number): void;
}

/** Addresses of a socket, copied from the `net.Socket` it replaces. */
export interface FdSocketAddresses {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly remoteFamily?: string | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

/** What the loop knows of a descriptor it adopts (each saves system calls; all default false). */
export interface FdSocketOptions {
  /**
   * No other descriptor refers to the socket (accepted or dialled here, never duplicated), so
   * closing it also takes it out of the epoll set: no `EPOLL_CTL_DEL` before the close.
   */
  readonly exclusive?: boolean;
  /** TCP_NODELAY and SO_KEEPALIVE are on already (inherited from the listening socket). */
  readonly noDelayKeepAlive?: boolean;
}

/** A connected TCP socket served by an {@link EpollLoop}: the `net.Socket` subset sessions use. */
export class FdSocket extends EventEmitter implements Watched {
  readonly fd: number;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly remoteFamily: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  bytesRead = 0;
  bytesWritten = 0;
  destroyed = false;
  readable = true;
  writable = true;
  writableEnded = false;
  writableLength = 0;
  readonly #loop: EpollLoop;
  readonly #queue: Queued[] = [];
  #paused = true;
  #pausedByCall = false;
  #corked = 0;
  #interest = 0;
  #registered = false;
  #finished = false;
  #readEnded = false;
  /** Size of the fresh buffer the next read goes into; 0: the loop's scratch (small reads). */
  #nextRead = 0;
  readonly #exclusive: boolean;
  /** TCP_NODELAY and SO_KEEPALIVE as last set (or inherited): a repeated call costs nothing. */
  #noDelay: boolean;
  #keepAlive: boolean;
  /** Data read while no `data` listener was attached, or given back by unshift(). */
  #unclaimed: Buffer[] = [];
  /**
   * The one `data` listener, which a read calls directly (EventEmitter's emit and listenerCount
   * were 2.6 % of an echoing session's CPU); "none" or "several" (emit then); undefined: the
   * listeners changed since it was last looked up.
   */
  #dataListener: DataListener | undefined = "none";
  /** Where bulk reads are spliced to, if anywhere ({@link spliceTo}). */
  #sink: SpliceSink | undefined;
  /** This socket's splice pipe, [read end, write end]; [] until asked for; [-1] if it failed. */
  #pipe: number[] = [];
  /** Whether this socket's receive buffer was set for splicing ({@link SPLICE_RECEIVE_BUFFER}). */
  #spliceReceiveBuffer = false;
  /** Bytes in the splice pipe, queued to be sent (part of writableLength). */
  splicedLength = 0;
  /** Where reads go while borrowed ({@link borrowReads}); undefined: buffers of their own. */
  #borrowed: Uint8Array | undefined;
  /** Whether write() copies what it queues ({@link copyQueuedWrites}). */
  #copyQueued = false;

  constructor(
    loop: EpollLoop,
    fd: number,
    addresses: FdSocketAddresses = {},
    options: FdSocketOptions = {},
  ) {
    super();
    this.#loop = loop;
    this.fd = fd;
    this.#exclusive = options.exclusive ?? false;
    this.#noDelay = this.#keepAlive = options.noDelayKeepAlive ?? false;
    this.remoteAddress = addresses.remoteAddress;
    this.remotePort = addresses.remotePort;
    this.remoteFamily = addresses.remoteFamily;
    this.localAddress = addresses.localAddress;
    this.localPort = addresses.localPort;
    // As a stream: the first `data` listener starts reading, unless pause() came first.
    this.on("newListener", (event: string) => {
      if (event !== "data") return;
      this.#dataListener = undefined;
      if (!this.#pausedByCall) this.resume();
    });
    this.#update();
  }

  /** Whether reading is paused: until resume() or a `data` listener, as net.Socket. */
  isPaused(): boolean {
    return this.#paused;
  }

  pause(): this {
    this.#pausedByCall = true;
    if (!this.#paused) {
      this.#paused = true;
      this.#update();
    }
    return this;
  }

  resume(): this {
    this.#pausedByCall = false;
    if (this.#paused) {
      this.#paused = false;
      this.#update();
    }
    // The `data` listener that resumed a socket is attached only after this call.
    if (this.#unclaimed.length > 0) process.nextTick(() => this.#emitUnclaimed());
    return this;
  }

  #emitUnclaimed(): void {
    while (this.#unclaimed.length > 0 && !this.#paused && this.listenerCount("data") > 0) {
      this.emit("data", this.#unclaimed.shift()!);
    }
  }

  /**
   * Takes what was read while no one listened for `data` (as `stream.read()`): one chunk, or
   * null when there is none.
   */
  read(): Buffer | null {
    const unclaimed = this.#unclaimed;
    if (unclaimed.length === 0) return null;
    const chunk = unclaimed.length === 1 ? unclaimed[0]! : Buffer.concat(unclaimed);
    this.#unclaimed = [];
    return chunk;
  }

  /** Puts `chunk` back in front of what is to be read (as `stream.unshift()`). */
  unshift(chunk: Buffer): void {
    this.#unclaimed.unshift(chunk);
  }

  /**
   * Gives the descriptor up without closing it (the listener hands a connection to `node:net`):
   * the socket leaves the loop and is destroyed without `close`. Only before anything was written.
   */
  release(): number {
    this.#leaveLoop(false);
    return this.fd;
  }

  /**
   * Marks the socket destroyed and takes it out of the epoll set; `closing`: the descriptor is
   * closed next, which for an exclusive one leaves the set by itself.
   */
  #leaveLoop(closing: boolean): void {
    this.destroyed = true;
    this.readable = false;
    this.writable = false;
    if (this.#registered) this.#loop.unregister(this, closing && this.#exclusive);
    this.#registered = false;
  }

  /** Only `setTimeout(0)` (no idle timeout, as these sockets have), for net.Socket's callers. */
  setTimeout(timeoutMs: number): this {
    if (timeoutMs !== 0) throw new RangeError("FdSocket has no idle timeout");
    return this;
  }

  setNoDelay(noDelay = true): this {
    if (noDelay === this.#noDelay) return this;
    this.#noDelay = noDelay;
    this.#loop.setOption(this.fd, IPPROTO_TCP, TCP_NODELAY, noDelay ? 1 : 0);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    if (enable !== this.#keepAlive || initialDelay >= 1000) {
      this.#loop.setOption(this.fd, SOL_SOCKET, SO_KEEPALIVE, enable ? 1 : 0);
    }
    this.#keepAlive = enable;
    if (enable && initialDelay >= 1000) {
      this.#loop.setOption(this.fd, IPPROTO_TCP, TCP_KEEPIDLE, Math.floor(initialDelay / 1000));
    }
    return this;
  }

  cork(): void {
    this.#corked++;
  }

  uncork(): void {
    if (this.#corked > 0 && --this.#corked === 0) this.#flush();
  }

  /**
   * Sends `data`, now if the kernel takes it, else queued until the socket is writable. Returns
   * false once the queue has reached the high-water mark: wait for `drain`.
   */
  write(
    data: Uint8Array | string,
    encoding?: string | ((error?: Error | null) => void),
    callback?: (error?: Error | null) => void,
  ): boolean {
    const done = typeof encoding === "function" ? encoding : callback;
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    if (this.destroyed || this.writableEnded) {
      const error = new SocketError(constants.errno.EPIPE, "write");
      if (done) process.nextTick(done, error);
      return false;
    }
    const copy = this.#copyQueued;
    if (this.#queue.length === 0 && this.#corked === 0) {
      const sent = bytes.length === 0 ? 0 : this.#loop.send(this.fd, bytes);
      if (sent === bytes.length) {
        this.bytesWritten += sent;
        if (done) process.nextTick(done, null);
        return true;
      }
      if (sent < 0) {
        this.destroy(new SocketError(-sent, "write"));
        if (done) process.nextTick(done, new SocketError(-sent, "write"));
        return false;
      }
      this.bytesWritten += sent;
      const rest = bytes.subarray(sent);
      this.#queue.push({ bytes: copy ? new Uint8Array(rest) : rest, callback: done, spliced: 0 });
      this.writableLength += bytes.length - sent;
      this.#update();
    } else {
      this.#queue.push({ bytes: copy ? new Uint8Array(bytes) : bytes, callback: done, spliced: 0 });
      this.writableLength += bytes.length;
    }
    return this.writableLength < HIGH_WATER;
  }

  /**
   * From now on write() copies the bytes it cannot send at once before it queues them, so that
   * a caller may write from memory it reuses as soon as write() returns ({@link borrowReads}).
   */
  copyQueuedWrites(): void {
    this.#copyQueued = true;
  }

  /**
   * Reads into `region` instead of buffers of their own while this socket has one `data`
   * listener and nothing unclaimed: no allocation and no zeroing per read. The region is shared
   * (readRegion in src/websocket/unmask.ts), so a chunk is valid only until the listener
   * returns: whoever keeps a piece of it copies it (a socket it is written to, with {@link
   * copyQueuedWrites}).
   */
  borrowReads(region: Uint8Array): void {
    this.#borrowed = region;
  }

  /**
   * Moves bulk reads from this socket into `sink`'s pipe instead of reading them ({@link
   * SpliceSink}): a read that follows one of 64 KiB or more (the peer is ahead) is spliced, at
   * most 64 KiB at a time, whenever the sink offers its pipe. `undefined` stops it.
   */
  spliceTo(sink: SpliceSink | undefined): void {
    this.#sink = sink;
  }

  /**
   * The write end of this socket's splice pipe, made on first use (then closed with the socket),
   * or -1 if none can be made (as when descriptors run out) or the kernel refused a splice: the
   * caller reads as usual. What is moved into it is sent with {@link writeSpliced}.
   */
  splicePipe(): number {
    if (this.destroyed || this.writableEnded || this.#loop.spliceRefused !== undefined) return -1;
    if (this.#pipe.length === 0) this.#pipe = this.#loop.pipe();
    return this.#pipe.length === 2 ? this.#pipe[1]! : -1;
  }

  /**
   * Sends `header`, then the `count` bytes just moved into this socket's splice pipe, in order
   * with what write() queued: as much at once as the kernel takes, the rest when writable. The
   * bytes go from the pipe to the socket without a copy through user space.
   */
  writeSpliced(header: Uint8Array, count: number): void {
    if (this.destroyed || this.writableEnded || this.#pipe.length !== 2) {
      // Nothing can send them any more: they stay in the pipe, which closes with the socket.
      return;
    }
    const queue = this.#queue;
    // Sent at once here rather than queued and flushed: #flush's bookkeeping (a `drain` per
    // emptied queue) made the spliced path 0.98× the rate at 1.05× the CPU per byte (6 rounds).
    if (queue.length === 0 && this.#corked === 0) {
      // The header waits in the kernel (MSG_MORE) for the payload behind it: one segment.
      const sent = this.#loop.send(this.fd, header, true);
      if (sent < 0) return void this.destroy(new SocketError(-sent, "write"));
      this.bytesWritten += sent;
      if (sent === header.length) {
        const moved = this.#loop.splice(this.#pipe[0]!, this.fd, count);
        if (this.#loop.spliceFailed(moved)) {
          return void this.destroy(new SocketError(-moved, "splice"));
        }
        if (moved === count) {
          this.bytesWritten += moved;
          return;
        }
        if (moved > 0) {
          this.bytesWritten += moved;
          count -= moved;
        }
      } else queue.push({ bytes: header.subarray(sent), callback: undefined, spliced: 0 });
      queue.push({ bytes: EMPTY, callback: undefined, spliced: count });
      this.writableLength += (header.length - sent) + count;
      this.splicedLength += count;
      // If refused, the flush reads the bytes out of the pipe and sends them, once writable.
      this.#update();
      return;
    }
    queue.push(
      { bytes: header, callback: undefined, spliced: 0 },
      { bytes: EMPTY, callback: undefined, spliced: count },
    );
    this.writableLength += header.length + count;
    this.splicedLength += count;
  }

  /**
   * Ends the writing side once the queue is flushed (a FIN), after `data` if given; `callback`
   * when done.
   */
  end(data?: Uint8Array | string | (() => void), callback?: () => void): this {
    if (typeof data === "function") callback = data;
    else if (data !== undefined && !this.writableEnded) this.write(data);
    if (callback) this.once("finish", callback);
    if (this.writableEnded) return this;
    this.writableEnded = true;
    if (this.#queue.length === 0 && this.#corked === 0) this.#finish();
    return this;
  }

  /** Closes the descriptor now; queued data is dropped. Emits `error` (if given) and `close`. */
  destroy(error?: Error): this {
    if (this.destroyed) return this;
    this.#leaveLoop(true);
    this.#loop.close(this.fd);
    if (this.#pipe.length === 2) {
      this.#loop.close(this.#pipe[0]!);
      this.#loop.close(this.#pipe[1]!);
    }
    const queued = this.#queue.splice(0);
    this.writableLength = 0;
    this.splicedLength = 0;
    process.nextTick(() => {
      for (const entry of queued) entry.callback?.(error ?? new Error("socket destroyed"));
      if (error) this.emit("error", error);
      this.emit("close", error !== undefined);
    });
    return this;
  }

  /**
   * Keeps data no one listens for yet (a client that sends before our 101 arrives, while its
   * upgrade is admitted), as a paused stream would; pauses once {@link UNCLAIMED_LIMIT} is held.
   */
  #keepUnclaimed(chunk: Buffer): void {
    this.#unclaimed.push(chunk);
    if (this.listenerCount("data") > 0) process.nextTick(() => this.#emitUnclaimed());
    let held = 0;
    for (const kept of this.#unclaimed) held += kept.length;
    if (held >= UNCLAIMED_LIMIT) {
      this.#paused = true;
      this.#update();
    }
  }

  /** Closes after the peer's FIN and our own: both directions done, as net.Socket does. */
  #closeIfDone(): void {
    if (this.#readEnded && this.#finished) this.destroy();
  }

  #finish(): void {
    if (this.#finished || this.destroyed) return;
    this.#finished = true;
    this.writable = false;
    this.#loop.shutdownWrite(this.fd);
    this.#update();
    process.nextTick(() => {
      this.emit("finish");
      this.#closeIfDone();
    });
  }

  /**
   * The interest set follows the state: reading unless paused or ended, writing while queued.
   * `now`: a socket that wants nothing leaves the set at once; otherwise a paused one stays in
   * it with its old interest until an event comes (most pauses, such as while an upgrade is
   * admitted or the target dialled, see none, and a resume then costs no system call either).
   */
  #update(now = false): void {
    if (this.destroyed) return;
    const wanted = (this.#paused || this.#readEnded ? 0 : EPOLLIN | EPOLLRDHUP) |
      (this.#queue.length > 0 && this.#corked === 0 ? EPOLLOUT : 0);
    if (wanted === this.#interest && this.#registered) return;
    // A socket without interest leaves the set: epoll reports hang-ups and errors regardless of
    // the interest, and a paused or ended socket must not spin the loop.
    if (wanted === 0) {
      // Both ways done: #closeIfDone closes it before the next poll, and an exclusive
      // descriptor's close takes it out of the set.
      if (this.#readEnded && this.#finished && this.#exclusive) return;
      if (!this.#registered) this.#interest = 0;
      else if (now || this.#readEnded || this.#interest !== (EPOLLIN | EPOLLRDHUP)) {
        this.#loop.unregister(this, false);
        this.#registered = false;
        this.#interest = 0;
      }
    } else {
      this.#interest = wanted;
      this.#loop.register(this, wanted, this.#registered);
      this.#registered = true;
    }
  }

  /** Sends what is queued, joining small chunks; called when writable or on uncork. */
  #flush(): void {
    const queue = this.#queue;
    while (queue.length > 0 && !this.destroyed) {
      const first = queue[0]!;
      if (first.spliced > 0) {
        // Bytes waiting in the splice pipe: from there to the socket.
        let moved = 0;
        if (this.#loop.spliceRefused === undefined) {
          moved = this.#loop.splice(this.#pipe[0]!, this.fd, first.spliced);
          if (this.#loop.spliceFailed(moved)) {
            this.destroy(new SocketError(-moved, "splice"));
            return;
          }
        }
        if (this.#loop.spliceRefused !== undefined) {
          // The kernel refused (now or for another socket): read out and sent as any bytes.
          const bytes = this.#unsplice(first.spliced);
          if (bytes === undefined) return;
          this.splicedLength -= first.spliced;
          first.spliced = 0;
          first.bytes = bytes;
          continue;
        }
        if (moved <= 0) break;
        this.bytesWritten += moved;
        this.writableLength -= moved;
        this.splicedLength -= moved;
        first.spliced -= moved;
        if (first.spliced > 0) break;
        queue.shift();
        if (first.callback) process.nextTick(first.callback, null);
        continue;
      }
      let count = Math.min(queue.length, MAX_IOV);
      // Up to the next spliced entry: those bytes are not in user space.
      for (let index = 1; index < count; index++) {
        if (queue[index]!.spliced > 0) {
          count = index;
          break;
        }
      }
      let total = 0;
      for (let index = 0; index < count; index++) total += queue[index]!.bytes.length;
      let sent: number;
      if (count === 1) {
        // A header in front of spliced bytes waits for them in the kernel (MSG_MORE).
        const more = queue.length > 1 && queue[1]!.spliced > 0;
        sent = this.#loop.send(this.fd, first.bytes, more);
      } else if (total <= JOIN_LIMIT) {
        // Small pieces: one copy is cheaper than describing them to the kernel.
        const joined = Buffer.allocUnsafe(total);
        let offset = 0;
        for (let index = 0; index < count; index++) {
          joined.set(queue[index]!.bytes, offset);
          offset += queue[index]!.bytes.length;
        }
        sent = this.#loop.send(this.fd, joined);
      } else sent = this.#loop.sendPieces(this.fd, queue, count);
      if (sent < 0) {
        this.destroy(new SocketError(-sent, "write"));
        return;
      }
      this.bytesWritten += sent;
      this.writableLength -= sent;
      // Drop the entries that went out whole; keep the rest of a partly sent one.
      let left = sent;
      while (queue.length > 0 && queue[0]!.spliced === 0 && left >= queue[0]!.bytes.length) {
        left -= queue[0]!.bytes.length;
        const entry = queue.shift()!;
        if (entry.callback) process.nextTick(entry.callback, null);
      }
      if (left > 0) queue[0]!.bytes = queue[0]!.bytes.subarray(left);
      if (sent < total) break; // The kernel's buffer is full: wait until writable.
    }
    this.#update();
    if (queue.length === 0 && !this.destroyed) {
      // Unlike net.Socket, every emptied queue drains, whether or not write() returned false:
      // waiters that saw writableLength > 0 (whenDrained) are woken either way.
      process.nextTick(() => this.emit("drain"));
      if (this.writableEnded) this.#finish();
    }
  }

  /** The next `count` bytes of the splice pipe, read out to be sent; undefined if that failed. */
  #unsplice(count: number): Uint8Array | undefined {
    const bytes = new Uint8Array(count);
    for (let at = 0; at < count;) {
      const got = this.#loop.read(this.#pipe[0]!, bytes.subarray(at));
      if (got <= 0) {
        // Cannot happen (the bytes are in the pipe, whose ends are ours); not a silent loss.
        this.destroy(new SocketError(got < 0 ? -got : EIO, "read"));
        return undefined;
      }
      at += got;
    }
    return bytes;
  }

  // Removals change the `data` listener too (overridden rather than a `removeListener` listener:
  // one listener fewer to add per socket). `off` is its own property, an alias on the prototype.
  // deno-lint-ignore no-explicit-any
  override removeListener(event: string | symbol, listener: (...args: any[]) => void): this {
    if (event === "data") this.#dataListener = undefined;
    return super.removeListener(event, listener);
  }

  // deno-lint-ignore no-explicit-any
  override off(event: string | symbol, listener: (...args: any[]) => void): this {
    return this.removeListener(event, listener);
  }

  override removeAllListeners(event?: string | symbol): this {
    if (event === undefined || event === "data") this.#dataListener = undefined;
    return super.removeAllListeners(event);
  }

  #findDataListener(): DataListener {
    const listeners = this.rawListeners("data");
    // A `once` listener is here as its wrapper, which removes itself when called, as in emit.
    return this.#dataListener = listeners.length === 0
      ? "none"
      : listeners.length === 1
      ? listeners[0] as (chunk: Buffer) => void
      : "several";
  }

  /** Called by the loop with the events epoll reported for this socket. */
  ready(events: number, scratch: Uint8Array): void {
    if (this.destroyed) return;
    if ((events & EPOLLOUT) !== 0 || ((events & EPOLLERR) !== 0 && this.#queue.length > 0)) {
      this.#flush();
      if (this.destroyed) return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) === 0) return;
    if (this.#paused) {
      // Still in the set from before the pause (see #update): leave it until resumed.
      this.#update(true);
      return;
    }
    // While the peer is ahead, a sink's pipe takes the next 64 KiB without a copy. Otherwise,
    // after a large read, the next one goes straight into a buffer of its own (no copy); small
    // reads go through the loop's scratch buffer and are copied out at their size.
    const sink = this.#sink;
    let pipe = sink !== undefined && this.#nextRead === FULL_READ_SIZE ? sink.pipe() : -1;
    let got = 0;
    if (pipe >= 0) {
      if (!this.#spliceReceiveBuffer) {
        this.#spliceReceiveBuffer = true;
        this.#loop.setOption(this.fd, SOL_SOCKET, SO_RCVBUF, SPLICE_RECEIVE_BUFFER);
      }
      // One message per move, up to FULL_READ_SIZE per event while the client takes them at once.
      for (let moves = 1;; moves++) {
        got = this.#loop.splice(this.fd, pipe, READ_SIZE);
        if (got <= 0) break;
        this.bytesRead += got;
        this.#nextRead = got < LARGE_READ ? 0 : got >= READ_SIZE ? FULL_READ_SIZE : READ_SIZE;
        sink!.moved(got);
        if (got < READ_SIZE || moves === SPLICES_PER_EVENT || this.destroyed || this.#paused) {
          return;
        }
        pipe = sink!.pipe();
        if (pipe < 0) return;
      }
      // Refused rather than failed: this read and all later ones go as usual.
      if (got < 0 && this.#loop.refusesSplice(-got)) pipe = -1;
    }
    if (pipe < 0) {
      const listener = this.#dataListener ?? this.#findDataListener();
      // A borrowed region only for a chunk that goes to one listener now, never kept here.
      const region = typeof listener === "function" && this.#unclaimed.length === 0
        ? this.#borrowed
        : undefined;
      const size = this.#nextRead > 0 ? this.#nextRead : READ_SIZE;
      const into = region ?? (this.#nextRead > 0 ? new Uint8Array(size) : scratch);
      got = this.#loop.read(this.fd, into, size);
      if (got > 0) {
        this.bytesRead += got;
        this.#nextRead = got < LARGE_READ ? 0 : got >= READ_SIZE ? FULL_READ_SIZE : READ_SIZE;
        let chunk: Buffer;
        if (into !== scratch) chunk = Buffer.from(into.buffer, into.byteOffset, got);
        else {
          chunk = Buffer.allocUnsafe(got);
          chunk.set(scratch.subarray(0, got));
        }
        if (this.#unclaimed.length > 0 || listener === "none") this.#keepUnclaimed(chunk);
        else if (listener === "several") this.emit("data", chunk);
        else listener.call(this, chunk);
        return;
      }
    }
    if (got === 0) {
      this.#readEnded = true;
      this.readable = false;
      this.emit("end");
      // net.Socket without allowHalfOpen ends its side when the peer has ended.
      this.end();
      this.#closeIfDone();
      // Out of the set unless closed meanwhile (an exclusive descriptor's close does that).
      this.#update();
    } else if (-got !== EAGAIN && -got !== EINTR) {
      this.destroy(new SocketError(-got, pipe >= 0 ? "splice" : "read"));
    }
  }
}

/**
 * A listening TCP socket served by an {@link EpollLoop}: each poll that finds it readable accepts
 * up to {@link ACCEPT_BATCH} connections with `accept4(2)` and hands each descriptor on, so
 * accepting waits behind no runtime queue (docs/decisions.md, "Accepting on the epoll loop").
 */
export class FdListener implements Watched {
  readonly fd: number;
  readonly #loop: EpollLoop;
  readonly #onSocket: AcceptedSocket;
  readonly #onError: (message: string) => void;
  #registered = false;
  #closed = false;
  #failing = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** Connections accepted (tests, decisions.md figures). */
  accepted = 0;

  constructor(
    loop: EpollLoop,
    fd: number,
    onSocket: AcceptedSocket,
    onError: (message: string) => void,
  ) {
    this.#loop = loop;
    this.fd = fd;
    this.#onSocket = onSocket;
    this.#onError = onError;
    // Accepted sockets inherit both from the listening one on Linux (tests/epoll_test.ts checks):
    // two system calls once instead of two per connection.
    loop.setOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    loop.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    this.#watch();
  }

  /** Stops accepting and closes the descriptor; connections already accepted stay open. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    if (this.#registered) this.#loop.unregister(this);
    this.#registered = false;
    this.#loop.close(this.fd);
  }

  ready(): void {
    for (let taken = 0; taken < ACCEPT_BATCH && !this.#closed; taken++) {
      const fd = this.#loop.accept(this.fd);
      if (fd >= 0) {
        this.#failing = false;
        this.accepted++;
        this.#onSocket(fd, this.#loop.acceptedPeer(), ACCEPTED);
        continue;
      }
      const errno = -fd;
      if (errno === EINTR || errno === ECONNABORTED) continue;
      if (errno === EAGAIN) return;
      if (!this.#failing) {
        this.#onError(
          `accept failed: ${errnoName(errno)}; new clients wait in the queue meanwhile (for ` +
            "EMFILE or ENFILE raise the open-file limit: ulimit -n, or LimitNOFILE= in systemd)",
        );
      }
      this.#failing = true;
      // Level-triggered: the client is still queued and the next poll would report it at once.
      this.#loop.unregister(this);
      this.#registered = false;
      this.#retry = setTimeout(() => this.#watch(), ACCEPT_PAUSE_MS);
      return;
    }
  }

  #watch(): void {
    if (this.#closed || this.#registered) return;
    this.#loop.register(this, EPOLLIN, false);
    this.#registered = true;
  }
}

/** What an accepted descriptor is: only ours, with TCP_NODELAY and SO_KEEPALIVE on. */
const ACCEPTED: FdSocketOptions = { exclusive: true, noDelayKeepAlive: true };

/** Gets each connection an {@link FdListener} accepts, with what to adopt it with. */
export type AcceptedSocket = (
  fd: number,
  addresses: FdSocketAddresses,
  options: FdSocketOptions,
) => void;

/** One epoll set and the loop that serves it; see the module comment. */
export class EpollLoop {
  readonly #ffi: Epoll;
  readonly #epfd: number;
  readonly #wakeFd: number;
  readonly #sockets: (Watched | undefined)[] = [];
  readonly #events = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  readonly #waitEvents = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  readonly #eventsView = new DataView(this.#events.buffer);
  readonly #waitView = new DataView(this.#waitEvents.buffer);
  readonly #ctl = new Uint8Array(EVENT_SIZE);
  readonly #ctlView = new DataView(this.#ctl.buffer);
  readonly #scratch = new Uint8Array(READ_SIZE);
  readonly #option = new Uint8Array(4);
  readonly #wakeCount = new Uint8Array(8);
  /** `struct sockaddr_storage` and its length, filled by accept4. */
  readonly #peer = new Uint8Array(128);
  readonly #peerView = new DataView(this.#peer.buffer);
  readonly #peerLength = new Uint32Array(1);
  readonly #peerLengthBytes = new Uint8Array(this.#peerLength.buffer);
  readonly #errno: Deno.UnsafePointerView;
  /** `struct iovec[MAX_IOV]` for sendmsg. */
  readonly #iov = new BigUint64Array(MAX_IOV * 2);
  /** `struct msghdr` (56 bytes on 64-bit Linux) pointing at #iov; larger so it is off V8's heap. */
  readonly #message = new BigUint64Array(16);
  readonly #messageBytes = new Uint8Array(this.#message.buffer);
  #count = 0;
  #lastEvent = 0;
  /** 0: stopped, 1: a poll is scheduled, 2: waiting in a thread. */
  #state = 0;
  /** Waits in a thread now, and the most there ever were at once (tests: never above 1). */
  #waits = 0;
  mostWaits = 0;

  /** Why this process no longer splices: the errno name of the first refusal, if there was one. */
  spliceRefused: string | undefined;
  readonly #warn: (text: string) => void;

  /** `warn` gets the one line logged when the kernel refuses to splice. */
  constructor(ffi: Epoll, warn = (text: string) => getLog("proxy").warn(text)) {
    this.#ffi = ffi;
    this.#warn = warn;
    this.#errno = new Deno.UnsafePointerView(ffi.__errno_location()!);
    this.#epfd = ffi.epoll_create1(EPOLL_CLOEXEC);
    if (this.#epfd < 0) throw new SocketError(this.#errno.getInt32(), "epoll_create1");
    this.#wakeFd = ffi.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.#wakeFd < 0) throw new SocketError(this.#errno.getInt32(), "eventfd");
    this.#message[2] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#iov)));
    this.#ctlView.setUint32(0, EPOLLIN, true);
    this.#ctlView.setInt32(EVENT_DATA, this.#wakeFd, true);
    ffi.epoll_ctl(this.#epfd, EPOLL_CTL_ADD, this.#wakeFd, this.#ctl);
  }

  /** Sockets registered (reading or with a queue). */
  get size(): number {
    return this.#count;
  }

  /** A socket for the connected, non-blocking descriptor `fd`, which it now owns. */
  adopt(fd: number, addresses?: FdSocketAddresses, options?: FdSocketOptions): FdSocket {
    return new FdSocket(this, fd, addresses, options);
  }

  /**
   * Serves the listening, non-blocking descriptor `fd` (which it now owns): `onSocket` gets each
   * accepted connection's descriptor and peer address, `onError` a message when accepting fails.
   */
  listen(fd: number, onSocket: AcceptedSocket, onError: (message: string) => void): FdListener {
    return new FdListener(this, fd, onSocket, onError);
  }

  register(socket: Watched, events: number, modify: boolean): void {
    this.#ctlView.setUint32(0, events, true);
    this.#ctlView.setInt32(EVENT_DATA, socket.fd, true);
    this.#ffi.epoll_ctl(this.#epfd, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, socket.fd, this.#ctl);
    if (!modify) {
      this.#sockets[socket.fd] = socket;
      this.#count++;
      this.#schedule();
    }
  }

  /** Takes `socket` out of the set; `closing`: its close will (an exclusive descriptor's does). */
  unregister(socket: Watched, closing = false): void {
    if (!closing) this.#ffi.epoll_ctl(this.#epfd, EPOLL_CTL_DEL, socket.fd, this.#ctl);
    if (this.#sockets[socket.fd] === socket) this.#sockets[socket.fd] = undefined;
    this.#count--;
    if (this.#count === 0 && this.#state === 2) this.#wake();
  }

  /**
   * Bytes sent, or minus the errno; 0 when the kernel's buffer is full. `more`: more follows at
   * once (MSG_MORE), so the kernel waits for it before it sends a segment.
   */
  send(fd: number, bytes: Uint8Array, more = false): number {
    const flags = more ? MSG_NOSIGNAL | MSG_MORE : MSG_NOSIGNAL;
    const sent = this.#ffi.send(fd, bytes, BigInt(bytes.length), flags);
    if (sent >= 0) return sent;
    const errno = this.#errno.getInt32();
    return errno === EAGAIN || errno === EINTR ? 0 : -errno;
  }

  /**
   * Sends the first `count` queued chunks with one sendmsg (no copy): bytes sent, or minus the
   * errno; 0 when the kernel's buffer is full.
   */
  sendPieces(fd: number, queue: readonly { bytes: Uint8Array }[], count: number): number {
    const iov = this.#iov;
    for (let index = 0; index < count; index++) {
      const bytes = queue[index]!.bytes;
      const pointer = bytes.length === 0 ? null : Deno.UnsafePointer.of(bytes);
      iov[index * 2] = BigInt(Deno.UnsafePointer.value(pointer));
      iov[index * 2 + 1] = BigInt(bytes.length);
    }
    this.#message[3] = BigInt(count);
    const sent = this.#ffi.sendmsg(fd, this.#messageBytes, MSG_NOSIGNAL);
    if (sent >= 0) return sent;
    const errno = this.#errno.getInt32();
    return errno === EAGAIN || errno === EINTR ? 0 : -errno;
  }

  /** A connection from the listening `fd` (non-blocking), or minus the errno. */
  accept(fd: number): number {
    this.#peerLength[0] = this.#peer.length;
    const accepted = this.#ffi.accept4(
      fd,
      this.#peer,
      this.#peerLengthBytes,
      SOCK_NONBLOCK | SOCK_CLOEXEC,
    );
    return accepted >= 0 ? accepted : -this.#errno.getInt32();
  }

  /** The peer of the last {@link accept}, as `net.Socket` names it. */
  acceptedPeer(): FdSocketAddresses {
    const view = this.#peerView;
    const family = view.getUint16(0, true);
    const port = view.getUint16(2, false);
    if (family === AF_INET) {
      const address = `${this.#peer[4]}.${this.#peer[5]}.${this.#peer[6]}.${this.#peer[7]}`;
      return { remoteAddress: address, remotePort: port, remoteFamily: "IPv4" };
    }
    if (family === AF_INET6) {
      const address = formatIpv6(this.#peer.subarray(8, 24));
      return { remoteAddress: address, remotePort: port, remoteFamily: "IPv6" };
    }
    return {};
  }

  /**
   * Bytes read into `into` (at most `length`, never past its end; 0 at end of stream), or minus
   * the errno.
   */
  read(fd: number, into: Uint8Array, length = into.length): number {
    const got = this.#ffi.read(fd, into, BigInt(Math.min(length, into.length)));
    return got >= 0 ? got : -this.#errno.getInt32();
  }

  /**
   * Moves up to `length` bytes from `from` to `to` (one of them a pipe) in the kernel: bytes
   * moved, 0 at the end of `from`'s stream, or minus the errno (EAGAIN: nothing to move now).
   */
  splice(from: number, to: number, length: number): number {
    const moved = this.#ffi.splice(
      from,
      null,
      to,
      null,
      BigInt(length),
      SPLICE_F_MOVE | SPLICE_F_NONBLOCK,
    );
    return moved >= 0 ? moved : -this.#errno.getInt32();
  }

  /**
   * Whether `moved`, a splice's result, is a failure of the socket: an errno other than "nothing
   * to move now" (EAGAIN, EINTR) and other than a refusal ({@link refusesSplice}, which it notes).
   */
  spliceFailed(moved: number): boolean {
    return moved < 0 && -moved !== EAGAIN && -moved !== EINTR && !this.refusesSplice(-moved);
  }

  /**
   * Whether `errno`, from a splice, says the kernel will not splice here ({@link SPLICE_REFUSALS})
   * rather than that a socket failed. The first refusal turns splicing off for the process and is
   * logged once: bulk target data then goes by read and send, as before splicing.
   */
  refusesSplice(errno: number): boolean {
    if (!SPLICE_REFUSALS.has(errno)) return false;
    if (this.spliceRefused === undefined) {
      this.spliceRefused = errnoName(errno);
      this.#warn(
        `splice(2) refused (${this.spliceRefused}): bulk target data now goes to clients by ` +
          "read and send, as for TLS clients; nothing was lost, it costs more CPU per byte. " +
          "Nothing to do, unless this kernel or sandbox (seccomp) should allow splicing sockets.",
      );
    }
    return true;
  }

  /** A non-blocking pipe of {@link PIPE_SIZE} for splicing, [read end, write end]; [-1] if none. */
  pipe(): number[] {
    const ends = new Int32Array(2);
    if (this.#ffi.pipe2(new Uint8Array(ends.buffer), O_NONBLOCK | O_CLOEXEC) < 0) return [-1];
    // Best effort: a smaller pipe only moves less at a time.
    this.#ffi.fcntl(ends[0]!, F_SETPIPE_SZ, PIPE_SIZE);
    return [ends[0]!, ends[1]!];
  }

  shutdownWrite(fd: number): void {
    this.#ffi.shutdown(fd, SHUT_WR);
  }

  close(fd: number): void {
    this.#ffi.close(fd);
  }

  setOption(fd: number, level: number, name: number, value: number): void {
    new DataView(this.#option.buffer).setInt32(0, value, true);
    this.#ffi.setsockopt(fd, level, name, this.#option, 4);
  }

  /**
   * Schedules one poll unless one is scheduled or a thread waits already. Registering a socket
   * while events are dispatched used to schedule a second poll next to the loop's own, and each
   * extra poll ended in another thread waiting: they piled up (30 seen) until the runtime's
   * blocking threads were used up and `node:fs` calls waited for a new connection.
   */
  #schedule(): void {
    if (this.#state !== 0) return;
    this.#state = 1;
    setImmediate(this.#poll);
  }

  #wake(): void {
    const one = new Uint8Array(8);
    one[0] = 1;
    this.#ffi.write(this.#wakeFd, one, 8n);
  }

  readonly #poll = (): void => {
    this.#state = 0;
    if (this.#count === 0) return;
    const count = this.#ffi.epoll_wait(this.#epfd, this.#events, MAX_EVENTS, 0);
    if (count > 0) {
      this.#dispatch(this.#eventsView, count);
      this.#lastEvent = performance.now();
      if (this.#count > 0) this.#schedule();
      return;
    }
    if (performance.now() - this.#lastEvent < SPIN_MS) return this.#schedule();
    this.#state = 2;
    this.#waits++;
    this.mostWaits = Math.max(this.mostWaits, this.#waits);
    this.#ffi.epoll_wait_blocking(this.#epfd, this.#waitEvents, MAX_EVENTS, -1).then(
      (ready) => {
        this.#state = 0;
        this.#waits--;
        if (ready > 0) this.#dispatch(this.#waitView, ready);
        this.#lastEvent = performance.now();
        if (this.#count > 0) this.#schedule();
      },
    );
  };

  #dispatch(view: DataView, count: number): void {
    const sockets = this.#sockets;
    for (let index = 0; index < count; index++) {
      const base = index * EVENT_SIZE;
      const events = view.getUint32(base, true);
      const fd = view.getInt32(base + EVENT_DATA, true);
      if (fd === this.#wakeFd) {
        this.#ffi.read(this.#wakeFd, this.#wakeCount, 8n);
        continue;
      }
      sockets[fd]?.ready(events, this.#scratch);
    }
  }
}

/**
 * An IPv6 address as `net.Socket` reports it: lower-case groups, the longest run of two or more
 * zero groups as `::`, and an IPv4-mapped address as `::ffff:a.b.c.d`.
 */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let index = 0; index < 16; index += 2) groups.push((bytes[index]! << 8) | bytes[index + 1]!);
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8;) {
    if (groups[start] !== 0) {
      start++;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = (part: number[]) => part.map((group) => group.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

let loaded: EpollLoop | null | undefined;

/**
 * The process's epoll loop, or `undefined` where it cannot be used: not Linux, no FFI permission,
 * or no `libc.so.6` (musl). Decided once per process.
 */
export function openEpoll(): EpollLoop | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  if (Deno.build.os !== "linux") return undefined;
  if (Deno.permissions.querySync?.({ name: "ffi" }).state !== "granted") return undefined;
  try {
    loaded = new EpollLoop(Deno.dlopen("libc.so.6", EPOLL_SYMBOLS).symbols);
  } catch {
    return undefined;
  }
  return loaded;
}

/** The raw descriptor behind a `node:net` socket (a duplicate), or undefined. */
export function duplicateDescriptor(socket: object): number | undefined {
  const handle = (socket as { _handle?: unknown })._handle as
    | { fdForIpc?: () => number }
    | null
    | undefined;
  if (typeof handle?.fdForIpc !== "function") return undefined;
  try {
    const fd = handle.fdForIpc();
    return typeof fd === "number" && fd >= 0 ? fd : undefined;
  } catch {
    return undefined;
  }
}
