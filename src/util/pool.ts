/**
 * A small worker-thread pool shared by every CPU-heavy module (hashing, compression).
 * A task names an exported function of a module by URL; the worker imports the module once
 * and calls the function, so modules offload pure functions without a worker script of their own.
 */
import { availableParallelism } from 'node:os';
import { type Transferable, Worker } from 'node:worker_threads';
import { sourceUrl } from './paths.ts';

interface Task {
  id: number;
  module: string;
  fn: string;
  args: unknown[];
  transfer: Transferable[];
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

interface Slot {
  worker: Worker;
  busy: Task | undefined;
  /** Ends the worker once it has been idle for a while. */
  idle?: NodeJS.Timeout;
}

/**
 * An idle worker is ended after this long: a worker holds a JavaScript heap of its own and what
 * its modules keep, which a long-running process (the device agent) should give back between
 * bursts of work. A new task starts a new worker.
 */
const IDLE_MS = 3000;

const workerUrl = sourceUrl('util/pool-worker.ts');

export class WorkerPool {
  readonly size: number;
  readonly #idleMs: number;
  #slots: Slot[] = [];
  #queue: Task[] = [];
  #nextId = 0;
  #closed = false;

  constructor(size = defaultPoolSize(), options: { idleMs?: number } = {}) {
    this.size = Math.max(1, size);
    this.#idleMs = options.idleMs ?? IDLE_MS;
  }

  /** Workers running now, busy or idle. */
  get workers(): number {
    return this.#slots.length;
  }

  /** Runs `fn` exported by `module` in a worker with `args` (structured-cloned; `transfer` moved). */
  run<T>(module: URL | string, fn: string, args: unknown[], transfer: Transferable[] = []): Promise<T> {
    if (this.#closed) return Promise.reject(new Error('worker pool is closed'));
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({
        id: this.#nextId++,
        module: String(module),
        fn,
        args,
        transfer,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.#pump();
    });
  }

  /** Number of tasks queued or running. */
  get pending(): number {
    return this.#queue.length + this.#slots.filter((s) => s.busy).length;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const slots = this.#slots;
    this.#slots = [];
    for (const s of slots) clearTimeout(s.idle);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      let slot = this.#slots.find((s) => !s.busy);
      if (!slot && this.#slots.length < this.size) slot = this.#spawn();
      if (!slot) return;
      const task = this.#queue.shift()!;
      clearTimeout(slot.idle);
      slot.idle = undefined;
      slot.busy = task;
      // A busy worker keeps the process alive; an idle one does not.
      slot.worker.ref();
      slot.worker.postMessage(
        { id: task.id, module: task.module, fn: task.fn, args: task.args },
        task.transfer,
      );
    }
  }

  #spawn(): Slot {
    const worker = new Worker(workerUrl);
    const slot: Slot = { worker, busy: undefined };
    worker.on('message', (msg: { id: number; ok: boolean; value?: unknown; error?: unknown }) => {
      const task = slot.busy;
      slot.busy = undefined;
      worker.unref();
      if (task && task.id === msg.id) {
        if (msg.ok) task.resolve(msg.value);
        else task.reject(msg.error);
      }
      this.#pump();
      if (!slot.busy) slot.idle = setTimeout(() => this.#retire(slot), this.#idleMs).unref();
    });
    worker.on('error', (err) => {
      const task = slot.busy;
      slot.busy = undefined;
      clearTimeout(slot.idle);
      this.#slots = this.#slots.filter((s) => s !== slot);
      task?.reject(err);
      this.#pump();
    });
    // Unref'd last: adding a 'message' listener refs the worker's port again.
    worker.unref();
    this.#slots.push(slot);
    return slot;
  }

  #retire(slot: Slot): void {
    if (slot.busy || !this.#slots.includes(slot)) return;
    this.#slots = this.#slots.filter((s) => s !== slot);
    void slot.worker.terminate();
  }
}

export function defaultPoolSize(): number {
  const env = Number(process.env.SEAL_THREADS);
  return Number.isInteger(env) && env > 0 ? env : availableParallelism();
}

let shared: WorkerPool | undefined;

/** The process-wide pool; its workers are unref'd so an idle pool never keeps the process alive. */
export function sharedPool(): WorkerPool {
  shared ??= new WorkerPool();
  return shared;
}
