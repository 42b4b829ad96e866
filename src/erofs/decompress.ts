/** Compressed EROFS files (z_erofs lclusters): not read yet; named clearly instead. */
import { ErofsError } from './format.ts';
import type { ErofsImage, ErofsInode } from './reader.ts';

export function readCompressed(
  image: ErofsImage,
  inode: ErofsInode,
  _offset: number,
  _length: number,
): Buffer {
  throw new ErofsError(
    'EROFS_UNSUPPORTED',
    `${image.path}: inode ${inode.nid} is compressed; Seal reads uncompressed EROFS images only`,
    { subject: image.path },
  );
}
