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
  type CertificateInput,
  type Pkcs7,
  type Pkcs7Digest,
  type Pkcs7Signer,
  type Pkcs7SignOptions,
  type Pkcs7Verified,
  parsePkcs7,
  signerName,
  signPkcs7,
  toNodeCertificate,
  verifyPkcs7,
} from './pkcs7.ts';
export {
  ecdsaSignatureToDer,
  type JwsAlgorithm,
  jwsAlgorithmFor,
  KeySigner,
  type Signer,
  verifySignature,
} from './signer.ts';
export { type IssuedFiles, initPki, newDevice, newProduct } from './store.ts';
export { x509 } from './x509.ts';
