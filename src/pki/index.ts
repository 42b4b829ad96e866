export {
  type AuthenticodeSignature,
  type AuthenticodeSignOptions,
  checkImageDigests,
  readAuthenticodeSignatures,
  SPC_INDIRECT_DATA_OID,
  SPC_PE_IMAGE_DATA_OID,
  signAuthenticodeDigest,
  signatureTrustedBy,
  spcIndirectDataContent,
  tryReadAuthenticodeSignatures,
} from './authenticode.ts';
export {
  type Certificate,
  CODE_SIGNING_OID,
  deviceIdOf,
  issueCertificate,
  parseCertificate,
  parseCertificates,
  productIdOf,
} from './certificates.ts';
export { type ChainOptions, verifyChain } from './chain.ts';
export {
  type CertificateInput,
  type CmsDigest,
  type CmsSignedData,
  type CmsSigner,
  type CmsSignOptions,
  certificateDer,
  chainsTo,
  parseCms,
  signCms,
  verifyCmsSigner,
} from './cms.ts';
export { PkiError, type PkiErrorCode } from './errors.ts';
export {
  generateKeyPair,
  KEY_TYPES,
  type KeyType,
  loadPrivateKey,
  parseKeyType,
  privateKeyPem,
} from './keys.ts';
export {
  type CertificateSource,
  type Pkcs7Digest,
  type Pkcs7SignOptions,
  type Pkcs7Verified,
  parsePkcs7,
  signerName,
  signPkcs7,
  toNodeCertificate,
  verifyPkcs7,
} from './pkcs7.ts';
export { type FirmwareVerdict, firmwareVerdict } from './secure-boot.ts';
export {
  ecdsaSignatureToDer,
  type JwsAlgorithm,
  jwsAlgorithmFor,
  KeySigner,
  type Signer,
  verifySignature,
} from './signer.ts';
export { type IssuedFiles, initPki, newDevice, newKernelSigner, newProduct } from './store.ts';
export { x509 } from './x509.ts';
