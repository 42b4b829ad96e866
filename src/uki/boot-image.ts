/**
 * A system's boot image as a target of its manifest (role `boot`): the signed UKI as the one file
 * `uki.efi` of a sealed image. The UKI then travels, is pinned and is verified like every other
 * target — by digest in the signed manifest, and block by block through dm-verity when a device
 * stages it — and the firmware checks its Secure Boot signature when it boots.
 */
import { once } from 'node:events';
import { copyFileSync, createWriteStream, mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ErofsImage } from '../erofs/index.ts';
import type { Descriptor, Manifest } from '../oci/types.ts';
import { parseManifest } from '../oci/validate.ts';
import { layerFilesystem } from '../seal/formats.ts';
import { sealImage } from '../seal/seal.ts';
import { SquashfsImage } from '../squashfs/index.ts';
import { destinationTag, type LayoutStore, openDestination, openSource } from '../store/index.ts';
import { UkiError } from './errors.ts';

/** The UKI's name in a boot image. */
export const BOOT_IMAGE_UKI = 'uki.efi';
/**
 * The signed TPM policy the UKI's initrd carries, beside it: the management image reads the
 * policy version it needs from here (and raises the TPM's to it: revocation).
 */
export const BOOT_IMAGE_POLICY = 'policy.json';

/**
 * Seals `uki` (and the signed policy its initrd carries) as a boot image at `ref`. The files carry
 * a fixed time, so the same UKI always makes the same image (a system that keeps its UKI keeps its
 * boot target).
 */
export async function sealBootImage(
  uki: string,
  ref: string,
  options: { format?: 'squashfs' | 'erofs'; policy?: string } = {},
): Promise<Descriptor> {
  const format = options.format ?? 'squashfs';
  const dir = mkdtempSync(join(process.env.SEAL_TMPDIR ?? tmpdir(), 'seal-boot-image-'));
  try {
    const root = join(dir, 'root');
    const file = join(root, BOOT_IMAGE_UKI);
    mkdirSync(root, { mode: 0o755 });
    copyFileSync(uki, file);
    utimesSync(file, 0, 0);
    if (options.policy) {
      copyFileSync(options.policy, join(root, BOOT_IMAGE_POLICY));
      utimesSync(join(root, BOOT_IMAGE_POLICY), 0, 0);
    }
    utimesSync(root, 0, 0);
    const src = await openSource(`dir:${root}`);
    try {
      // A store name keeps its NAME:TAG; a registry reference its tag.
      const tag = ref.startsWith('docker://') ? /:([^:/@]+)$/.exec(ref)?.[1] : destinationTag(ref);
      const dst = await openDestination(ref);
      try {
        const result = await sealImage(src, dst, { format, ...(tag ? { tag } : {}) });
        await dst.commit();
        return result.descriptor;
      } finally {
        await dst.close();
      }
    } finally {
      await src.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The one sealed layer of a boot image (its manifest read from `store`) and its filesystem. */
export async function bootImageLayer(
  store: LayoutStore,
  image: Descriptor,
): Promise<{ layer: Descriptor; filesystem: 'squashfs' | 'erofs' }> {
  const manifest: Manifest = parseManifest(await store.readBlob(image), image.digest);
  const layer = manifest.layers[0];
  const filesystem = layer ? layerFilesystem(layer.mediaType) : undefined;
  if (manifest.layers.length !== 1 || !layer || !filesystem) {
    throw new UkiError(
      'UKI_BOOT_IMAGE',
      `boot image ${image.digest} is not one squashfs or EROFS layer sealed for dm-verity (seal uki image makes one)`,
      { subject: image.digest },
    );
  }
  return { layer, filesystem };
}

/** What extracting one file needs of a filesystem image reader (squashfs and EROFS both offer it). */
interface FileReader<I> {
  lookup(path: string): I;
  readFile(inode: I): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
  close(): void;
}

async function copyFile<I>(fs: FileReader<I>, what: string, out: string): Promise<void> {
  try {
    let inode: I;
    try {
      inode = fs.lookup(BOOT_IMAGE_UKI);
    } catch (error) {
      throw new UkiError('UKI_BOOT_IMAGE', `${what} holds no ${BOOT_IMAGE_UKI}`, {
        subject: what,
        cause: error,
      });
    }
    const output = createWriteStream(out, { mode: 0o644 });
    await once(output, 'open');
    await pipeline(fs.readFile(inode), output);
  } finally {
    fs.close();
  }
}

/** Copies the UKI of the boot image `image` in `store` to `out` (read from the layer's filesystem, no mount). */
export async function extractBootUki(store: LayoutStore, image: Descriptor, out: string): Promise<void> {
  const { layer, filesystem } = await bootImageLayer(store, image);
  const blob = store.blobPath(layer.digest);
  const what = `boot image ${image.digest}`;
  if (filesystem === 'squashfs') await copyFile(SquashfsImage.open(blob), what, out);
  else await copyFile(ErofsImage.open(blob), what, out);
}
