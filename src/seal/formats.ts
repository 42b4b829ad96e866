/** How sealed layers are recognised: stacker/atomfs media types and verity root-hash annotations. */
import type { Descriptor, Manifest } from '../oci/types.ts';

export const StackerMediaType = {
  SquashfsZstd: 'application/vnd.stacker.image.layer.squashfs+zstd',
  SquashfsGzip: 'application/vnd.stacker.image.layer.squashfs+gzip',
  Squashfs: 'application/vnd.stacker.image.layer.squashfs',
  ErofsLz4hc: 'application/vnd.stacker.image.layer.erofs+lz4hc',
  Erofs: 'application/vnd.stacker.image.layer.erofs',
} as const;

/** The annotation stacker writes; older keys are accepted when reading. */
export const VERITY_ANNOTATION = 'io.stackeroci.stacker.atomfs_verity_root_hash';
const LEGACY_VERITY_ANNOTATIONS = [
  'io.stackeroci.stacker.squashfs_verity_root_hash',
  'com.cisco.stacker.squashfs_verity_root_hash',
];

/**
 * On a per-layer sealed layer: how many of its hardlinks pointed to a lower layer's file and are
 * copies in this layer's filesystem (a per-layer filesystem cannot link across layers).
 */
export const HARDLINKS_COPIED_ANNOTATION = 'seal.layer.hardlinks-copied';

/** composefs sealing (composefs OCI sealing specification, "metadata included" mode). */
export const COMPOSEFS_LAYER_ANNOTATION = 'composefs.layer.erofs.v1.fsverity-sha256-12';
export const COMPOSEFS_MERGED_ANNOTATION = 'composefs.merged.erofs.v1.fsverity-sha256-12';
export const COMPOSEFS_CONFIG_ANNOTATION = 'composefs.config.fsverity-sha256-12';

export type LayerFilesystem = 'squashfs' | 'erofs';

/** The filesystem of a stacker-style layer, from its media type (with or without `+verity`). */
export function layerFilesystem(mediaType: string): LayerFilesystem | undefined {
  const base = mediaType.replace(/\+verity$/, '');
  if (base.startsWith(StackerMediaType.Squashfs)) return 'squashfs';
  if (base.startsWith(StackerMediaType.Erofs)) return 'erofs';
  return undefined;
}

/** The dm-verity root hash annotated on a layer, under the current or an older key. */
export function verityRootHash(layer: Descriptor): string | undefined {
  const a = layer.annotations ?? {};
  for (const key of [VERITY_ANNOTATION, ...LEGACY_VERITY_ANNOTATIONS])
    if (a[key]) return a[key].toLowerCase();
  return undefined;
}

/** A layer the kernel can verify: a squashfs/EROFS image with an annotated verity root hash. */
export function isSealedLayer(layer: Descriptor): boolean {
  return layerFilesystem(layer.mediaType) !== undefined && verityRootHash(layer) !== undefined;
}

/** An image sealed for composefs: its manifest carries the merged composefs image digest. */
export function isComposefsSealed(manifest: Manifest): boolean {
  return manifest.annotations?.[COMPOSEFS_MERGED_ANNOTATION] !== undefined;
}
