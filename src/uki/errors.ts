import { SealError } from '../errors.ts';

export type UkiErrorCode =
  | 'UKI_INVALID_OPTION'
  /** The stub cannot take the sections (signed stub, no room, not PE32+). */
  | 'UKI_BAD_STUB'
  /** A section's contents are unusable (a .sbat that is not SBAT CSV, an empty kernel). */
  | 'UKI_BAD_SECTION'
  /** The image failed verification: what failed is in the message. */
  | 'UKI_VERIFY_FAILED'
  /** A boot image (a system's `boot` target) that is not one sealed layer holding uki.efi. */
  | 'UKI_BOOT_IMAGE';

export class UkiError extends SealError<UkiErrorCode> {}
