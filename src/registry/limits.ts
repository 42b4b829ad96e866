/**
 * Limits on registry transfers, so that a server can stall Seal only for a bounded time: an
 * overall deadline per operation, and a minimum progress rate in the manner of curl's low-speed
 * limit. The rate is counted only while Seal waits on the server (for a response, for the next
 * bytes of its body, for a socket that does not accept more of an upload), never while Seal's
 * own side is busy: a copy to a slow destination reads its source slowly, and that is not the
 * source's fault.
 */
import { RegistryError } from './errors.ts';

/** Fewer than `bytes` moved within `ms` of waiting on the server fails the exchange. */
export interface LowSpeed {
  bytes: number;
  ms: number;
}

/**
 * The default: 16 KiB per minute of waiting. Any working network does far better, and a server
 * trickling a byte every few seconds is cut off within a minute; the request is then tried once
 * more on a fresh connection (a download resumed where it stopped), and a second stall fails it.
 */
export const DEFAULT_LOW_SPEED: LowSpeed = { bytes: 16 << 10, ms: 60_000 };

/** A monotonic clock in milliseconds (`performance.now()`), the unit deadlines are given in. */
export const now = (): number => performance.now();

/** The time and timers a watch uses: the real ones, or a test's own (no test waits on the wall clock). */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): { unref(): unknown };
  clearTimeout(handle: { unref(): unknown } | undefined): void;
}

const REAL_CLOCK: Clock = {
  now,
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout | undefined),
};

export function deadlineError(what: string): RegistryError {
  return new RegistryError('TIMEOUT', `${what}: not done within the deadline (--timeout)`, {
    subject: what,
  });
}

function seconds(ms: number): string {
  return ms >= 1000 ? `${+(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/**
 * Watches one HTTP exchange: `waiting()` when Seal waits on the server, `idle()` when it does
 * not, `moved(n)` for bytes received or taken by the socket. The current window closes once
 * `bytes` have moved; if its waiting time reaches `ms` first, or the deadline passes, `abort` is
 * called once with a TIMEOUT error and the watch stops.
 */
export class TransferWatch {
  readonly #lowSpeed: LowSpeed | undefined;
  readonly #what: string;
  readonly #abort: (error: RegistryError) => void;
  readonly #clock: Clock;
  #deadlineTimer: { unref(): unknown } | undefined;
  #stallTimer: { unref(): unknown } | undefined;
  /** Bytes moved in the current window. */
  #bytes = 0;
  /** Milliseconds spent waiting in the current window, the wait under way excluded. */
  #waited = 0;
  /** When the wait under way began. */
  #since: number | undefined;
  #stopped = false;
  /** Whether the request has a connection: before, it waits in Seal's own queue, not on the server. */
  #started = false;
  /** Whether Seal waits on the server (the clock runs once the request has a connection). */
  #wanted = false;
  /** The error the watch aborted the exchange with, if it did. */
  error: RegistryError | undefined;

  constructor(
    what: string,
    limits: { deadline?: number | undefined; lowSpeed?: LowSpeed | undefined },
    abort: (error: RegistryError) => void,
    clock: Clock = REAL_CLOCK,
  ) {
    this.#what = what;
    this.#lowSpeed = limits.lowSpeed;
    this.#abort = abort;
    this.#clock = clock;
    if (limits.deadline !== undefined) {
      this.#deadlineTimer = clock.setTimeout(
        () => this.#fire(deadlineError(what)),
        Math.max(0, limits.deadline - clock.now()),
      );
      this.#deadlineTimer.unref();
    }
  }

  /** The request got its connection: from now on, waiting counts. */
  started(): void {
    this.#started = true;
    if (this.#wanted) this.waiting();
  }

  /** Seal is waiting on the server: the window's clock runs. */
  waiting(): void {
    this.#wanted = true;
    const low = this.#lowSpeed;
    if (!low || !this.#started || this.#stopped || this.#since !== undefined) return;
    this.#since = this.#clock.now();
    this.#stallTimer = this.#clock.setTimeout(
      () =>
        this.#fire(
          new RegistryError(
            'TIMEOUT',
            `${this.#what}: fewer than ${low.bytes} bytes in ${seconds(low.ms)} of waiting on the server (--low-speed)`,
            { subject: this.#what },
          ),
        ),
      Math.max(0, low.ms - this.#waited),
    );
    this.#stallTimer.unref();
  }

  /** Seal's own side is busy (its consumer or its producer): the clock stops. */
  idle(): void {
    this.#wanted = false;
    if (this.#since === undefined) return;
    this.#waited += this.#clock.now() - this.#since;
    this.#since = undefined;
    this.#clock.clearTimeout(this.#stallTimer);
  }

  /** `n` bytes came from the server or were taken by its socket. */
  moved(n: number): void {
    const low = this.#lowSpeed;
    if (!low || this.#stopped) return;
    this.#bytes += n;
    if (this.#bytes < low.bytes) return;
    // The window is fulfilled: a new one starts, with its clock running if a wait is under way.
    const wasWaiting = this.#wanted;
    this.idle();
    this.#bytes = 0;
    this.#waited = 0;
    if (wasWaiting) this.waiting();
  }

  /** The exchange is over: no timer remains. */
  stop(): void {
    this.idle();
    this.#stopped = true;
    this.#clock.clearTimeout(this.#deadlineTimer);
  }

  #fire(error: RegistryError): void {
    if (this.#stopped) return;
    this.stop();
    this.error = error;
    this.#abort(error);
  }
}
