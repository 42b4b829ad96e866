/** A fresh swtpm per test (or per file) with Seal's client on it, and the tpm2-tools environment for it. */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Swtpm } from '../../src/machine/index.ts';
import { openTransport, RecordingTransport, Tpm, TpmError } from '../../src/tpm/index.ts';

const execFileP = promisify(execFile);

export interface TestTpm {
  swtpm: Swtpm;
  tpm: Tpm;
  recorder: RecordingTransport;
  dir: string;
  /** TPM2TOOLS_TCTI for tpm2-tools on the same swtpm. */
  tcti: string;
  /** Runs a tpm2-tools command on this TPM (never through a shell); resolves with its stdout. */
  tools(command: string, args: string[], options?: { cwd?: string; input?: Buffer }): Promise<Buffer>;
  stop(): Promise<void>;
}

export async function startTestTpm(mode: 'tcp' | 'unix' = 'tcp'): Promise<TestTpm> {
  const dir = mkdtempSync(join(tmpdir(), 'seal-tpm-'));
  const swtpm = await Swtpm.start({ stateDir: join(dir, 'state'), mode });
  const recorder = new RecordingTransport(await openTransport(swtpm.address));
  const tpm = new Tpm(recorder);
  const m = /^swtpm:127\.0\.0\.1:(\d+)$/.exec(swtpm.address);
  const tcti = m ? `swtpm:host=127.0.0.1,port=${m[1]}` : '';
  return {
    swtpm,
    tpm,
    recorder,
    dir,
    tcti,
    async tools(command, args, options = {}) {
      // tpm2-tools and Seal share the swtpm connection slot: Seal's socket is closed first.
      await tpm.close();
      const child = execFileP(command, args, {
        cwd: options.cwd ?? dir,
        env: { ...process.env, TPM2TOOLS_TCTI: tcti },
        encoding: 'buffer',
        maxBuffer: 1 << 24,
      });
      if (options.input) {
        child.child.stdin?.end(options.input);
      }
      try {
        return (await child).stdout;
      } catch (error) {
        const e = error as { stderr?: Buffer; message: string };
        throw new Error(`${command} ${args.join(' ')}: ${e.stderr?.toString() || e.message}`);
      }
    },
    async stop() {
      await tpm.close().catch(() => {});
      await swtpm.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A transport that answers with given responses in order (then fails): for fuzzing the client. */
export class ReplayTransport {
  readonly address = 'replay';
  #responses: Buffer[];
  #next = 0;

  constructor(responses: Buffer[]) {
    this.#responses = responses;
  }

  async send(_command: Buffer): Promise<Buffer> {
    const response = this.#responses[this.#next++];
    if (!response) throw new TpmError('TPM_TRANSPORT', 'replay: no more responses');
    return Buffer.from(response);
  }

  async close(): Promise<void> {}
}
