import { SealError } from '../errors.ts';

export type EfiErrorCode =
  | 'EFI_INVALID_OPTION'
  /** An EFI_SIGNATURE_LIST, authenticated variable or GUID that does not decode. */
  | 'EFI_BAD_DATA'
  /** A firmware volume or variable store whose headers, checksums or records are wrong. */
  | 'EFI_BAD_VARSTORE'
  /** The variable store has no room for the variables. */
  | 'EFI_VARSTORE_FULL';

export class EfiError extends SealError<EfiErrorCode> {}
