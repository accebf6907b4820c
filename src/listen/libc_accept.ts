/**
 * Accepts from a `node:net` TCP listener's socket through libc (FFI) on a timer while the proxy has
 * connections open, so new clients are taken in even when busy sessions saturate the core.
 *
 * Why: in Deno 2.9.6 the listener's own accept runs in the runtime's I/O phase and needs a share
 * of tokio's cooperative budget, which busy sessions ahead of it spend on every event-loop turn
 * (the same starvation as the target connects of src/targets/libc_dial.ts): new clients waited
 * seconds, one past 30 s, though the kernel had completed their handshakes. Timers run before that
 * phase, so a sweep every {@link SWEEP_MS} ms takes whatever waits in the accept queue with
 * `accept4(2)` on a duplicate of the listener's descriptor and hands each one, adopted by
 * `new net.Socket({ fd })`, to the listener's connection handler. Both accept from one queue; the
 * kernel gives each connection to one of them. With no connection open nothing is swept (an idle
 * proxy is not saturated, and `node:net` accepts the first client).
 *
 * Used only where `node:net` still accepts: with `--proxy-protocol`; otherwise the epoll loop
 * accepts (src/ops/epoll.ts `FdListener`) and nothing waits behind the runtime's queue.
 *
 * @module
 */

import net from "node:net";
import {
  EINTR,
  errnoName,
  lastErrno,
  type Libc,
  openLibc,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
} from "../ops/libc.ts";

/** How often (ms) the accept queue is swept while connections are open. */
export const SWEEP_MS = 10;
/** Most connections taken in one sweep, so a flood cannot hold the event loop. */
const SWEEP_LIMIT = 64;
const EAGAIN = 11;
const ECONNABORTED = 103;

/** The part of a `node:net` server handle used here (Deno's TCPWrap). */
interface ListenHandle {
  fdForIpc?: () => number;
}

/** Sweeps one listener's accept queue; see the module's description. */
export class LibcAcceptor {
  readonly #libc: Libc;
  readonly #fd: number;
  readonly #onSocket: (socket: net.Socket) => void;
  readonly #onError: (message: string) => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** Connections this acceptor took (tests, decisions.md figures). */
  accepted = 0;

  private constructor(
    libc: Libc,
    fd: number,
    onSocket: (socket: net.Socket) => void,
    onError: (message: string) => void,
  ) {
    this.#libc = libc;
    this.#fd = fd;
    this.#onSocket = onSocket;
    this.#onError = onError;
  }

  /**
   * An acceptor for `server` (listening, TCP), or `undefined` when libc cannot be used here or
   * the runtime does not expose the listener's descriptor. `onSocket` gets each accepted socket,
   * `onError` a message for a failure other than an empty queue.
   */
  static open(
    server: net.Server,
    onSocket: (socket: net.Socket) => void,
    onError: (message: string) => void,
  ): LibcAcceptor | undefined {
    const libc = openLibc();
    const handle = (server as unknown as { _handle?: ListenHandle })._handle;
    if (libc === undefined || typeof handle?.fdForIpc !== "function") return undefined;
    const fd = handle.fdForIpc();
    if (fd < 0) return undefined;
    return new LibcAcceptor(libc, fd, onSocket, onError);
  }

  /** Sweeps while `active` (connections are open); stops sweeping otherwise. */
  setActive(active: boolean): void {
    if (this.#closed) return;
    if (active && this.#timer === undefined) {
      this.#timer = setInterval(this.#sweep, SWEEP_MS);
    } else if (!active && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Stops sweeping and closes the duplicate descriptor (the listener's own stays open). */
  close(): void {
    if (this.#closed) return;
    this.setActive(false);
    this.#closed = true;
    this.#libc.close(this.#fd);
  }

  readonly #sweep = (): void => {
    for (let taken = 0; taken < SWEEP_LIMIT && !this.#closed; taken++) {
      const fd = this.#libc.accept4(this.#fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const errno = lastErrno(this.#libc);
        if (errno === EINTR || errno === ECONNABORTED) continue;
        if (errno !== EAGAIN) {
          this.#onError(
            `accept through libc failed: ${errnoName(errno)} (node:net keeps accepting; for ` +
              "EMFILE or ENFILE raise the open-file limit: ulimit -n, or LimitNOFILE= in systemd)",
          );
        }
        return;
      }
      let socket: net.Socket;
      try {
        socket = new net.Socket({ fd, readable: true, writable: true });
      } catch (error) {
        this.#libc.close(fd);
        this.#onError(`could not adopt an accepted connection: ${String(error)}`);
        return;
      }
      this.accepted++;
      this.#onSocket(socket);
    }
  };
}
