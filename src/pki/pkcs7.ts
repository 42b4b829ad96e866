/**
 * PKCS#7 in the form the Linux kernel verifies (fs-verity built-in signatures, dm-verity
 * root-hash signatures, IPE policies), on top of the CMS module (cms.ts): one signer named by
 * issuer and serial number, no signed attributes, content detached (or embedded, for IPE
 * policies), certificates left out unless asked for — what `fsverity sign` and
 * `openssl smime -sign -noattr -nocerts -binary` produce, byte for byte.
 *
 * Verification follows the kernel's trust rule: a signer is accepted when its certificate is
 * one of the trusted ones (found by issuer and serial number, so the signature need not carry
 * it), or when certificates the signature carries lead from the signer to a trusted one.
 */
import { type KeyObject, X509Certificate as NodeCertificate } from 'node:crypto';
import { AsnConvert, AsnParser } from '@peculiar/asn1-schema';
import { Certificate as AsnCertificate } from '@peculiar/asn1-x509';
import {
  type CertificateInput,
  type CmsSignedData,
  type CmsSigner,
  certificateDer,
  chainsTo,
  OIDS,
  parseCms,
  signCms,
  verifyCmsSigner,
} from './cms.ts';
import { encodeTlv } from './der.ts';
import { PkiError } from './errors.ts';
import { x509 } from './x509.ts';

export type Pkcs7Digest = 'sha256' | 'sha384' | 'sha512';

/** A certificate as cms.ts takes it, or PEM text. */
export type CertificateSource = CertificateInput | string;

