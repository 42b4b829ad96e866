import { SealError } from '../errors.ts';

export type PeErrorCode =
  /** The file ends before a structure its headers point to. */
  | 'PE_TRUNCATED'
  /** No `MZ` / `PE\0\0` signature: not a PE file at all. */
  | 'PE_NOT_PE'
  /** A PE file Seal does not handle (an optional-header magic other than PE32 / PE32+, a ROM image). */
  | 'PE_UNSUPPORTED'
  /** A header field that contradicts the others or the file (alignment, sizes, counts). */
  | 'PE_BAD_HEADER'
  /** A section header whose data lies outside the file, or a bad section name. */
  | 'PE_BAD_SECTION'
  /** The attribute certificate table (WIN_CERTIFICATE entries) is malformed. */
  | 'PE_BAD_CERTIFICATE_TABLE'
  | 'PE_INVALID_OPTION';

export class PeError extends SealError<PeErrorCode> {}
