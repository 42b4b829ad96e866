/**
 * The boot image: building Unified Kernel Images on systemd's stub, signing and verifying PE
 * images (Authenticode), inspecting them, and Secure Boot keys, varstore enrollment and signed
 * variable updates.
 */

export { BOOT_IMAGE_UKI, bootImageLayer, extractBootUki, sealBootImage } from './boot-image.ts';
export {
  type BuildUkiOptions,
  buildUki,
  DEFAULT_STUB,
  type SectionSource,
  type UkiBuildResult,
  type UkiInputs,
  type UkiSectionInfo,
} from './build.ts';
export { UkiError, type UkiErrorCode } from './errors.ts';
export { type InspectedSection, type InspectedSignature, inspectUki, type UkiInspection } from './inspect.ts';
export { kernelRelease, mergeSbat, SBAT_HEADER, SBAT_UKI_DEFAULT, UKI_SECTION_ORDER } from './sections.ts';
export {
  createSecureBootKeys,
  type DatabaseEntry,
  DEFAULT_ENROLL_TIME,
  databaseTrust,
  type EnrollOptions,
  enrollSecureBoot,
  enrollVarstoreFile,
  entryCertificates,
  SEAL_OWNER_GUID,
  type SecureBootKeyFiles,
  type SecureBootState,
  type SignedUpdateOptions,
  secureBootState,
  signatureEntry,
  signedVariableUpdate,
} from './secureboot.ts';
export {
  type ForbiddenList,
  type PeVerification,
  type SignatureReport,
  type SignPeOptions,
  type SignPeResult,
  signPe,
  type VerifyPeOptions,
  verifyImage,
  verifyPe,
} from './sign.ts';