export function toNodeCertificate(input: CertificateSource): NodeCertificate {
  if (input instanceof NodeCertificate) return input;
  try {
    return new NodeCertificate(typeof input === 'string' ? input : certificateDer(input));
  } catch (error) {
    throw new PkiError('PKI_BAD_CERTIFICATE', `cannot read the certificate: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

export interface Pkcs7SignOptions {
  /** The signer's certificate. */
  certificate: CertificateSource;
  /** Its private key (RSA or ECDSA: what the kernel verifies). */
  key?: KeyObject;
  /** Digest algorithm (default sha256, as `fsverity sign` and `openssl smime` use). */
  digest?: Pkcs7Digest;
  /**
   * Carry the signer's certificate and these in the signature (default: carry none, as the
   * kernel finds the signer in its keyring).
   */
  certificates?: CertificateSource[];
  /** Embed the signed bytes (IPE policies) instead of a detached signature. */
  attached?: boolean;
  /** Makes the signature value for a key held elsewhere (see CmsSignOptions.signature). */
  signature?: (data: Buffer, digest: Pkcs7Digest) => Buffer | Uint8Array;
}

/** A PKCS#7 SignedData over `data`, DER in a ContentInfo. */
export function signPkcs7(data: Uint8Array, options: Pkcs7SignOptions): Buffer {
  const signer = toNodeCertificate(options.certificate);
  const type = signer.publicKey.asymmetricKeyType;
  if (type !== 'rsa' && type !== 'ec') {
    throw new PkiError(
      'PKI_BAD_KEY',
      `a ${type} key cannot make signatures the kernel checks (RSA or ECDSA only)`,
      {
        subject: signer.subject,
      },
    );
  }
  const carried = (options.certificates ?? [])
    .map(toNodeCertificate)
    .filter((c) => !c.raw.equals(signer.raw));
  const external = options.signature;
  return signCms({
    ...(options.key ? { key: options.key } : {}),
    ...(external ? { signature: (d: Buffer, digest: string) => external(d, digest as Pkcs7Digest) } : {}),
    certificates: [signer, ...carried],
    carryCertificates: options.certificates !== undefined,
    digest: options.digest ?? 'sha256',
    contentType: OIDS.data,
    data,
    ...(options.attached ? { content: encodeTlv(0x04, Buffer.from(data)) } : {}),
    signedAttributes: false,
  });
}

/** Decodes a PKCS#7 SignedData in a ContentInfo; nothing is verified. */
export function parsePkcs7(der: Uint8Array, what = 'PKCS#7 signature'): CmsSignedData {
  return parseCms(Buffer.from(der), { wrapped: true, what });
}

function serialHex(bytes: Uint8Array): string {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return Buffer.from(bytes.subarray(i)).toString('hex');
}

/** The certificate a signer names, as text: serial number and issuer. */
export function signerName(signer: CmsSigner): string {
  let issuer: string;
  try {
    issuer = new x509.Name(signer.issuer).toString();
  } catch {
    issuer = 'an unreadable issuer';
  }
  return `serial ${serialHex(signer.serialNumber)} of "${issuer}"`;
}

/** Whether `cert` is the certificate a signer names (issuer and serial number). */
function names(signer: CmsSigner, cert: NodeCertificate): boolean {
  try {
    const tbs = AsnParser.parse(cert.raw, AsnCertificate).tbsCertificate;
    return (
      serialHex(new Uint8Array(tbs.serialNumber)) === serialHex(signer.serialNumber) &&
      Buffer.from(AsnConvert.serialize(tbs.issuer)).equals(signer.issuer)
    );
  } catch {
    return false;
  }
}

export interface Pkcs7Verified {
  /** The certificate whose key made the signature. */
  signer: NodeCertificate;
  /** The trusted certificate that vouches for it (the signer itself, or an issuer up its chain). */
  trustedBy: NodeCertificate;
}

/**
 * Checks a PKCS#7 signature over `data` (detached) or over its own content (`data` undefined)
 * against trusted certificates: the first signer that verifies and is trusted wins. Throws
 * PKI_BAD_SIGNATURE (the bytes are not what was signed) or PKI_UNTRUSTED (no trusted signer).
 */
export function verifyPkcs7(
  signature: Uint8Array,
  data: Uint8Array | undefined,
  trusted: CertificateSource[],
  what = 'signature',
): Pkcs7Verified {
  const signed = parsePkcs7(signature, what);
  const bad = (message: string) => new PkiError('PKI_BAD_SIGNATURE', `${what}: ${message}`);
  if (signed.contentType !== OIDS.data) throw bad(`it signs ${signed.contentType}, not data`);
  if (signed.content && signed.content.tag !== 0x04) throw bad('its embedded content is not an OCTET STRING');
  const content = data === undefined ? signed.content?.value : Buffer.from(data);
  if (!content) throw bad('detached, and no data was given to check');
  if (data !== undefined && signed.content && !signed.content.value.equals(content))
    throw bad('its embedded content is not the data');
  const anchors = trusted.map(toNodeCertificate);
  const problems: string[] = [];
  let untrusted = false;
  for (const signer of signed.signers) {
    const candidates = [...anchors, ...signed.certificates].filter((c) => names(signer, c));
    if (candidates.length === 0) {
      problems.push(`its signer (${signerName(signer)}) is not a trusted certificate`);
      untrusted = true;
      continue;
    }
    for (const cert of candidates) {
      try {
        verifyCmsSigner(signed, { ...signer, certificate: cert }, content, what);
      } catch (error) {
        if (!(error instanceof PkiError)) throw error;
        problems.push(error.message.replace(`${what}: `, ''));
        continue;
      }
      const trustedBy = anchors.find((a) => a.raw.equals(cert.raw) || chainsTo(cert, signed.certificates, a));
      if (trustedBy) return { signer: cert, trustedBy };
      problems.push(`its signer "${cert.subject.replace(/\n/g, ', ')}" is not trusted`);
      untrusted = true;
    }
  }
  throw new PkiError(
    untrusted ? 'PKI_UNTRUSTED' : 'PKI_BAD_SIGNATURE',
    `${what}: ${[...new Set(problems)].join('; ')}`,
  );
}
