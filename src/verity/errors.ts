import { SealError } from '../errors.ts';

export type VerityErrorCode =
  | 'VERITY_INVALID_OPTION'
  | 'VERITY_BAD_SUPERBLOCK'
  | 'VERITY_TRUNCATED'
  | 'VERITY_ROOT_MISMATCH'
  | 'VERITY_HASH_BLOCK_MISMATCH'
  | 'VERITY_DATA_BLOCK_MISMATCH'
  /** The running kernel or filesystem has no fs-verity. */
  | 'VERITY_UNSUPPORTED'
  /** The kernel refused to enable fs-verity (a signature refused or required, a busy file). */
  | 'VERITY_KERNEL_REFUSED';

export class VerityError extends SealError<VerityErrorCode> {
  /** For mismatches: which block failed. */
  readonly block: { kind: 'data' | 'hash' | 'superblock'; index: number; level?: number } | undefined;

  constructor(
    code: VerityErrorCode,
    message: string,
    options: { subject?: string; block?: VerityError['block']; cause?: unknown } = {},
  ) {
    super(code, message, options);
    this.block = options.block;
  }
}
