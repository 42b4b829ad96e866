/**
 * Mounting a sealed image as its root filesystem. This host kernel has no device-mapper, so
 * every layer is verified in userspace against its root hash first, then loop-mounted from the
 * store read-only and the layers are stacked with overlayfs as atomfs does. What was mounted is
 * recorded beside the mount point so `umount` removes exactly that.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { composefsTree, mountComposefs, writeComposefsImage } from '../composefs/index.ts';
import { SealError } from '../errors.ts';
import type { ImageSource } from '../oci/transport.ts';
import { LayoutSource, mergedTree, readImage } from '../store/index.ts';
import { Spool } from '../tree/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import {
  COMPOSEFS_MERGED_ANNOTATION,
  isComposefsSealed,
  layerFilesystem,
  verityRootHash,
} from './formats.ts';
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
async function openVerity(blob: string, name: string, rootHash: string, hashOffset: number): Promise<string> {
  try {
    await run('veritysetup', ['open', blob, name, blob, rootHash, '--hash-offset', String(hashOffset)]);
    const { stdout } = await run('veritysetup', ['status', name]);
    if (!/status:\s+verified/.test(stdout)) {
      await run('veritysetup', ['close', name]).catch(() => {});
      throw new MountError('MOUNT_FAILED', `dm-verity device ${name} is not verified: ${stdout.trim()}`, {
        subject: name,
      });
    }
  } catch (error) {
    if (error instanceof MountError) throw error;
    throw new MountError('MOUNT_FAILED', `opening ${blob} with dm-verity failed: ${commandFailure(error)}`, {
      subject: blob,
      cause: error,
    });
  }
  return `/dev/mapper/${name}`;
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

export interface MountResult {
  target: string;
  layers: number;
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
  options: { writable?: boolean } = {},
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
      return await mountComposefsImage(src, target, dir, state);
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
        const device = await openVerity(blob, name, rootHash, await hashOffsetOf(blob, fs));
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
  return { target: state.target, layers: manifest.layers.length, runtimeEnforcement: deviceMapper };
}

/**
 * A composefs-sealed image: its files go into the store's object store, its composefs image
 * (checked against the annotated digest) into the mount's state directory, and the kernel mounts
 * it over the objects.
 */
async function mountComposefsImage(
  src: LayoutSource,
  target: string,
  dir: string,
  state: MountState,
): Promise<MountResult> {
  const docs = await readImage(src);
  const spool = await Spool.create();
  try {
    const objects = join(src.store.dir, 'composefs-objects');
    const tree = await mergedTree(src, docs, spool, { symlinkModes: 'header' });
    const { image, digest } = await writeComposefsImage(await composefsTree(tree, { objects }), {
      version: 1,
    });
    const expected = docs.manifest.annotations?.[COMPOSEFS_MERGED_ANNOTATION];
    if (digest.toString('hex') !== expected) {
      throw new MountError(
        'MOUNT_FAILED',
        `${src.name}: the composefs image does not match its annotated digest`,
        {
          subject: src.name,
        },
      );
    }
    const imagePath = join(dir, 'image.cfs');
    await writeFileAtomic(imagePath, image);
    const mounted = await mountComposefs(imagePath, target, objects);
    state.mounts.push(state.target);
    await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(state));
    return { target: state.target, layers: docs.manifest.layers.length, runtimeEnforcement: mounted.verity };
  } finally {
    await spool.close();
  }
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
