export { type BuiltSystem, buildSystem, resolveTargets } from './build.ts';
export { createEnvelope, JWS_MEDIA_TYPE, NOTARY_ARTIFACT_TYPE, openEnvelope } from './envelope.ts';
export { ManifestError, type ManifestErrorCode } from './errors.ts';
export {
  COSIGN_SIGN_PREDICATE,
  type ImageSignatureReport,
  SIGSTORE_BUNDLE_TYPE,
  signImage,
  verifyImageSignature,
} from './image-signature.ts';
export { signSystem } from './sign.ts';
export {
  canonicalJson,
  parseSystemManifest,
  parseSystemSpec,
  SYSTEM_ARTIFACT_TYPE,
  SYSTEM_MEDIA_TYPE,
  type SystemManifest,
  type SystemSpec,
  type SystemTarget,
  securityVersionOf,
} from './spec.ts';
export { type Check, type VerifyOptions, type VerifyReport, verifySystem } from './verify.ts';
