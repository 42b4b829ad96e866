/**
 * Confidential-VM launch measurements: AMD SEV, SEV-ES and SEV-SNP launch digests of OVMF
 * guests (with direct kernel boot and Coconut-SVSM), and SEV-SNP attestation reports.
 */
export { CvmError, type CvmErrorCode } from './errors.ts';
export {
  Firmware,
  type SevMetadataSection,
  SevSection,
  type SevSectionType,
  sevSectionName,
} from './firmware.ts';
export {
  type LaunchOptions,
  launchDigest,
  MAX_VCPUS,
  readFirmware,
  SEV_MODES,
  type SevMode,
  snpOvmfHash,
} from './launch.ts';
export { type DirectBootHashes, directBootHashes, sevHashesTable } from './sev-hashes.ts';
export { PageType, SnpLaunchDigest } from './snp-digest.ts';
export {
  type GuestPolicy,
  parsePolicy,
  parseSnpReport,
  parseTcb,
  REPORT_SIZE,
  SIGNED_SIZE,
  type SigningKey,
  type SnpReport,
  type TcbVersion,
} from './snp-report.ts';
export {
  AMD_ARK_FINGERPRINTS,
  type Certificate,
  type ChainOptions,
  endorsementClaims,
  type ReportExpectations,
  type ReportVerification,
  readCertificates,
  type VerifiedChain,
  verifyAmdChain,
  verifySnpReport,
} from './snp-verify.ts';
export { type TdxSection, TdxSectionType, tdxMrtd, tdxSections } from './tdx.ts';
export { cpuSignature, VCPU_TYPES, vcpuModel, vcpuTypeSignature } from './vcpu.ts';
export { BSP_EIP, resetVmsa, svsmVmsa, VMM_TYPES, type VmmType } from './vmsa.ts';
