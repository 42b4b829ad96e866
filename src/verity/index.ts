/** dm-verity hash trees and fs-verity digests. */
export {
  appendVerity,
  decodeSuperblock,
  encodeSuperblock,
  formatVerity,
  geometry,
  readSuperblock,
  type TreeGeometry,
  type VerifyOptions,
  type VerityFormatOptions,
  type VerityParams,
  type VerityResult,
  verifyVerity,
} from './dm-verity.ts';
export { VerityError, type VerityErrorCode } from './errors.ts';
export {
  type FsverityAlgorithm,
  type FsverityOptions,
  formattedDigest,
  fsverityDigest,
  fsverityDigestFile,
} from './fs-verity.ts';
export { DIGEST_SIZE, type HashAlgorithm, nativeHashing } from './hashing.ts';
export { enableKernelVerity, type KernelVerityOptions, measureKernelVerity } from './kernel.ts';
