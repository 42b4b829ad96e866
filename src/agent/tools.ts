/**
 * The programs the agent runs — cryptsetup, veritysetup, crun, mke2fs — always from the initrd,
 * through its own dynamic loader and libraries in /seal/lib, so they behave the same before and
 * after the switch into the host root. Arguments are the agent's own (device paths from sysfs,
 * names it chose, hex it checked); secrets go through stdin, never the command line.
 */
import { spawn } from 'node:child_process';
import { AgentError } from './errors.ts';

export type Program = 'cryptsetup' | 'veritysetup' | 'crun' | 'mke2fs';

export const SEAL_ROOT = '/seal';
const LOADER = `${SEAL_ROOT}/lib/ld-linux-x86-64.so.2`;

/** The environment of every program: no udev on a Seal device, locale-free messages. */
const ENVIRONMENT = { PATH: `${SEAL_ROOT}/bin`, DM_DISABLE_UDEV: '1', LC_ALL: 'C' };

/**
 * The environment of `program`. crun copies itself into a sealed memory file and runs that, so
 * that a container cannot overwrite it — unless it runs from a read-only filesystem and this
 * variable says it may trust that. /seal is read-only once the host root is switched into, and
 * under an IPE policy a memory file may not execute at all.
 */
export function programEnvironment(program: Program): Record<string, string> {
  return program === 'crun' ? { ...ENVIRONMENT, _LIBCONTAINER_CLONED_BINARY: '1' } : ENVIRONMENT;
}

/** The command line that runs `program` from the initrd. */
export function programCommand(program: Program, args: string[]): [string, string[]] {
  return [LOADER, ['--library-path', `${SEAL_ROOT}/lib`, `${SEAL_ROOT}/bin/${program}`, ...args]];
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a program to completion; a non-zero exit is an AGENT_TOOL error quoting its stderr. */
export function runProgram(program: Program, args: string[], input?: Uint8Array): Promise<RunResult> {
  const [command, argv] = programCommand(program, args);
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { env: programEnvironment(program), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (error) =>
      reject(
        new AgentError('AGENT_TOOL', `cannot run ${program}: ${error.message}`, {
          subject: program,
          cause: error,
        }),
      ),
    );
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve({ stdout, stderr });
      else
        reject(
          new AgentError(
            'AGENT_TOOL',
            `${program} ${args[0] ?? ''} failed (${signal ? `killed by ${signal}` : `exit status ${code}`}): ${stderr.trim().split('\n').at(-1) ?? ''}`,
            { subject: program },
          ),
        );
    });
    child.stdin.on('error', () => {}); // a program that exits without reading its input
    child.stdin.end(input);
  });
}
