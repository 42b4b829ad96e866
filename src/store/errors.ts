import { SealError } from '../errors.ts';

export type StoreErrorCode =
  | 'STORE_NOT_A_LAYOUT'
  | 'STORE_NOT_FOUND'
  | 'STORE_BLOB_MISMATCH'
  | 'STORE_INVALID_REFERENCE'
  | 'STORE_INVALID_DOCUMENT'
  | 'STORE_LOCKED'
  | 'STORE_UNSUPPORTED'
  /** A path of a layout that is a symlink, leads outside it, or is not a regular file. */
  | 'STORE_UNSAFE_PATH';

export class StoreError extends SealError<StoreErrorCode> {}
