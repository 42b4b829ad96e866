/**
 * Mounting a sealed image as its root filesystem. This host kernel has no device-mapper, so
 * every layer is verified in userspace against its root hash first, then loop-mounted from the
 * store read-only and the layers are stacked with overlayfs as atomfs does. What was mounted is
 * recorded beside the mount point so `umount` removes exactly that. Given trusted certificates,
 * the image's kernel signatures are checked and handed to the kernel (dm-verity root-hash
 * signatures, the composefs image's fs-verity signature), which checks them against its keys.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { mountComposefs } from '../composefs/index.ts';
import { SealError } from '../errors.ts';
import type { ImageSource } from '../oci/transport.ts';
import type { CertificateSource } from '../pki/index.ts';
import { LayoutSource, readImage } from '../store/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { VerityError } from '../verity/errors.ts';
import { openVerityDevice, type VerityDevice } from '../verity/kernel.ts';
import { composefsImageOf, composefsObjects, keepComposefsImage } from './composefs-store.ts';
import { isComposefsSealed, layerFilesystem, verityRootHash } from './formats.ts';
import { type ImageSignatures, verifyImageSignatures } from './sign.ts';
import { hashOffsetOf, verifyImage } from './verify.ts';

const run = promisify(execFile);

export class MountError extends SealError<'MOUNT_UNSUPPORTED' | 'MOUNT_FAILED' | 'MOUNT_NOT_MOUNTED'> {}

interface MountState {
  target: string;
  mounts: string[];
  created: string[];
  /** dm-verity devices opened for the layers (device-mapper hosts). */
  devices?: string[];
}

/** Whether the kernel offers device-mapper (and so dm-verity enforcement at read time). */
export function hasDeviceMapper(): boolean {
  return existsSync('/dev/mapper/control') && process.env.SEAL_NO_DEVICE_MAPPER === undefined;
}

/**
 * Opens a sealed layer as a dm-verity device with its annotated root hash and checks that the
 * kernel reports it verified (atomfs's `V` status); returns the device path.
 */
async function openVerity(layer: VerityDevice): Promise<string> {
  try {
    return await openVerityDevice((program, args) => run(program, args), layer);
  } catch (error) {
    if (error instanceof VerityError)
      throw new MountError('MOUNT_FAILED', error.message, { subject: layer.name, cause: error });
    throw new MountError(
      'MOUNT_FAILED',
      `opening ${layer.data} with dm-verity failed: ${commandFailure(error)}`,
      { subject: layer.data, cause: error },
    );
  }
}

/** What a failed command said, with how it ended (an empty stderr alone explains nothing). */
function commandFailure(error: unknown): string {
  const e = error as { stderr?: string; code?: unknown; signal?: string | null };
  const ending = e.signal
    ? `killed by ${e.signal}`
    : typeof e.code === 'number'
      ? `exit status ${e.code}`
      : '';
  return [e.stderr?.trim() || String(error).trim(), ending].filter(Boolean).join('; ');
}

function stateDir(target: string): string {
  const base = process.env.SEAL_RUNTIME_DIR ?? '/run/seal/mounts';
  return join(base, createHash('sha256').update(resolve(target)).digest('hex').slice(0, 16));
}

export interface MountOptions {
  /** Add a writable upper layer. */
  writable?: boolean;
  /**
   * Trusted signing certificates: the image's kernel signatures (seal image sign-verity) are
   * checked against them first, then handed to the kernel, which checks them again against its
   * own keys — dm-verity root-hash signatures to `veritysetup open`, the composefs image's
   * fs-verity signature to FS_IOC_ENABLE_VERITY.
   */
  trusted?: CertificateSource[];
}

export interface MountResult {
  target: string;
  layers: number;
  /**
   * With `trusted`: true when the kernel itself checked the signatures (dm-verity devices, or a
   * composefs image on a filesystem with fs-verity); false when only Seal could.
   */
  kernelSignatures?: boolean;
  /**
   * True when the kernel checks every block as it is read (dm-verity, or fs-verity for
   * composefs); false where it cannot, and the layers were verified before mounting instead.
   */
  runtimeEnforcement: boolean;
}

async function mountCmd(args: string[], what: string): Promise<void> {
  try {
    await run('mount', args);
  } catch (error) {
    throw new MountError('MOUNT_FAILED', `mounting ${what} failed: ${commandFailure(error)}`, {
      subject: what,
      cause: error,
    });
  }
}

