import { SealError } from '../../errors.ts';

/** Failure kinds of the confidential-VM launch measurements and SNP attestation reports. */
export type CvmErrorCode =
  /** An option that makes no sense: an unknown mode, a vCPU count of 0, a hash of the wrong length. */
  | 'CVM_INVALID_OPTION'
  /** A vCPU type no table of Seal names. */
  | 'CVM_UNKNOWN_VCPU_TYPE'
  /** A firmware image whose footer table or metadata is malformed (sizes, offsets, signatures). */
  | 'CVM_BAD_FIRMWARE'
  /** A firmware image without the SEV metadata an SEV-SNP launch needs. */
  | 'CVM_NO_SEV_METADATA'
  /** A firmware image without the SEV-ES reset block (the AP entry point) SEV-ES and SNP need. */
  | 'CVM_NO_RESET_BLOCK'
  /** A kernel to measure, but a firmware that carries no SEV hashes table to measure it with. */
  | 'CVM_NO_HASHES_TABLE'
  /** A firmware image without TDX metadata, or with TDX metadata that does not parse. */
  | 'CVM_BAD_TDX_METADATA'
  /** An attestation report that does not parse. */
  | 'CVM_BAD_REPORT'
  /** A certificate that does not parse or is not the kind the AMD chain needs. */
  | 'CVM_BAD_CERTIFICATE'
  /** A certificate chain that does not verify (ARK → ASK/ASVK → VCEK/VLEK). */
  | 'CVM_CHAIN_INVALID'
  /** A report whose signature does not verify with the given endorsement key. */
  | 'CVM_REPORT_SIGNATURE'
  /** A report whose fields differ from the expected values, or from its endorsement certificate. */
  | 'CVM_REPORT_MISMATCH';

export class CvmError extends SealError<CvmErrorCode> {}
