/**
 * Credential protection (TPM 2.0 Part 1, 24): what TPM2_MakeCredential computes, done offline by
 * a verifier that holds only public areas. A credential (at most the protecting key's Name digest
 * long) is bound to an object's Name and protected with a decryption key's public part:
 *
 *   seed           makeSeed(key, "IDENTITY")         ECDH + KDFe, or RSA-OAEP
 *   symKey         KDFa(nameAlg, seed, "STORAGE", objectName, "", key's symmetric key bits)
 *   encIdentity    AES-CFB(symKey, IV 0) of TPM2B_DIGEST(credential)
 *   hmacKey        KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits)
 *   outerHMAC      HMAC(nameAlg, hmacKey, encIdentity ‖ objectName)
 *   credentialBlob TPM2B_DIGEST(outerHMAC) ‖ encIdentity          (TPM2B_ID_OBJECT contents)
 *
 * TPM2_ActivateCredential gives the credential back only in the TPM that holds both the
 * decryption key's private part and a loaded object with that Name.
 */
import { createCipheriv } from 'node:crypto';
import { ALG, OBJECT } from './constants.ts';
import { kdfa, makeSeed } from './crypto.ts';
import { TpmError } from './errors.ts';
import { digestSize, hmac } from './hash.ts';
import { marshal } from './marshal.ts';
import type { PublicArea } from './structures.ts';

export interface Credential {
  /** TPM2B_ID_OBJECT contents, for TPM2_ActivateCredential's credentialBlob. */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET contents, for its secret. */
  secret: Buffer;
}

/** TPM2_MakeCredential without a TPM: `credential` for the object `objectName`, protected with `key`. */
export function makeCredential(key: PublicArea, credential: Uint8Array, objectName: Uint8Array): Credential {
  if (key.type !== 'ecc' && key.type !== 'rsa')
    throw new TpmError('TPM_KEY', `a ${key.type} object cannot protect a credential`);
  const restrictedDecrypt = OBJECT.restricted | OBJECT.decrypt;
  if ((key.attributes & restrictedDecrypt) !== restrictedDecrypt)
    throw new TpmError('TPM_KEY', 'a credential is protected with a restricted decryption key');
  const sym = key.symmetric;
  if (sym.alg !== ALG.AES || sym.mode !== ALG.CFB || !sym.keyBits || ![128, 192, 256].includes(sym.keyBits))
    throw new TpmError('TPM_KEY', 'the protecting key has no AES-CFB symmetric algorithm');
  const size = digestSize(key.nameAlg);
  if (credential.length === 0 || credential.length > size)
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `a credential is 1 to ${size} bytes for this key, not ${credential.length}`,
    );
  if (objectName.length < 2) throw new TpmError('TPM_INVALID_ARGUMENT', 'the object Name is empty');
  const { seed, encrypted } = makeSeed(key, 'IDENTITY');
  const symKey = kdfa(key.nameAlg, seed, 'STORAGE', objectName, Buffer.alloc(0), sym.keyBits);
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(marshal((w) => w.b(credential))), cipher.final()]);
  const hmacKey = kdfa(key.nameAlg, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), size * 8);
  const outer = hmac(key.nameAlg, hmacKey, encIdentity, objectName);
  seed.fill(0);
  return { credentialBlob: marshal((w) => w.b(outer).bytes(encIdentity)), secret: encrypted };
}
