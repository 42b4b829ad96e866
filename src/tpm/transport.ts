/**
 * How command bytes reach a TPM. A transport sends one whole command and returns one whole
 * response; it knows nothing of sessions or structures.
 *   /dev/tpmrm0, /dev/tpm0   the kernel's character devices: write the command, read the
 *                            response in one read of at least 4096 bytes
 *   swtpm:HOST:PORT          swtpm's TCP server: raw commands on PORT, its control channel on PORT+1
 *   swtpm:unix:PATH          swtpm's Unix socket server: raw commands on PATH, the control
 *                            channel beside it (PATH with `.sock` replaced by `.ctrl`, else PATH.ctrl)
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { createConnection, isIP, type Socket } from 'node:net';
import { TpmError } from './errors.ts';

export interface TpmTransport {
  /** The address it was opened with, for messages. */
  readonly address: string;
  /** Sends one command and resolves with the whole response. Calls are serialised. */
  send(command: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/** The largest response accepted from any transport (TPMs answer at most a few KiB). */
export const MAX_RESPONSE = 65_536;
/** The read size for the kernel devices (the kernel wants one read of the whole response). */
const DEVICE_READ = 8192;

export type TpmAddress =
  | { kind: 'device'; path: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string; control: string };

export const DEFAULT_TPM = '/dev/tpmrm0';

export function parseTpmAddress(spec: string): TpmAddress {
  const bad = (why: string): never => {
    throw new TpmError(
      'TPM_ADDRESS',
      `--tpm ${JSON.stringify(spec)}: ${why} (expected a device path such as /dev/tpmrm0, swtpm:HOST:PORT or swtpm:unix:PATH)`,
      { subject: spec },
    );
  };
  if (spec.startsWith('/')) return { kind: 'device', path: spec };
  if (spec.startsWith('swtpm:unix:')) {
    const path = spec.slice('swtpm:unix:'.length);
    if (!path) bad('no socket path');
    const control = path.endsWith('.sock') ? `${path.slice(0, -5)}.ctrl` : `${path}.ctrl`;
    return { kind: 'unix', path, control };
  }
  if (spec.startsWith('swtpm:')) {
    const rest = spec.slice('swtpm:'.length);
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
    if (!m) return bad('not HOST:PORT');
    const host = (m[1] ?? m[2])!;
    const port = Number(m[3]);
    if (port < 1 || port > 65534) bad(`port ${port} out of range`);
    if (m[1] && isIP(host) !== 6) bad(`${host} is not an IPv6 address`);
    return { kind: 'tcp', host, port };
  }
  return bad('unknown form');
}

/** Checks a response's header against its length: tag, then a size that must be the whole of it. */
export function checkFraming(response: Buffer, address: string): void {
  if (response.length < 10)
    throw new TpmError(
      'TPM_MALFORMED',
      `${address}: response of ${response.length} bytes is shorter than a header`,
      {
        subject: address,
      },
    );
  const size = response.readUInt32BE(2);
  if (size !== response.length)
    throw new TpmError(
      'TPM_MALFORMED',
      `${address}: response header says ${size} bytes, ${response.length} came`,
      {
        subject: address,
      },
    );
}

/** Runs sends one after the other. */
class Queue {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(task, task);
    this.#tail = next.catch(() => {});
    return next;
  }
}

/** /dev/tpmrm0 or /dev/tpm0. */
export class DeviceTransport implements TpmTransport {
  readonly address: string;
  #handle: FileHandle;
  #queue = new Queue();

  private constructor(address: string, handle: FileHandle) {
    this.address = address;
    this.#handle = handle;
  }

  static async open(path: string): Promise<DeviceTransport> {
    try {
      return new DeviceTransport(path, await open(path, constants.O_RDWR));
    } catch (error) {
      throw new TpmError('TPM_TRANSPORT', `cannot open ${path}: ${(error as Error).message}`, {
        subject: path,
        cause: error,
      });
    }
  }

