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
  ecdsaSignatureToDer,
  type JwsAlgorithm,
  jwsAlgorithmFor,
  KeySigner,
  type Signer,
  verifySignature,
} from './signer.ts';
export { type IssuedFiles, initPki, newDevice, newKernelSigner, newProduct } from './store.ts';
export { x509 } from './x509.ts';