export async function mountImage(
  src: ImageSource,
  target: string,
  options: MountOptions = {},
): Promise<MountResult> {
  if (!(src instanceof LayoutSource)) {
    throw new MountError(
      'MOUNT_UNSUPPORTED',
      `${src.name}: only images in a store or an oci: layout can be mounted; import it first`,
      {
        subject: src.name,
      },
    );
  }
  const deviceMapper = hasDeviceMapper();
  // Without device-mapper every byte of every layer is checked before the kernel sees it; with
  // it the kernel checks each block as it is read (the documents' digests are checked here).
  if (!deviceMapper) await verifyImage(src);
  const signed = options.trusted ? await verifyImageSignatures(src, options.trusted) : undefined;
  const { manifest } = await readImage(src);
  const state: MountState = { target: resolve(target), mounts: [], created: [] };
  const dir = stateDir(target);
  if (existsSync(join(dir, 'state.json'))) {
    throw new MountError('MOUNT_FAILED', `${target} already has an image mounted; unmount it first`, {
      subject: target,
    });
  }
  await mkdir(dir, { recursive: true });
  await mkdir(target, { recursive: true });
  if (isComposefsSealed(manifest)) {
    try {
      return await mountComposefsImage(src, target, dir, state, signed);
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }
  try {
    const lowers: string[] = [];
    // overlayfs needs two lower layers without an upper one: a single read-only layer is
    // mounted at the target itself.
    const direct = manifest.layers.length === 1 && !options.writable;
    for (const [i, layer] of manifest.layers.entries()) {
      const fs = layerFilesystem(layer.mediaType)!;
      const at = direct ? state.target : join(dir, `layer-${i}`);
      if (!direct) {
        await mkdir(at, { recursive: true });
        state.created.push(at);
      }
      const blob = src.store.blobPath(layer.digest);
      if (deviceMapper) {
        const rootHash = verityRootHash(layer);
        if (!rootHash)
          throw new MountError('MOUNT_FAILED', `layer ${i + 1} has no verity root hash`, {
            subject: layer.digest,
          });
        const name = `seal-${basename(dir)}-${i}`;
        const signature = signed?.signatures.find((x) => x.what === `layer ${i + 1}`);
        let signatureFile: string | undefined;
        if (signature) {
          signatureFile = join(dir, `layer-${i}.p7s`);
          await writeFileAtomic(signatureFile, signature.signature);
        }
        const device = await openVerity({
          data: blob,
          hashOffset: await hashOffsetOf(blob, fs),
          name,
          rootHash,
          ...(signatureFile ? { signature: signatureFile } : {}),
        });
        state.devices = [...(state.devices ?? []), name];
        await mountCmd(['-t', fs, '-o', 'ro', device, at], `layer ${i + 1}`);
      } else {
        await mountCmd(['-t', fs, '-o', fs === 'squashfs' ? 'loop,ro' : 'ro', blob, at], `layer ${i + 1}`);
      }
      state.mounts.push(at);
      lowers.unshift(at);
    }
    if (!direct) {
      const overlay = ['index=off', 'xino=on', 'userxattr', `lowerdir=${lowers.join(':')}`];
      if (options.writable) {
        for (const d of ['upper', 'work']) {
          await mkdir(join(dir, d), { recursive: true });
          state.created.push(join(dir, d));
        }
        overlay.push(`upperdir=${join(dir, 'upper')}`, `workdir=${join(dir, 'work')}`);
      } else {
        overlay.unshift('ro');
      }
      await mountCmd(['-t', 'overlay', 'overlay', '-o', overlay.join(','), state.target], target);
      state.mounts.push(state.target);
    }
    await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(state));
  } catch (error) {
    await undo(state);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    target: state.target,
    layers: manifest.layers.length,
    runtimeEnforcement: deviceMapper,
    ...(signed ? { kernelSignatures: deviceMapper } : {}),
  };
}

/**
 * A composefs-sealed image: its files go into the store's object store, its composefs image
 * (checked against the annotated digest) into the mount's state directory, and the kernel mounts
 * it over the objects. With accepted signatures (`signed`), the image goes into the store itself
 * with fs-verity and its signature (keepComposefsImage: made afresh) — where the store's filesystem has
 * fs-verity; elsewhere only Seal checked the signature.
 */
async function mountComposefsImage(
  src: LayoutSource,
  target: string,
  dir: string,
  state: MountState,
  signed?: ImageSignatures,
): Promise<MountResult> {
  const layers = (await readImage(src)).manifest.layers.length;
  const signature = signed?.signatures.find((x) => x.what === 'merged');
  // Built once: kept in the store with its signature where it has fs-verity, else beside the mount.
  const built = await composefsImageOf(src, composefsObjects(src));
  const stored = signature ? await keepComposefsImage(src, built, signature.signature) : undefined;
  const kernelSignatures = signature ? stored !== undefined : undefined;
  let imagePath = stored?.path;
  if (!imagePath) {
    imagePath = join(dir, 'image.cfs');
    await writeFileAtomic(imagePath, built.image);
  }
  const mounted = await mountComposefs(imagePath, target, composefsObjects(src));
  state.mounts.push(state.target);
  await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(state));
  return {
    target: state.target,
    layers,
    runtimeEnforcement: mounted.verity,
    ...(kernelSignatures !== undefined ? { kernelSignatures } : {}),
  };
}

async function undo(state: MountState): Promise<void> {
  for (const m of [...state.mounts].reverse()) await run('umount', [m]).catch(() => {});
  for (const d of [...(state.devices ?? [])].reverse())
    await run('veritysetup', ['close', d]).catch(() => {});
  for (const d of [...state.created].reverse()) await rm(d, { recursive: true, force: true });
}

export async function unmountImage(target: string): Promise<void> {
  const dir = stateDir(target);
  let state: MountState;
  try {
    state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as MountState;
  } catch {
    throw new MountError('MOUNT_NOT_MOUNTED', `no image is mounted at ${target} by seal`, {
      subject: target,
    });
  }
  for (const m of [...state.mounts].reverse()) {
    try {
      await run('umount', [m]);
    } catch (error) {
      throw new MountError('MOUNT_FAILED', `unmounting ${m} failed (busy?): ${commandFailure(error)}`, {
        subject: m,
      });
    }
  }
  for (const d of [...(state.devices ?? [])].reverse()) {
    try {
      await run('veritysetup', ['close', d]);
    } catch (error) {
      throw new MountError(
        'MOUNT_FAILED',
        `closing the dm-verity device ${d} failed: ${commandFailure(error)}`,
        {
          subject: d,
        },
      );
    }
  }
  await rm(dir, { recursive: true, force: true });
}