  send(command: Buffer): Promise<Buffer> {
    return this.#queue.run(async () => {
      try {
        const { bytesWritten } = await this.#handle.write(command, 0, command.length);
        if (bytesWritten !== command.length)
          throw new Error(`wrote ${bytesWritten} of ${command.length} bytes`);
        const buffer = Buffer.alloc(DEVICE_READ);
        const { bytesRead } = await this.#handle.read(buffer, 0, buffer.length, null);
        const response = buffer.subarray(0, bytesRead);
        checkFraming(response, this.address);
        return response;
      } catch (error) {
        if (error instanceof TpmError) throw error;
        throw new TpmError('TPM_TRANSPORT', `${this.address}: ${(error as Error).message}`, {
          subject: this.address,
          cause: error,
        });
      }
    });
  }

  async close(): Promise<void> {
    await this.#handle.close().catch(() => {});
  }
}

type SocketTarget = { host: string; port: number } | { path: string };

function connect(target: SocketTarget, address: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(target as never);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new TpmError('TPM_TRANSPORT', `${address}: no connection after ${timeoutMs} ms`, {
          subject: address,
        }),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay?.(true);
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(
        new TpmError('TPM_TRANSPORT', `${address}: ${error.message}`, { subject: address, cause: error }),
      );
    });
  });
}

/**
 * Reads exactly one framed message from a socket: `expected(bytes so far)` returns the whole
 * length once it is known (or undefined). Fails on close, error, timeout or excess bytes.
 */
function readMessage(
  socket: Socket,
  address: string,
  timeoutMs: number,
  expected: (head: Buffer) => number | undefined,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const done = (error: TpmError | undefined, value?: Buffer) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (error) {
        socket.destroy();
        reject(error);
      } else resolve(value!);
    };
    const fail = (message: string, code: 'TPM_TRANSPORT' | 'TPM_MALFORMED' = 'TPM_TRANSPORT') =>
      done(new TpmError(code, `${address}: ${message}`, { subject: address }));
    const onData = (d: Buffer) => {
      chunks.push(d);
      length += d.length;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(all);
      let want: number | undefined;
      try {
        want = expected(all);
      } catch (error) {
        return done(error as TpmError);
      }
      if (want === undefined) return;
      if (length > want) return fail(`${length - want} bytes more than the message`, 'TPM_MALFORMED');
      if (length === want) done(undefined, all);
    };
    const onClose = () => fail('connection closed before a whole response came');
    const onError = (error: Error) => fail(error.message);
    const timer = setTimeout(() => fail(`no response after ${timeoutMs} ms`), timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
  });
}

function responseLength(address: string): (head: Buffer) => number | undefined {
  return (head) => {
    if (head.length < 6) return undefined;
    const size = head.readUInt32BE(2);
    if (size < 10 || size > MAX_RESPONSE)
      throw new TpmError('TPM_MALFORMED', `${address}: response header says ${size} bytes`, {
        subject: address,
      });
    return size;
  };
}

export interface SocketTransportOptions {
  /** How long one command may take (RSA key generation can take long on real TPMs). Default 120 s. */
  timeoutMs?: number;
}

/** swtpm's command channel: raw command and response bytes over TCP or a Unix socket. */
export class SocketTransport implements TpmTransport {
  readonly address: string;
  readonly control: SwtpmControl;
  #target: SocketTarget;
  #socket: Socket | undefined;
  #timeoutMs: number;
  #queue = new Queue();

  constructor(
    address: string,
    target: SocketTarget,
    control: SwtpmControl,
    options: SocketTransportOptions = {},
  ) {
    this.address = address;
    this.#target = target;
    this.control = control;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
  }

