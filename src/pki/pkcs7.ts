/**
 * PKCS#7 SignedData in the form the Linux kernel verifies (fs-verity built-in signatures,
 * dm-verity root-hash signatures, IPE policies): one signer named by issuer and serial number,
 * no signed attributes, content detached (or embedded, for IPE policies), certificates left out
 * unless asked for — what `fsverity sign` and `openssl smime -sign -noattr -nocerts -binary`
 * produce, byte for byte. Encoding and decoding go through @peculiar/asn1-cms.
 *
 * Verification follows the kernel's trust rule: a signer is accepted when its certificate is
 * one of the trusted ones (found by issuer and serial number, so the signature need not carry
 * it), or when certificates the signature carries lead from the signer to a trusted one.
 */
import {
  createHash,
  createPublicKey,
  type KeyObject,
  X509Certificate as NodeCertificate,
  sign,
  verify,
} from 'node:crypto';
import {
  type Attribute,
  CertificateChoices,
  CertificateSet,
  CMSVersion,
  ContentInfo,
  DigestAlgorithmIdentifier,
  DigestAlgorithmIdentifiers,
  EncapsulatedContent,
  EncapsulatedContentInfo,
  IssuerAndSerialNumber,
  id_data,
  id_signedData,
  SignatureAlgorithmIdentifier,
  SignedData,
  SignerIdentifier,
  SignerInfo,
  SignerInfos,
} from '@peculiar/asn1-cms';
import { AsnConvert, AsnParser, OctetString } from '@peculiar/asn1-schema';
import { Certificate as AsnCertificate } from '@peculiar/asn1-x509';
import { PkiError } from './errors.ts';
import { x509 } from './x509.ts';

export type Pkcs7Digest = 'sha256' | 'sha384' | 'sha512';

const DIGEST_OIDS: Record<Pkcs7Digest, string> = {
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};
const RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
const RSA_WITH: Record<string, Pkcs7Digest> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
const ECDSA_WITH: Record<Pkcs7Digest, string> = {
  sha256: '1.2.840.10045.4.3.2',
  sha384: '1.2.840.10045.4.3.3',
  sha512: '1.2.840.10045.4.3.4',
};
const CONTENT_TYPE_ATTRIBUTE = '1.2.840.113549.1.9.3';
const MESSAGE_DIGEST_ATTRIBUTE = '1.2.840.113549.1.9.4';

/** A certificate: DER bytes, PEM text, or a parsed certificate (node's or @peculiar/x509's). */
export type CertificateInput = Uint8Array | string | NodeCertificate | { rawData: ArrayBuffer };

