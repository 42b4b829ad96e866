import { SealError } from '../errors.ts';

export type ManifestErrorCode =
  | 'MANIFEST_INVALID'
  | 'MANIFEST_NOT_SEALED'
  | 'MANIFEST_NOT_A_SYSTEM'
  | 'MANIFEST_UNSIGNED'
  | 'MANIFEST_KEY_UNSUPPORTED'
  | 'MANIFEST_SIGNATURE_INVALID'
  | 'MANIFEST_WRONG_PRODUCT'
  | 'MANIFEST_ROLLBACK'
  | 'MANIFEST_TARGET_MISMATCH'
  | 'MANIFEST_STATE';

export class ManifestError extends SealError<ManifestErrorCode> {}
