/**
 * Attestation at boot (`seal.attest=URL`, `seal.attest-secret=NAME[,NAME…]`): after the TPM is
 * unlocked and before PCR 7 is locked, the agent attests this boot to the verifier (`seal attest
 * serve`) with the identity certificate the TPM released and the firmware's event log, and
 * fetches each named secret — released only to this device's TPM, in the PCR state it quoted.
 *
 * Every secret is fetched before any is written: a refusal (the verifier's code and message in
 * the failed step) leaves nothing behind. They are then written to their own tmpfs,
 * /run/seal/secrets/NAME (root, 0400; the tmpfs mounted read-only afterwards), which every
 * service sees read-only at /run/secrets/NAME. They never touch a disk.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EVENT_LOG_PATH, fetchSecret } from '../attest/index.ts';
import type { Tpm } from '../tpm/index.ts';
import { RUN } from './device.ts';
import { MS, system } from './system.ts';

/** Where the fetched secrets are kept (services see them at /run/secrets: services.ts). */
export const SECRETS_DIR = `${RUN}/secrets`;

export interface FetchedSecret {
  name: string;
  value: Buffer;
}

/** Fetches every secret in `names` from the verifier at `url` (all or none). */
export async function fetchBootSecrets(
  tpm: Tpm,
  url: string,
  names: string[],
  deviceCert: Uint8Array,
  eventLogPath = EVENT_LOG_PATH,
): Promise<FetchedSecret[]> {
  const fetched: FetchedSecret[] = [];
  try {
    for (const name of names)
      fetched.push({
        name,
        value: await fetchSecret(url, tpm, name, { certificates: [deviceCert], eventLogPath }),
      });
    return fetched;
  } catch (error) {
    for (const s of fetched) s.value.fill(0);
    throw error;
  }
}

/**
 * Writes the secrets to a tmpfs of their own at `dir` (mode 0700, each file root's, 0400) and
 * remounts it read-only; the buffers are wiped.
 */
export function writeBootSecrets(secrets: FetchedSecret[], dir = SECRETS_DIR): void {
  const total = secrets.reduce((n, s) => n + s.value.length, 0);
  const sys = system();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const flags = MS.NOSUID | MS.NODEV | MS.NOEXEC;
  // Room for the files and their blocks; nothing else is ever written there.
  const size = `${Math.ceil(total / 4096) * 4 + secrets.length * 4 + 16}k`;
  sys.mount('tmpfs', dir, 'tmpfs', flags, `mode=0700,size=${size}`);
  try {
    for (const s of secrets) writeFileSync(join(dir, s.name), s.value, { mode: 0o400, flag: 'wx' });
  } finally {
    for (const s of secrets) s.value.fill(0);
  }
  sys.mount(null, dir, null, MS.REMOUNT | MS.RDONLY | flags, `mode=0700,size=${size}`);
}