export function toNodeCertificate(input: CertificateInput): NodeCertificate {
  if (input instanceof NodeCertificate) return input;
  try {
    if (typeof input === 'string' || input instanceof Uint8Array) return new NodeCertificate(input);
    return new NodeCertificate(Buffer.from(input.rawData));
  } catch (error) {
    throw new PkiError('PKI_BAD_CERTIFICATE', `cannot read the certificate: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

export interface Pkcs7SignOptions {
  /** The signer's certificate. */
  certificate: CertificateInput;
  /** Its private key (RSA or ECDSA: what the kernel verifies). */
  key?: KeyObject;
  /** Digest algorithm (default sha256, as `fsverity sign` and `openssl smime` use). */
  digest?: Pkcs7Digest;
  /** Certificates to carry: none by default (the kernel finds the signer in its keyring). */
  certificates?: CertificateInput[];
  /** Embed the signed bytes (IPE policies) instead of a detached signature. */
  attached?: boolean;
  /**
   * Makes the signature value over the bytes given (a key held elsewhere, such as a TPM or an
   * HSM): RSA PKCS#1 v1.5, or ECDSA in DER. Default: node:crypto with `key`.
   */
  signature?: (data: Buffer, digest: Pkcs7Digest) => Buffer | Uint8Array;
}

function ab(data: Uint8Array): ArrayBuffer {
  return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer;
}

function certificateFields(cert: NodeCertificate): {
  issuer: AsnCertificate['tbsCertificate']['issuer'];
  serial: ArrayBuffer;
} {
  const parsed = AsnParser.parse(cert.raw, AsnCertificate);
  return { issuer: parsed.tbsCertificate.issuer, serial: parsed.tbsCertificate.serialNumber };
}

/** A PKCS#7 SignedData over `data`, DER in a ContentInfo. */
export function signPkcs7(data: Uint8Array, options: Pkcs7SignOptions): Buffer {
  const digest = options.digest ?? 'sha256';
  if (!(digest in DIGEST_OIDS))
    throw new PkiError('PKI_INVALID_OPTION', `unsupported PKCS#7 digest ${String(digest)}`);
  const cert = toNodeCertificate(options.certificate);
  const publicKey = cert.publicKey;
  const keyType = publicKey.asymmetricKeyType;
  if (keyType !== 'rsa' && keyType !== 'ec') {
    throw new PkiError(
      'PKI_BAD_KEY',
      `a ${keyType} key cannot make signatures the kernel checks (RSA or ECDSA only)`,
      { subject: cert.subject },
    );
  }
  if (options.key) {
    const spki = (k: KeyObject) => k.export({ type: 'spki', format: 'der' });
    const mine = spki(createPublicKey(options.key));
    if (!Buffer.from(mine).equals(spki(publicKey))) {
      throw new PkiError('PKI_BAD_KEY', `the key does not belong to certificate "${oneLine(cert.subject)}"`, {
        subject: cert.subject,
      });
    }
  } else if (!options.signature) {
    throw new PkiError('PKI_INVALID_OPTION', 'a PKCS#7 signature needs the private key');
  }
  const bytes = Buffer.from(data);
  const make =
    options.signature ??
    ((tbs: Buffer, d: Pkcs7Digest) =>
      keyType === 'rsa'
        ? sign(d, tbs, options.key!)
        : sign(d, tbs, { key: options.key!, dsaEncoding: 'der' }));
  const value = Buffer.from(make(bytes, digest));
  const { issuer, serial } = certificateFields(cert);
  const digestAlgorithm = () =>
    new DigestAlgorithmIdentifier({ algorithm: DIGEST_OIDS[digest], parameters: null });
  const signerInfo = new SignerInfo({
    version: CMSVersion.v1,
    sid: new SignerIdentifier({
      issuerAndSerialNumber: new IssuerAndSerialNumber({ issuer, serialNumber: serial }),
    }),
    digestAlgorithm: digestAlgorithm(),
    // RSA as OpenSSL names it in PKCS#7 (rsaEncryption, NULL parameters); ECDSA with its hash.
    signatureAlgorithm:
      keyType === 'rsa'
        ? new SignatureAlgorithmIdentifier({ algorithm: RSA_ENCRYPTION, parameters: null })
        : new SignatureAlgorithmIdentifier({ algorithm: ECDSA_WITH[digest] }),
    signature: new OctetString(ab(value)),
  });
  const carried = (options.certificates ?? []).map(toNodeCertificate);
  const signedData = new SignedData({
    version: CMSVersion.v1,
    digestAlgorithms: new DigestAlgorithmIdentifiers([digestAlgorithm()]),
    encapContentInfo: new EncapsulatedContentInfo({
      eContentType: id_data,
      ...(options.attached
        ? { eContent: new EncapsulatedContent({ single: new OctetString(ab(bytes)) }) }
        : {}),
    }),
    ...(carried.length
      ? {
          certificates: new CertificateSet(
            carried.map(
              (c) => new CertificateChoices({ certificate: AsnParser.parse(c.raw, AsnCertificate) }),
            ),
          ),
        }
      : {}),
    signerInfos: new SignerInfos([signerInfo]),
  });
  return Buffer.from(
    AsnConvert.serialize(
      new ContentInfo({ contentType: id_signedData, content: AsnConvert.serialize(signedData) }),
    ),
  );
}

function oneLine(text: string): string {
  return text.replace(/\n/g, ', ');
}

export interface Pkcs7Signer {
  /** The signer's issuer (DER Name) and serial number (big-endian, as encoded). */
  issuer: Buffer;
  serialNumber: Buffer;
  digest: Pkcs7Digest;
  signatureAlgorithm: string;
  signature: Buffer;
  /** Signed attributes, when the signer used them: their DER SET, content type and message digest. */
  signedAttributes?: { der: Buffer; contentType?: string; messageDigest?: Buffer };
}

export interface Pkcs7 {
  contentType: string;
  /** The embedded content, when not detached. */
  content?: Buffer;
  certificates: NodeCertificate[];
  signers: Pkcs7Signer[];
}

function bad(what: string, message: string, cause?: unknown): PkiError {
  return new PkiError('PKI_BAD_CMS', `${what}: ${message}`, { cause });
}

/** Decodes a PKCS#7 SignedData (in a ContentInfo). Nothing is verified here. */
export function parsePkcs7(der: Uint8Array, what = 'PKCS#7 signature'): Pkcs7 {
  try {
    return parseStrictly(Buffer.from(der), what);
  } catch (error) {
    if (error instanceof PkiError) throw error;
    throw bad(what, `does not decode (${(error as Error).message})`, error);
  }
}

function parseStrictly(der: Buffer, what: string): Pkcs7 {
  if (der.length === 0) throw bad(what, 'empty');
  const info = AsnParser.parse(der, ContentInfo);
  // Re-encoding must give the same bytes: no trailing data, DER only.
  if (!Buffer.from(AsnConvert.serialize(info)).equals(der)) throw bad(what, 'not one DER ContentInfo');
  if (info.contentType !== id_signedData)
    throw bad(what, `content type ${info.contentType} is not signedData`);
  const signed = AsnParser.parse(info.content, SignedData);
  const contentType = signed.encapContentInfo.eContentType;
  const econtent = signed.encapContentInfo.eContent;
  let content: Buffer | undefined;
  if (econtent) {
    if (econtent.single) content = Buffer.from(econtent.single.buffer);
    else if (econtent.any) throw bad(what, 'embedded content is not an OCTET STRING');
  }
  const certificates: NodeCertificate[] = [];
  for (const choice of signed.certificates ?? []) {
    if (!choice.certificate) continue;
    const raw = Buffer.from(AsnConvert.serialize(choice.certificate));
    try {
      certificates.push(new NodeCertificate(raw));
    } catch (error) {
      throw bad(what, `a carried certificate does not decode (${(error as Error).message})`, error);
    }
  }
  const signers = signed.signerInfos.map((s, i): Pkcs7Signer => {
    const digest = (Object.keys(DIGEST_OIDS) as Pkcs7Digest[]).find(
      (d) => DIGEST_OIDS[d] === s.digestAlgorithm.algorithm,
    );
    if (!digest) throw bad(what, `signer ${i + 1}: unsupported digest ${s.digestAlgorithm.algorithm}`);
    const sid = s.sid.issuerAndSerialNumber;
    if (!sid) throw bad(what, `signer ${i + 1}: named by key identifier, not issuer and serial number`);
    const signer: Pkcs7Signer = {
      issuer: Buffer.from(AsnConvert.serialize(sid.issuer)),
      serialNumber: Buffer.from(sid.serialNumber),
      digest,
      signatureAlgorithm: s.signatureAlgorithm.algorithm,
      signature: Buffer.from(s.signature.buffer),
    };
    if (s.signedAttrs) {
      const attrs: Attribute[] = [...s.signedAttrs];
      const encoded = attrs.map((a) => Buffer.from(AsnConvert.serialize(a))).sort(Buffer.compare);
      const set = Buffer.concat(encoded);
      const attributes: NonNullable<Pkcs7Signer['signedAttributes']> = {
        der: Buffer.concat([derHeader(0x31, set.length), set]),
      };
      for (const a of attrs) {
        const value = a.attrValues[0];
        if (a.attrValues.length !== 1 || !value) continue;
        if (a.attrType === CONTENT_TYPE_ATTRIBUTE) attributes.contentType = decodeOid(Buffer.from(value));
        if (a.attrType === MESSAGE_DIGEST_ATTRIBUTE)
          attributes.messageDigest = decodeOctets(Buffer.from(value));
      }
      signer.signedAttributes = attributes;
    }
    return signer;
  });
  if (signers.length === 0) throw bad(what, 'no signer');
  return { contentType, ...(content ? { content } : {}), certificates, signers };
}

function derHeader(tag: number, length: number): Buffer {
  if (length < 0x80) return Buffer.of(tag, length);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.of(tag, 0x80 | bytes.length, ...bytes);
}

function decodeOid(tlv: Buffer): string | undefined {
  if (tlv[0] !== 0x06 || tlv.length < 3 || tlv[1]! >= 0x80 || tlv[1]! + 2 !== tlv.length) return undefined;
  const body = tlv.subarray(2);
  const parts: number[] = [
    Math.floor(Math.min(body[0]!, 80) / 40),
    body[0]! - Math.floor(Math.min(body[0]!, 80) / 40) * 40,
  ];
  let value = 0;
  for (const byte of body.subarray(1)) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}

function decodeOctets(tlv: Buffer): Buffer | undefined {
  if (tlv[0] !== 0x04 || tlv.length < 2 || tlv[1]! >= 0x80 || tlv[1]! + 2 !== tlv.length) return undefined;
  return tlv.subarray(2);
}

function serialHex(bytes: Uint8Array): string {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return Buffer.from(bytes.subarray(i)).toString('hex');
}

/** The certificate a signer names, as text: issuer and serial number. */
export function signerName(signer: Pkcs7Signer): string {
  let issuer: string;
  try {
    issuer = new x509.Name(signer.issuer).toString();
  } catch {
    issuer = 'an unreadable issuer';
  }
  return `serial ${serialHex(signer.serialNumber)} of "${issuer}"`;
}

/** Whether `cert` is the certificate a signer names (issuer and serial number). */
function names(signer: Pkcs7Signer, cert: NodeCertificate): boolean {
  try {
    const { issuer, serial } = certificateFields(cert);
    return (
      serialHex(new Uint8Array(serial)) === serialHex(signer.serialNumber) &&
      Buffer.from(AsnConvert.serialize(issuer)).equals(signer.issuer)
    );
  } catch {
    return false;
  }
}

function issuedBy(subject: NodeCertificate, issuer: NodeCertificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** The signature of one signer over `data` with `cert`'s key (no trust decision). */
function signatureHolds(signer: Pkcs7Signer, data: Buffer, cert: NodeCertificate): string | undefined {
  let signed = data;
  if (signer.signedAttributes) {
    const { contentType, messageDigest, der } = signer.signedAttributes;
    if (contentType !== id_data) return `its signed content type is ${contentType ?? 'missing'}, not data`;
    if (!messageDigest?.equals(createHash(signer.digest).update(data).digest()))
      return 'its signed message digest does not match the content';
    signed = der;
  }
  let key: KeyObject;
  try {
    key = cert.publicKey;
  } catch {
    return `the public key of "${oneLine(cert.subject)}" does not decode`;
  }
  const rsa =
    signer.signatureAlgorithm === RSA_ENCRYPTION || RSA_WITH[signer.signatureAlgorithm] !== undefined;
  const ecdsa = Object.values(ECDSA_WITH).includes(signer.signatureAlgorithm);
  if (rsa && key.asymmetricKeyType !== 'rsa') return 'an RSA signature from a non-RSA key';
  if (ecdsa && key.asymmetricKeyType !== 'ec') return 'an ECDSA signature from a non-EC key';
  if (!rsa && !ecdsa) return `unsupported signature algorithm ${signer.signatureAlgorithm}`;
  let ok = false;
  try {
    ok = rsa
      ? verify(signer.digest, signed, key, signer.signature)
      : verify(signer.digest, signed, { key, dsaEncoding: 'der' }, signer.signature);
  } catch {
    ok = false;
  }
  return ok ? undefined : `the signature does not verify with the key of "${oneLine(cert.subject)}"`;
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
  signature: Uint8Array | Pkcs7,
  data: Uint8Array | undefined,
  trusted: CertificateInput[],
  what = 'signature',
): Pkcs7Verified {
  const p7 = signature instanceof Uint8Array ? parsePkcs7(signature, what) : signature;
  const content = data === undefined ? p7.content : Buffer.from(data);
  if (!content) throw new PkiError('PKI_BAD_SIGNATURE', `${what}: detached, and no data was given to check`);
  if (data !== undefined && p7.content && !p7.content.equals(Buffer.from(data)))
    throw new PkiError('PKI_BAD_SIGNATURE', `${what}: its embedded content is not the data`);
  if (p7.contentType !== id_data)
    throw new PkiError('PKI_BAD_SIGNATURE', `${what}: it signs ${p7.contentType}, not data`);
  const anchors = trusted.map(toNodeCertificate);
  const problems: string[] = [];
  for (const signer of p7.signers) {
    const candidates = [...anchors, ...p7.certificates].filter((c) => names(signer, c));
    if (candidates.length === 0) {
      problems.push(`its signer (${signerName(signer)}) is not a trusted certificate`);
      continue;
    }
    for (const cert of candidates) {
      const problem = signatureHolds(signer, content, cert);
      if (problem) {
        problems.push(problem);
        continue;
      }
      const trustedBy = trustOf(cert, p7.certificates, anchors);
      if (trustedBy) return { signer: cert, trustedBy };
      problems.push(`its signer "${oneLine(cert.subject)}" is not trusted`);
    }
  }
  const badSignature = problems.every((p) => !p.includes('not trusted') && !p.includes('not a trusted'));
  throw new PkiError(
    badSignature ? 'PKI_BAD_SIGNATURE' : 'PKI_UNTRUSTED',
    `${what}: ${[...new Set(problems)].join('; ')}`,
  );
}

/** The trusted certificate reached from `cert` through the carried ones, if any. */
function trustOf(
  cert: NodeCertificate,
  pool: NodeCertificate[],
  anchors: NodeCertificate[],
): NodeCertificate | undefined {
  let current = cert;
  const seen = new Set<NodeCertificate>();
  for (let depth = 0; depth < 8; depth++) {
    const anchor = anchors.find((a) => a.raw.equals(current.raw) || issuedBy(current, a));
    if (anchor) return anchor;
    seen.add(current);
    const next = pool.find((c) => !seen.has(c) && issuedBy(current, c));
    if (!next) return undefined;
    current = next;
  }
  return undefined;
}
