/**
 * A small client of QMP, qemu's JSON control protocol, over the Unix socket a machine was started
 * with (`-qmp unix:PATH,server=on,wait=off`): the greeting, capability negotiation, then one
 * command at a time (`system_powerdown`, `quit`, `query-status`). Messages are JSON objects, one
 * per line; asynchronous events between them are skipped. Lines are bounded, so a peer that is
 * not qemu cannot make this grow without end.
 */
import { createConnection, type Socket } from 'node:net';
import { MachineError } from './swtpm.ts';

const MAX_LINE = 1 << 20;

export class Qmp {
  #socket: Socket;
  #buffer = '';
  #lines: string[] = [];
  #waiting: ((line: string | Error) => void) | undefined;
  #closed: Error | undefined;
  readonly #path: string;
  readonly #timeoutMs: number;

  private constructor(socket: Socket, path: string, timeoutMs: number) {
    this.#socket = socket;
    this.#path = path;
    this.#timeoutMs = timeoutMs;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.#take(text));
    socket.on('error', (error) => this.#end(this.#fail(`QMP socket: ${error.message}`)));
    socket.on('close', () => this.#end(this.#fail('qemu closed the QMP connection')));
  }

  /** Connects to `path` and negotiates capabilities; `timeoutMs` bounds each exchange. */
  static async connect(path: string, timeoutMs = 5_000): Promise<Qmp> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection({ path });
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (error) =>
        reject(
          new MachineError('MACHINE_QMP', `cannot reach qemu at ${path}: ${error.message}`, {
            subject: path,
          }),
        ),
      );
    });
    const qmp = new Qmp(socket, path, timeoutMs);
    try {
      const greeting = await qmp.#next();
      if (!greeting || typeof greeting !== 'object' || !('QMP' in greeting))
        throw qmp.#fail('the peer did not greet as QMP does');
      await qmp.execute('qmp_capabilities');
      return qmp;
    } catch (error) {
      qmp.close();
      throw error;
    }
  }

  /** Runs one command and returns its `return` value; an `error` answer throws MACHINE_QMP. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    this.#socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
    for (;;) {
      const message = await this.#next();
      if (message && typeof message === 'object' && !Array.isArray(message)) {
        if ('event' in message) continue;
        if ('return' in message) return (message as { return: unknown }).return;
        if ('error' in message) {
          const e = (message as { error: { class?: unknown; desc?: unknown } }).error;
          throw this.#fail(`${command}: ${String(e?.desc ?? e?.class ?? 'failed')}`);
        }
      }
      throw this.#fail(`${command}: an answer that is not QMP`);
    }
  }

  close(): void {
    this.#socket.destroy();
  }

  #fail(message: string): MachineError {
    return new MachineError('MACHINE_QMP', `${this.#path}: ${message}`, { subject: this.#path });
  }

  #take(text: string): void {
    this.#buffer += text;
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n')) {
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line) this.#deliver(line);
    }
    if (this.#buffer.length > MAX_LINE) {
      this.#end(this.#fail(`a QMP message longer than ${MAX_LINE} bytes`));
      this.#socket.destroy();
    }
  }

  #deliver(line: string): void {
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      waiting(line);
    } else {
      this.#lines.push(line);
    }
  }

  #end(error: MachineError): void {
    if (this.#closed) return;
    this.#closed = error;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.(error);
  }

  /** The next message, parsed. */
  async #next(): Promise<unknown> {
    const line =
      this.#lines.shift() ??
      (await new Promise<string | Error>((resolve) => {
        if (this.#closed) return resolve(this.#closed);
        const timer = setTimeout(() => {
          this.#waiting = undefined;
          resolve(this.#fail(`no answer within ${this.#timeoutMs} ms`));
        }, this.#timeoutMs);
        this.#waiting = (value) => {
          clearTimeout(timer);
          resolve(value);
        };
      }));
    if (line instanceof Error) throw line;
    try {
      return JSON.parse(line);
    } catch {
      throw this.#fail('a QMP message that is not JSON');
    }
  }
}
