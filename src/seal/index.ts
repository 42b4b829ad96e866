/** Sealed images: OCI images whose every layer the kernel verifies at run time. */
export {
  isSealedLayer,
  type LayerFilesystem,
  layerFilesystem,
  StackerMediaType,
  VERITY_ANNOTATION,
  verityRootHash,
} from './formats.ts';
export { MountError, type MountResult, mountImage, unmountImage } from './mount.ts';
export { SealingError, type SealOptions, type SealResult, sealImage } from './seal.ts';
export { ImageVerifyError, type LayerReport, verifyImage } from './verify.ts';
