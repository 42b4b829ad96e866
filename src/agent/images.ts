/**
 * Mounting a target's sealed image on the device: every layer through dm-verity with its
 * annotated root hash (the kernel then checks each block it reads), the device's status and root
 * hash checked after it is made, each layer mounted read-only; then the layers stacked with
 * overlayfs as atomfs stacks them, over a fresh writable tmpfs each time.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Descriptor, ImageConfig, Manifest } from '../oci/types.ts';
import { parseConfig, parseManifest } from '../oci/validate.ts';
import { layerFilesystem, verityRootHash } from '../seal/formats.ts';
import { hashOffsetOf } from '../seal/verify.ts';
import type { LayoutStore } from '../store/index.ts';
import { AgentError } from './errors.ts';
import { MNT_DETACH, MS, system } from './system.ts';
import { runProgram } from './tools.ts';

export interface OpenedLayers {
  /** Where each layer is mounted read-only, bottom first. */
  lowers: string[];
  /** The dm-verity devices opened, one per layer, bottom first. */
  devices: string[];
  /** The image's config. */
  config: ImageConfig;
}

/** Opens a layer blob as a dm-verity device and checks the kernel's view of it; returns /dev/mapper/NAME. */
async function openLayer(
  blob: string,
  name: string,
  rootHash: string,
  hashOffset: number,
  what: string,
): Promise<string> {
  await runProgram('veritysetup', [
    'open',
    blob,
    name,
    blob,
    rootHash,
    '--hash-offset',
    String(hashOffset),
  ]).catch((error: Error) => {
    throw new AgentError('AGENT_BOOT', `${what}: dm-verity refused it: ${error.message}`, {
      subject: what,
      cause: error,
    });
  });
  const { stdout } = await runProgram('veritysetup', ['status', name]);
  const status = /status:\s*(\S+)/.exec(stdout)?.[1];
  const root = /root hash:\s*([0-9a-f]+)/.exec(stdout)?.[1];
  if (status !== 'verified' || (root !== undefined && root !== rootHash)) {
    await runProgram('veritysetup', ['close', name]).catch(() => {});
    throw new AgentError(
      'AGENT_BOOT',
      `${what}: the dm-verity device is ${status ?? 'in an unknown state'}${root && root !== rootHash ? `, root hash ${root}` : ''}`,
      {
        subject: what,
      },
    );
  }
  return `/dev/mapper/${name}`;
}

/**
 * Opens every layer of the sealed image `image` (pinned by the verified system manifest) from
 * `store` through dm-verity and mounts it read-only under `scratch`. `devices` prefixes the dm
 * devices; `name` (the target's) names a refused layer in the error.
 */
export async function openLayers(
  store: LayoutStore,
  image: Descriptor,
  name: string,
  devices: string,
  scratch: string,
): Promise<OpenedLayers> {
  const manifest: Manifest = parseManifest(await store.readBlob(image), image.digest);
  const config = parseConfig(await store.readBlob(manifest.config), manifest.config.digest);
  const opened: OpenedLayers = { lowers: [], devices: [], config };
  const sys = system();
  try {
    for (const [i, layer] of manifest.layers.entries()) {
      const what = `${name} layer ${i + 1} (${layer.digest})`;
      const fs = layerFilesystem(layer.mediaType);
      const rootHash = verityRootHash(layer);
      if (!fs || !rootHash || !/^[0-9a-f]{64}$/.test(rootHash)) {
        throw new AgentError('AGENT_BOOT', `${what} is not a sealed layer with a dm-verity root hash`, {
          subject: what,
        });
      }
      const blob = store.blobPath(layer.digest);
      const device = await openLayer(blob, `${devices}-${i}`, rootHash, await hashOffsetOf(blob, fs), what);
      opened.devices.push(`${devices}-${i}`);
      const at = join(scratch, `layer-${i}`);
      mkdirSync(at, { recursive: true });
      try {
        sys.mount(device, at, fs, MS.RDONLY, null);
      } catch (error) {
        // An I/O error reading a dm-verity device is a block whose hash does not match.
        const why =
          (error as NodeJS.ErrnoException).code === 'EIO'
            ? 'dm-verity refused a block of it (I/O error): the layer was changed'
            : `cannot be mounted (${(error as Error).message})`;
        throw new AgentError('AGENT_BOOT', `${what}: ${why}`, { subject: what, cause: error });
      }
      opened.lowers.push(at);
    }
    return opened;
  } catch (error) {
    await closeLayers(opened);
    throw error;
  }
}

/**
 * Stacks `lowers` (bottom first) at `target` with overlayfs as atomfs does, over a fresh tmpfs
 * mounted at `rw` (an earlier one there is discarded): nothing a previous mount wrote survives.
 */
export function mountOverlay(lowers: string[], target: string, rw: string): void {
  const sys = system();
  for (const m of [target, rw]) {
    try {
      sys.umount(m, MNT_DETACH);
    } catch {}
  }
  mkdirSync(rw, { recursive: true });
  mkdirSync(target, { recursive: true });
  sys.mount('tmpfs', rw, 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=0755');
  mkdirSync(join(rw, 'upper'));
  mkdirSync(join(rw, 'work'));
  const lowerdir = [...lowers].reverse().join(':');
  sys.mount(
    'overlay',
    target,
    'overlay',
    0,
    `index=off,xino=on,userxattr,lowerdir=${lowerdir},upperdir=${rw}/upper,workdir=${rw}/work`,
  );
}

/** Unmounts the layers and closes their dm-verity devices (best effort: every step is tried). */
export async function closeLayers(opened: OpenedLayers): Promise<void> {
  const sys = system();
  for (const m of [...opened.lowers].reverse()) {
    try {
      sys.umount(m, 0);
    } catch {
      try {
        sys.umount(m, MNT_DETACH);
      } catch {}
    }
  }
  for (const d of [...opened.devices].reverse())
    await runProgram('veritysetup', ['close', d]).catch(() => {});
  opened.lowers = [];
  opened.devices = [];
}
