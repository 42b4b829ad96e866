/**
 * A software TPM (swtpm) as a child process: the TPM of a Seal VM, and of the tests and the factory
 * tooling that talk to it directly. swtpm's own `--daemon` mode is not used (it failed its
 * CMD_INIT here); the process lives as long as this object, and its state directory persists.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { SealError } from '../errors.ts';
import { openTransport, SocketTransport, Tpm } from '../tpm/index.ts';

export type MachineErrorCode =
  | 'MACHINE_SWTPM'
  | 'MACHINE_QEMU'
  | 'MACHINE_INVALID_OPTION'
  | 'MACHINE_INSTALL';

export class MachineError extends SealError<MachineErrorCode> {}

export interface SwtpmOptions {
  /** Where the TPM's persistent state lives (created if missing). */
  stateDir: string;
  /**
   * `tcp`: command and control channels on two consecutive loopback ports, TPM started
   * (`swtpm:127.0.0.1:PORT` for Seal's client). `unix`: both on Unix sockets in `stateDir`.
   * `qemu`: one Unix control socket that qemu's `tpm-emulator` backend drives; the firmware
   * sends TPM2_Startup itself.
   */
  mode: 'tcp' | 'unix' | 'qemu';
}

const READY_TIMEOUT_MS = 10_000;

/** Two consecutive free loopback ports (the server port and the control port after it). */
async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    if (port > 0 && port < 65535 && (await portFree(port + 1))) return port;
  }
  throw new MachineError('MACHINE_SWTPM', 'no two consecutive free loopback ports for swtpm');
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function canConnect(target: { port: number; host: string } | { path: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(target as never);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export class Swtpm {
  /** For Seal's TPM client (`--tpm`): `swtpm:127.0.0.1:PORT` or `swtpm:unix:PATH`; for qemu, its control socket. */
  readonly address: string;
  /** The control socket qemu attaches to (`qemu` mode). */
  readonly controlSocket: string | undefined;
  readonly stateDir: string;
  #child: ChildProcess;
  #exited: Promise<number | null>;
  #log: string[] = [];

  private constructor(child: ChildProcess, address: string, stateDir: string, controlSocket?: string) {
    this.#child = child;
    this.address = address;
    this.stateDir = stateDir;
    this.controlSocket = controlSocket;
    this.#exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    child.stderr?.on('data', (d: Buffer) => this.#log.push(d.toString()));
    child.stdout?.on('data', (d: Buffer) => this.#log.push(d.toString()));
  }

  static async start(options: SwtpmOptions): Promise<Swtpm> {
    mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
    const common = ['socket', '--tpm2', '--tpmstate', `dir=${options.stateDir}`];
    let args: string[];
    let address: string;
    let probe: { port: number; host: string } | { path: string };
    let controlSocket: string | undefined;
    if (options.mode === 'tcp') {
      const port = await freePortPair();
      args = [
        ...common,
        ...['--server', `type=tcp,port=${port},bindaddr=127.0.0.1`],
        ...['--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`],
        ...['--flags', 'not-need-init,startup-clear'],
      ];
      address = `swtpm:127.0.0.1:${port}`;
      probe = { port: port + 1, host: '127.0.0.1' };
    } else if (options.mode === 'unix') {
      const server = join(options.stateDir, 'swtpm.sock');
      controlSocket = join(options.stateDir, 'swtpm.ctrl');
      args = [
        ...common,
        ...['--server', `type=unixio,path=${server}`],
        ...['--ctrl', `type=unixio,path=${controlSocket}`],
        ...['--flags', 'not-need-init,startup-clear'],
      ];
      address = `swtpm:unix:${server}`;
      probe = { path: controlSocket };
    } else {
      controlSocket = join(options.stateDir, 'swtpm.ctrl');
      args = [...common, '--ctrl', `type=unixio,path=${controlSocket}`];
      address = controlSocket;
      probe = { path: controlSocket };
    }
    const child = spawn('swtpm', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const tpm = new Swtpm(child, address, options.stateDir, controlSocket);
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (e) =>
        reject(new MachineError('MACHINE_SWTPM', `cannot run swtpm (install Debian's swtpm): ${e.message}`)),
      );
      child.once('exit', (code) =>
        reject(new MachineError('MACHINE_SWTPM', `swtpm exited (${code}): ${tpm.#log.join('').trim()}`)),
      );
    });
    failed.catch(() => {});
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const ready = (async () => {
      while (!(await canConnect(probe))) {
        if (Date.now() > deadline) throw new MachineError('MACHINE_SWTPM', 'swtpm did not start listening');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      await Promise.race([ready, failed]);
    } catch (error) {
      child.kill('SIGKILL');
      throw error;
    }
    return tpm;
  }

  /** What swtpm printed (for failure messages). */
  get log(): string {
    return this.#log.join('');
  }

  /**
   * Power-cycles the TPM as a machine reboot would (tcp and unix modes): _TPM_Init over the
   * control channel, then TPM2_Startup(CLEAR). PCRs and sessions reset; NV stays.
   */
  async reboot(): Promise<void> {
    if (!this.address.startsWith('swtpm:'))
      throw new MachineError('MACHINE_INVALID_OPTION', 'qemu drives the TPM of a qemu-mode swtpm');
    const transport = await openTransport(this.address);
    try {
      if (!(transport instanceof SocketTransport))
        throw new MachineError('MACHINE_SWTPM', 'not a socket TPM');
      await transport.control.init();
      await new Tpm(transport).startup('clear');
    } finally {
      await transport.close();
    }
  }

  /** Stops the process (its state stays in `stateDir`). */
  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5_000);
    await this.#exited;
    clearTimeout(timer);
  }
}
