/**
 * Mounting a target's sealed image on the device. A squashfs/EROFS image: every layer through
 * dm-verity with its annotated root hash (the kernel then checks each block it reads) and, when
 * the image's signatures are given, the layer's root-hash signature (the kernel checks it against
 * the keys it trusts); the device's status and root hash checked after it is made, each layer
 * mounted read-only. A composefs image: its composefs image in the store with fs-verity (enabled
 * with its signature, which the kernel checks against its .fs-verity keyring), mounted read-only,
 * its files in the store's object store, each checked by overlayfs `verity=require` on open.
 * Either is then stacked with overlayfs over a fresh writable tmpfs each time it is started.
 */
import { mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Descriptor, ImageConfig, Manifest } from '../oci/types.ts';
import { parseConfig, parseManifest } from '../oci/validate.ts';
import { composefsObjects, storeComposefsImage } from '../seal/composefs-store.ts';
import { isComposefsSealed, layerFilesystem, verityRootHash } from '../seal/formats.ts';
import type { ImageSignatures } from '../seal/sign.ts';
import { hashOffsetOf } from '../seal/verify.ts';
import { LayoutSource, type LayoutStore } from '../store/index.ts';
import { VerityError } from '../verity/errors.ts';
import { openVerityDevice, type VerityDevice } from '../verity/kernel.ts';
import { AgentError } from './errors.ts';
import { MNT_DETACH, MS, system } from './system.ts';
import { runProgram } from './tools.ts';

/** What a target's image is stacked from: read-only layers, and for composefs its object store. */
export interface ImageLayers {
  /** Where each layer is mounted read-only, bottom first (composefs: its one composefs image). */
  lowers: string[];
  /** A composefs image's object store: overlayfs's data-only layer, every file checked against its fs-verity digest. */
  objects?: string;
}

export interface OpenedLayers extends ImageLayers {
  /** The dm-verity devices opened, one per layer, bottom first. */
  devices: string[];
  /** The image's config. */
  config: ImageConfig;
  /** A composefs image's composefs digest (hex): what `composefs.digest=` pins. */
  composefsDigest?: string;
  /** The kernel checked the image's signatures (root-hash signatures, the composefs image's fs-verity signature). */
  kernelSigned: boolean;
}

export interface OpenOptions {
  /** The image's accepted kernel signatures (verifyImageSignatures): handed to the kernel. */
  signatures?: ImageSignatures['signatures'];
  /** Runs a change of the store (a composefs image's objects and image are written into it). */
  writingStore: <T>(change: () => Promise<T>) => Promise<T>;
}

/** Why the kernel refused an image, from the errno of the operation it refused. */
function kernelRefusal(error: unknown, what: string, changed: string): AgentError {
  // An I/O error reading a verity-protected file or device is data whose hash does not match.
  const why =
    (error as NodeJS.ErrnoException).code === 'EIO'
      ? `the kernel's verity check refused it (I/O error): ${changed}`
      : `cannot be mounted (${(error as Error).message})`;
  return new AgentError('AGENT_BOOT', `${what}: ${why}`, { subject: what, cause: error });
}

/** Opens a layer as a dm-verity device (openVerityDevice); a refusal names the layer as `what`. */
async function openLayer(layer: VerityDevice, what: string): Promise<string> {
  try {
    return await openVerityDevice(runProgram, layer);
  } catch (error) {
    const why =
      error instanceof VerityError ? error.message : `dm-verity refused it: ${(error as Error).message}`;
    throw new AgentError('AGENT_BOOT', `${what}: ${why}`, { subject: what, cause: error });
  }
}

/**
 * Opens the sealed image `image` (pinned by the verified system manifest) from `store`, its
 * layers under `scratch`: through dm-verity (devices named `devices`-N), or as composefs. `name`
 * (the target's) names a refused layer in the error.
 */