  send(command: Buffer): Promise<Buffer> {
    return this.#queue.run(async () => {
      if (!this.#socket || this.#socket.destroyed)
        this.#socket = await connect(this.#target, this.address, this.#timeoutMs);
      const socket = this.#socket;
      const reading = readMessage(socket, this.address, this.#timeoutMs, responseLength(this.address));
      socket.write(command);
      try {
        return await reading;
      } catch (error) {
        this.#socket = undefined;
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket && !socket.destroyed) await new Promise<void>((resolve) => socket.end(resolve));
  }
}

/** swtpm control-channel commands (swtpm's `tpm_ioctl.h`). */
const CONTROL = {
  GET_CAPABILITY: 1,
  INIT: 2,
  SHUTDOWN: 3,
  SET_LOCALITY: 5,
  STOP: 0x0e,
} as const;

/**
 * swtpm's control channel: power the TPM on (CMD_INIT, a _TPM_Init: the PCRs reset and the TPM
 * wants TPM2_Startup), off (CMD_STOP), set the locality of later commands, end the process.
 */
export class SwtpmControl {
  readonly address: string;
  #target: SocketTarget;
  #timeoutMs: number;

  constructor(address: string, target: SocketTarget, timeoutMs = 30_000) {
    this.address = address;
    this.#target = target;
    this.#timeoutMs = timeoutMs;
  }

  async #call(code: number, body: Buffer, responseSize: number): Promise<Buffer> {
    const socket = await connect(this.#target, this.address, this.#timeoutMs);
    try {
      const request = Buffer.alloc(4 + body.length);
      request.writeUInt32BE(code);
      body.copy(request, 4);
      const reading = readMessage(socket, this.address, this.#timeoutMs, () => responseSize);
      socket.write(request);
      const response = await reading;
      const result = response.readUInt32BE(0);
      if (result !== 0)
        throw new TpmError(
          'TPM_TRANSPORT',
          `${this.address}: control command ${code} failed with 0x${result.toString(16)}`,
          {
            subject: this.address,
          },
        );
      return response;
    } finally {
      socket.destroy();
    }
  }

  /** The swtpm capability bits (PTM_CAP_*). */
  async capabilities(): Promise<number> {
    return (await this.#call(CONTROL.GET_CAPABILITY, Buffer.alloc(0), 8)).readUInt32BE(4);
  }

  /** Power on (or reset): _TPM_Init. The TPM then needs TPM2_Startup. */
  async init({ deleteVolatile = false } = {}): Promise<void> {
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(deleteVolatile ? 1 : 0);
    await this.#call(CONTROL.INIT, flags, 4);
  }

  /** Power off (the process keeps running; `init` powers on again). */
  async stop(): Promise<void> {
    await this.#call(CONTROL.STOP, Buffer.alloc(0), 4);
  }

  /** The locality (0-4) of the commands that follow. */
  async setLocality(locality: number): Promise<void> {
    if (!Number.isInteger(locality) || locality < 0 || locality > 4)
      throw new TpmError('TPM_INVALID_ARGUMENT', `locality ${locality} is not 0-4`);
    await this.#call(CONTROL.SET_LOCALITY, Buffer.from([locality]), 4);
  }

  /** Ends the swtpm process. */
  async shutdown(): Promise<void> {
    await this.#call(CONTROL.SHUTDOWN, Buffer.alloc(0), 4);
  }
}

/** Opens the transport an address names. */
export async function openTransport(
  spec: string,
  options: SocketTransportOptions = {},
): Promise<TpmTransport> {
  const address = parseTpmAddress(spec);
  switch (address.kind) {
    case 'device':
      return DeviceTransport.open(address.path);
    case 'tcp': {
      const control = new SwtpmControl(`${spec} (control)`, { host: address.host, port: address.port + 1 });
      return new SocketTransport(spec, { host: address.host, port: address.port }, control, options);
    }
    case 'unix': {
      const control = new SwtpmControl(`${address.control}`, { path: address.control });
      return new SocketTransport(spec, { path: address.path }, control, options);
    }
  }
}

/** A transport that keeps every command and response, for tests, benchmarks and audits. */
export class RecordingTransport implements TpmTransport {
  readonly inner: TpmTransport;
  readonly exchanges: { command: Buffer; response: Buffer }[] = [];

  constructor(inner: TpmTransport) {
    this.inner = inner;
  }

  get address(): string {
    return this.inner.address;
  }

  async send(command: Buffer): Promise<Buffer> {
    const response = await this.inner.send(command);
    this.exchanges.push({ command: Buffer.from(command), response: Buffer.from(response) });
    return response;
  }

  /** Command codes sent, in order. */
  get commandCodes(): number[] {
    return this.exchanges.map((e) => e.command.readUInt32BE(6));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
