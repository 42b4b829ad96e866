import { SealError } from '../errors.ts';

export type TarErrorCode =
  | 'TAR_TRUNCATED'
  | 'TAR_CORRUPT'
  | 'TAR_CHECKSUM'
  | 'TAR_UNSUPPORTED'
  | 'TAR_TOO_LARGE'
  | 'COMPRESSION_TRUNCATED'
  | 'COMPRESSION_CORRUPT';

export class TarError extends SealError<TarErrorCode> {}
