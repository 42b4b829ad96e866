import { SealError } from '../errors.ts';

export type PkiErrorCode =
  | 'PKI_INVALID_OPTION'
  | 'PKI_BAD_KEY'
  | 'PKI_BAD_CERTIFICATE'
  | 'PKI_UNTRUSTED'
  | 'PKI_BAD_SIGNATURE'
  | 'PKI_EXPIRED'
  | 'PKI_NOT_YET_VALID'
  | 'PKI_BAD_USAGE'
  /** A CMS / PKCS#7 structure that does not decode. */
  | 'PKI_BAD_CMS'
  /** An image or variable that carries no signature where one is required. */
  | 'PKI_NOT_SIGNED'
  | 'PKI_EXISTS';

export class PkiError extends SealError<PkiErrorCode> {}
