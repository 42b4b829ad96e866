/**
 * Verity in the running kernel. fs-verity: enabling it on a file (optionally with a built-in
 * signature the kernel checks against its .fs-verity keyring) and reading back the digest it
 * holds, through the FS_IOC_ENABLE_VERITY / FS_IOC_MEASURE_VERITY ioctls (native/fsops.c).
 * dm-verity: opening a sealed layer as a device through veritysetup and checking the kernel's
 * view of it.
 */
import { closeSync, openSync } from 'node:fs';
import { enableVerity, measureVerity } from '../util/fsops.ts';
import { VerityError } from './errors.ts';
import type { FsverityAlgorithm } from './fs-verity.ts';

const ALGORITHM_ID: Record<FsverityAlgorithm, number> = { sha256: 1, sha512: 2 };

export interface KernelVerityOptions {
  algorithm?: FsverityAlgorithm;
  blockSize?: number;
  salt?: Uint8Array;
  /** A PKCS#7 built-in signature of the file's digest (see seal/kernel-signatures.ts). */
  signature?: Uint8Array;
}

function refused(path: string, error: NodeJS.ErrnoException): VerityError {
  const code = error.code ?? '';
  const reason: Record<string, string> = {
    ENOKEY: "its signer's certificate is not in the .fs-verity keyring",
    EKEYREJECTED: 'the signature does not match the file',
    EBADMSG: 'the signature is malformed',
    EPERM: 'the kernel requires a signature (fs.verity.require_signatures)',
    EOPNOTSUPP: 'the filesystem has no fs-verity',
    ENOTTY: 'the filesystem has no fs-verity',
    ETXTBSY: 'the file is open for writing',
  };
  const unsupported = code === 'EOPNOTSUPP' || code === 'ENOTTY';
  return new VerityError(
    unsupported ? 'VERITY_UNSUPPORTED' : 'VERITY_KERNEL_REFUSED',
    `${path}: fs-verity refused: ${reason[code] ?? error.message}`,
    { subject: path, cause: error },
  );
}

/**
 * Enables fs-verity on `path`. A file that already has it is left as it is (its digest is what
 * callers check, with measureKernelVerity). Returns whether it was enabled now.
 */
export function enableKernelVerity(path: string, options: KernelVerityOptions = {}): boolean {
  const fd = openSync(path, 'r');
  try {
    enableVerity(fd, {
      algorithm: ALGORITHM_ID[options.algorithm ?? 'sha256'],
      blockSize: options.blockSize ?? 4096,
      ...(options.salt ? { salt: options.salt } : {}),
      ...(options.signature ? { signature: options.signature } : {}),
    });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw refused(path, error as NodeJS.ErrnoException);
  } finally {
    closeSync(fd);
  }
}

/** The fs-verity digest the kernel holds for `path`, or undefined when it has no fs-verity. */
export function measureKernelVerity(
  path: string,
): { algorithm: FsverityAlgorithm; digest: Buffer } | undefined {
  const fd = openSync(path, 'r');
  try {
    const { algorithm, digest } = measureVerity(fd);
    return { algorithm: algorithm === 2 ? 'sha512' : 'sha256', digest };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENODATA' || code === 'EOPNOTSUPP' || code === 'ENOTTY') return undefined;
    throw refused(path, error as NodeJS.ErrnoException);
  } finally {
    closeSync(fd);
  }
}

/** Runs a program, resolving with its standard output; rejects when it fails. */
export type ProgramRunner = (program: 'veritysetup', args: string[]) => Promise<{ stdout: string }>;

export interface VerityDevice {
  /** The layer: its data, and its hash tree from `hashOffset` (the stacker/atomfs layout). */
  data: string;
  hashOffset: number;
  /** The device's name under /dev/mapper. */
  name: string;
  rootHash: string;
  /** A file with the root hash's PKCS#7 signature, for the kernel to check. */
  signature?: string;
}

/**
 * Opens a sealed layer as the dm-verity device /dev/mapper/NAME through veritysetup, run by `run`
 * (a device's initrd and a host find it differently), and checks the kernel's view of it:
 * verified — "with signature" when one was given — with the same root hash. A failed open
 * rejects with the runner's error; a device in any other state is closed again and refused.
 */
export async function openVerityDevice(run: ProgramRunner, d: VerityDevice): Promise<string> {
  await run('veritysetup', [
    'open',
    d.data,
    d.name,
    d.data,
    d.rootHash,
    '--hash-offset',
    String(d.hashOffset),
    ...(d.signature ? [`--root-hash-signature=${d.signature}`] : []),
  ]);
  const { stdout } = await run('veritysetup', ['status', d.name]);
  const status = /status:\s*(.*)/.exec(stdout)?.[1]?.trim();
  const root = /root hash:\s*([0-9a-f]+)/.exec(stdout)?.[1];
  const wanted = d.signature ? 'verified (with signature)' : 'verified';
  if (status !== wanted || (root !== undefined && root !== d.rootHash)) {
    await run('veritysetup', ['close', d.name]).catch(() => {});
    throw new VerityError(
      'VERITY_KERNEL_REFUSED',
      `the dm-verity device ${d.name} is ${status ?? 'in an unknown state'}${root && root !== d.rootHash ? `, root hash ${root}` : ''}, not ${wanted}`,
      { subject: d.name },
    );
  }
  return `/dev/mapper/${d.name}`;
}
