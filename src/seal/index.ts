/** Sealed images: OCI images whose every layer the kernel verifies at run time. */
export {
  isSealedLayer,
  type LayerFilesystem,
  layerFilesystem,
  StackerMediaType,
  VERITY_ANNOTATION,
  verityRootHash,
} from './formats.ts';
export {
  type KernelSigner,
  rootHashMessage,
  signFsverityDigest,
  signRootHash,
  verifyFsveritySignature,
  verifyRootHashSignature,
} from './kernel-signatures.ts';
export { MountError, type MountOptions, type MountResult, mountImage, unmountImage } from './mount.ts';
export { SealingError, type SealOptions, type SealResult, sealImage } from './seal.ts';
export {
  type ImageSignatures,
  type SignatureCheck,
  type SignedEntry,
  type SignSealedResult,
  signSealedImage,
  verifyImageSignatures,
} from './sign.ts';
export {
  COMPOSEFS_METADATA_ARTIFACT_TYPE,
  COMPOSEFS_SIGNATURE_MEDIA_TYPE,
  SignatureArtifactError,
  VERITY_LAYER_ANNOTATION,
  VERITY_ROOT_HASH_ANNOTATION,
  VERITY_SIGNATURE_MEDIA_TYPE,
  VERITY_SIGNATURES_ARTIFACT_TYPE,
} from './signature-artifacts.ts';
export { ImageVerifyError, type LayerReport, verifyImage } from './verify.ts';
