import { SealError } from '../errors.ts';

export type TarErrorCode =
  | 'TAR_TRUNCATED'
  | 'TAR_CORRUPT'
  | 'TAR_CHECKSUM'
  | 'TAR_UNSUPPORTED'
  | 'TAR_TOO_LARGE'
  /** A path with a NUL byte, or an xattr name or value no filesystem may hold. */
  | 'TAR_INVALID_NAME'
  | 'COMPRESSION_TRUNCATED'
  | 'COMPRESSION_CORRUPT';

export class TarError extends SealError<TarErrorCode> {}
