/** The OCI image layout store, image references and the local transports. */

export { markVerified, verifiedDigest, verifiedStream } from '../oci/verify.ts';
export { StoreError, type StoreErrorCode } from './errors.ts';
export { type FsckReport, LayoutStore } from './layout.ts';
export { defaultStorePath, type ImageReference, layoutName, parseReference } from './reference.ts';
export {
  destinationTag,
  LayoutDestination,
  LayoutSource,
  type OpenOptions,
  openDestination,
  openSource,
} from './transports.ts';

import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor } from '../oci/types.ts';

/** Copies an image (and with options, every platform and the referrers) between any two transports. */
export async function copyImage(
  src: ImageSource,
  dst: ImageDestination,
  options: { all?: boolean; referrers?: boolean; tag?: string; onBytes?: (n: number) => void } = {},
): Promise<Descriptor> {
  const { mirror } = await import('../registry/mirror.ts');
  return (await mirror(src, dst, options)).root;
}
export { type ImageDocuments, isTarLayer, mergedTree, readImage, unpackImage } from './image.ts';
