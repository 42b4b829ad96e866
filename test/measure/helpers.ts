/** Shared by the launch-measurement tests: fixtures, generated inputs, and the CLI run in-process. */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { main } from '../../src/cli/main.ts';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const SSM = join(FIXTURES, 'sev-snp-measure');
export const SNP = join(FIXTURES, 'snp');

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The generated kernel/initrd bytes of the recorded runs: byte i = (i·31 + ⌊i/2048⌋ + salt) mod 256. */
export function generated(size: number, salt: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + Math.floor(i / 2048) + salt) & 0xff;
  return b;
}

let work: string | undefined;
/** A directory with the gunzipped SVSM fixtures and the generated inputs, made once per process. */
export function workDir(): string {
  if (work) return work;
  work = mkdtempSync(join(tmpdir(), 'seal-cvm-'));
  for (const name of ['svsm.bin', 'svsm_ovmf.fd'])
    writeFileSync(join(work, name), gunzipSync(readFileSync(join(SSM, `${name}.gz`))));
  writeFileSync(join(work, 'empty'), Buffer.alloc(0));
  return work;
}

/**
 * Runs `seal ARGV` in this process (the real argument parsing and output), capturing the text it
 * prints. Only text is captured: the test runner's own messages to its parent (bytes) pass through.
 */
export async function runInProcess(
  argv: string[],
): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  const log = console.log;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    if (typeof chunk !== 'string') return out.call(process.stdout, chunk, ...rest);
    stdout += chunk;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    if (typeof chunk !== 'string') return err.call(process.stderr, chunk, ...rest);
    stderr += chunk;
    return true;
  }) as typeof process.stderr.write;
  console.log = (...args: unknown[]) => {
    stdout += `${args.join(' ')}\n`;
  };
  try {
    const status = await main(argv);
    return { status, stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    console.log = log;
  }
}