export async function openLayers(
  store: LayoutStore,
  image: Descriptor,
  name: string,
  devices: string,
  scratch: string,
  options: OpenOptions,
): Promise<OpenedLayers> {
  const manifest: Manifest = parseManifest(await store.readBlob(image), image.digest);
  const config = parseConfig(await store.readBlob(manifest.config), manifest.config.digest);
  if (isComposefsSealed(manifest)) return openComposefs(store, image, name, config, scratch, options);
  const opened: OpenedLayers = {
    lowers: [],
    devices: [],
    config,
    kernelSigned: options.signatures !== undefined,
  };
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
      let signatureFile: string | undefined;
      if (options.signatures) {
        const signature = options.signatures.find((x) => x.what === `layer ${i + 1}`);
        if (!signature)
          throw new AgentError('AGENT_BOOT', `${what} has no accepted signature`, { subject: what });
        mkdirSync(scratch, { recursive: true });
        signatureFile = join(scratch, `layer-${i}.p7s`);
        await writeFile(signatureFile, signature.signature);
      }
      const blob = store.blobPath(layer.digest);
      const device = await openLayer(
        {
          data: blob,
          hashOffset: await hashOffsetOf(blob, fs),
          name: `${devices}-${i}`,
          rootHash,
          ...(signatureFile ? { signature: signatureFile } : {}),
        },
        what,
      );
      opened.devices.push(`${devices}-${i}`);
      const at = join(scratch, `layer-${i}`);
      mkdirSync(at, { recursive: true });
      try {
        sys.mount(device, at, fs, MS.RDONLY, null);
      } catch (error) {
        throw kernelRefusal(error, what, 'the layer was changed');
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
 * A composefs image: its composefs image put into the store with fs-verity (with its signature)
 * unless the kernel already measures it there, its files in the object store, then the image
 * mounted read-only (file-backed EROFS) at `scratch`/composefs. The kernel then checks every
 * file against the digest the image names for it (overlayfs `verity=require`) when it is opened.
 */
async function openComposefs(
  store: LayoutStore,
  image: Descriptor,
  name: string,
  config: ImageConfig,
  scratch: string,
  options: OpenOptions,
): Promise<OpenedLayers> {
  const what = `${name} (composefs ${image.digest})`;
  const src = new LayoutSource(name, store, image.digest);
  let signature: Buffer | undefined;
  if (options.signatures) {
    signature = options.signatures.find((x) => x.what === 'merged')?.signature;
    if (!signature)
      throw new AgentError('AGENT_BOOT', `${what}: no accepted signature of its composefs image`, {
        subject: what,
      });
  }
  const stored = await options
    .writingStore(() => storeComposefsImage(src, signature))
    .catch((error: Error) => {
      throw new AgentError('AGENT_BOOT', `${what}: ${error.message}`, { subject: what, cause: error });
    });
  if (!stored)
    throw new AgentError(
      'AGENT_BOOT',
      `${what}: the store's filesystem has no fs-verity, which composefs images need on a device`,
      { subject: what },
    );
  const at = join(scratch, 'composefs');
  mkdirSync(at, { recursive: true });
  try {
    system().mount(stored.path, at, 'erofs', MS.RDONLY, null);
  } catch (error) {
    throw kernelRefusal(error, what, 'its composefs image was changed');
  }
  return {
    lowers: [at],
    objects: composefsObjects(src),
    devices: [],
    config,
    composefsDigest: stored.digest,
    kernelSigned: signature !== undefined,
  };
}

/**
 * Stacks an image's layers (bottom first) at `target` with overlayfs as atomfs does — a composefs
 * image over its object store with `verity=require` — over a fresh tmpfs mounted at `rw` (an
 * earlier one there is discarded): nothing a previous mount wrote survives.
 */
export function mountOverlay(image: ImageLayers, target: string, rw: string): void {
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
  const lowerdir = [...image.lowers].reverse().join(':');
  const options = image.objects
    ? ['metacopy=on', 'redirect_dir=on', `lowerdir=${lowerdir}::${image.objects}`, 'verity=require']
    : ['index=off', 'xino=on', 'userxattr', `lowerdir=${lowerdir}`];
  try {
    sys.mount(
      'overlay',
      target,
      'overlay',
      0,
      [...options, `upperdir=${rw}/upper,workdir=${rw}/work`].join(','),
    );
  } catch (error) {
    throw kernelRefusal(error, target, 'an image was changed');
  }
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
