/**
 * A software TPM (swtpm) as a child process: the TPM of a Seal VM, and of the tests and the factory
 * tooling that talk to it directly. swtpm's own `--daemon` mode is not used (it failed its
 * CMD_INIT here); the process lives as long as this object, and its state directory persists.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { SealError } from '../errors.ts';
import { openTransport, SocketTransport, Tpm } from '../tpm/index.ts';

export type MachineErrorCode =
  | 'MACHINE_SWTPM'
  | 'MACHINE_QEMU'
  | 'MACHINE_INVALID_OPTION'
  | 'MACHINE_INSTALL'
  | 'MACHINE_NAME'
  | 'MACHINE_EXISTS'
  | 'MACHINE_NOT_FOUND'
  | 'MACHINE_RUNNING'
  | 'MACHINE_CONFIG'
  | 'MACHINE_QMP'
  | 'MACHINE_TIMEOUT'
  /** Update media that cannot be written. */
  | 'MACHINE_MEDIA'
  /** A push to a device (seal push) that could not be made. */
  | 'MACHINE_PUSH';

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
  /** `qemu` mode: the control socket's path (default `stateDir/swtpm.ctrl`). */
  controlSocket?: string;
  /** swtpm writes its process id here (and removes it when it exits). */
  pidFile?: string;
  /** swtpm logs here instead of to its standard streams. */
  logFile?: string;
  /** swtpm ends when its client (qemu) closes the connection. */
  terminate?: boolean;
  /**
   * The process outlives this one: its own session, no standard streams (give `logFile`), not
   * waited for. With `terminate` it ends with the qemu it serves.
   */
  detached?: boolean;
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
    // swtpm splits its options at commas.
    for (const path of [options.stateDir, options.controlSocket, options.pidFile, options.logFile])
      if (path !== undefined && /[,\n\0]/.test(path))
        throw new MachineError(
          'MACHINE_INVALID_OPTION',
          `swtpm cannot take the path ${JSON.stringify(path)}`,
          {
            subject: path,
          },
        );
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
      controlSocket = options.controlSocket ?? join(options.stateDir, 'swtpm.ctrl');
      args = [...common, '--ctrl', `type=unixio,path=${controlSocket}`];
      address = controlSocket;
      probe = { path: controlSocket };
    }
    if (options.pidFile) args.push('--pid', `file=${options.pidFile}`);
    if (options.logFile) args.push('--log', `file=${options.logFile},truncate`);
    if (options.terminate) args.push('--terminate');
    if (options.detached && !options.logFile)
      throw new MachineError('MACHINE_INVALID_OPTION', 'a detached swtpm logs to a file');
    const child = spawn('swtpm', args, {
      stdio: options.detached ? 'ignore' : ['ignore', 'pipe', 'pipe'],
      detached: options.detached ?? false,
    });
    const tpm = new Swtpm(child, address, options.stateDir, controlSocket);
    const logged = () => {
      if (!options.logFile) return tpm.#log.join('').trim();
      try {
        return readFileSync(options.logFile, 'utf8').trim().split('\n').slice(-3).join(' ');
      } catch {
        return '';
      }
    };
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (e) =>
        reject(new MachineError('MACHINE_SWTPM', `cannot run swtpm (install Debian's swtpm): ${e.message}`)),
      );
      child.once('exit', (code) =>
        reject(new MachineError('MACHINE_SWTPM', `swtpm exited (${code}): ${logged()}`)),
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
    if (options.detached) child.unref();
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

  /** The process id. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Stops the process (its state stays in `stateDir`). */
  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 5_000);
    await this.#exited;
    clearTimeout(timer);
  }
}
