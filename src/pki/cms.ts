/**
 * CMS / PKCS#7 SignedData (RFC 5652, and PKCS#7 v1.5 where content is any DER value rather than
 * an OCTET STRING, as Authenticode has it): signing with one signer identified by issuer and
 * serial number, and parsing and checking what other tools sign. Built with @peculiar/asn1-cms;
 * the exact bytes a signature covers are taken with the strict DER walker, never re-encoded.
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
  Attribute,
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
import { children, decodeOid, encodeOid, encodeTime, encodeTlv, readTlv, type Tlv } from './der.ts';
import { PkiError } from './errors.ts';
import { keyTypeOf } from './keys.ts';

export type CmsDigest = 'sha1' | 'sha256' | 'sha384' | 'sha512';

export const OIDS = {
  data: id_data,
  signedData: id_signedData,
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecPublicKey: '1.2.840.10045.2.1',
} as const;

const DIGEST_OIDS: Record<CmsDigest, string> = {
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};
const RSA_SIGNATURE_OIDS: Record<string, CmsDigest> = {
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
const ECDSA_SIGNATURE_OIDS: Record<string, CmsDigest> = {
  '1.2.840.10045.4.1': 'sha1',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

export function digestOid(digest: CmsDigest): string {
  return DIGEST_OIDS[digest];
}

export function digestFromOid(oid: string): CmsDigest | undefined {
  return (Object.entries(DIGEST_OIDS) as [CmsDigest, string][]).find(([, o]) => o === oid)?.[0];
}

/** A certificate as DER, from PEM text, DER bytes or a parsed certificate of either library. */
export type CertificateInput = Uint8Array | { rawData: ArrayBuffer } | NodeCertificate;

export function certificateDer(input: CertificateInput): Buffer {
  if (input instanceof NodeCertificate) return input.raw;
  if (input instanceof Uint8Array) return Buffer.from(input);
  return Buffer.from(input.rawData);
}

export interface CmsSignOptions {
  /** The signer's private key (or `signature`, for a key held elsewhere). */
  key?: KeyObject;
  /**
   * Makes the signature value over the bytes given, for a key held elsewhere (a TPM, an HSM):
   * RSA PKCS#1 v1.5, or ECDSA in DER.
   */
  signature?: (data: Buffer, digest: CmsDigest) => Buffer | Uint8Array;
  /**
   * Carry the certificates in the SignedData (default true). False leaves them out, as OpenSSL's
   * PKCS7_NOCERTS does (`fsverity sign`, `openssl smime -nocerts`): the kernel finds the signer's
   * certificate in its keyring.
   */
  carryCertificates?: boolean;
  /** The signer's certificate first, then any others to include (its issuers). */
  certificates: CertificateInput[];
  digest?: CmsDigest;
  /** The eContentType (id-data for detached signatures over plain data). */
  contentType: string;
  /**
   * A DER value embedded as the content ([0] EXPLICIT, as PKCS#7 v1.5 allows: Authenticode's
   * SpcIndirectDataContent); absent for a detached signature.
   */
  content?: Buffer;
  /** The bytes whose digest is signed: the content's value, or the detached data. */
  data: Uint8Array;
  /** With signed attributes (content type, message digest, signing time); default true. */
  signedAttributes?: boolean;
  signingTime?: Date;
  /** More signed attributes: type and DER values. */
  attributes?: { type: string; values: Buffer[] }[];
  /** Wrap in a ContentInfo (default); false gives the bare SignedData (UEFI authenticated variables). */
  wrap?: boolean;
}

function signatureParameters(
  key: KeyObject,
  digest: CmsDigest,
): { algorithm: string; parameters: ArrayBuffer | null | undefined; sign: (data: Buffer) => Buffer } {
  // A public key (with an external `signature`) tells the algorithm; only a private one signs.
  const type = keyTypeOf(key);
  if (type.startsWith('rsa-')) {
    return {
      algorithm: OIDS.rsaEncryption,
      parameters: null,
      sign: (data) => sign(digest, data, key),
    };
  }
  if (type.startsWith('ecdsa-')) {
    const algorithm = Object.entries(ECDSA_SIGNATURE_OIDS).find(([, d]) => d === digest)![0];
    return {
      algorithm,
      parameters: undefined,
      sign: (data) => sign(digest, data, { key, dsaEncoding: 'der' }),
    };
  }
  throw new PkiError(
    'PKI_BAD_KEY',
    `${type} keys cannot make PKCS#7 signatures for UEFI (RSA or ECDSA only)`,
  );
}

/** Sorts DER encodings as a SET OF requires. */
function sortDer(items: Buffer[]): Buffer[] {
  return [...items].sort(Buffer.compare);
}

/** A SignedData (in a ContentInfo unless `wrap` is false) with one signer. */
export function signCms(options: CmsSignOptions): Buffer {
  const digest = options.digest ?? 'sha256';
  const [signerInput, ...rest] = options.certificates;
  if (!signerInput) throw new PkiError('PKI_INVALID_OPTION', 'a signature needs the signer certificate');
  const signerDer = certificateDer(signerInput);
  const signer = AsnParser.parse(signerDer, AsnCertificate);
  const certificateSpki = Buffer.from(AsnConvert.serialize(signer.tbsCertificate.subjectPublicKeyInfo));
  if (options.key) {
    const keySpki = createPublicKey(options.key).export({ type: 'spki', format: 'der' });
    if (!certificateSpki.equals(keySpki))
      throw new PkiError('PKI_BAD_KEY', 'the key does not belong to the signer certificate');
  } else if (!options.signature) {
    throw new PkiError('PKI_INVALID_OPTION', 'a signature needs the private key');
  }
  const parameters = signatureParameters(
    options.key ?? createPublicKey({ key: certificateSpki, format: 'der', type: 'spki' }),
    digest,
  );
  const external = options.signature;
  if (external) parameters.sign = (data) => Buffer.from(external(data, digest));
  const messageDigest = createHash(digest).update(options.data).digest();
  let signedAttrs: Attribute[] | undefined;
  let toSign: Buffer;
  if (options.signedAttributes !== false) {
    const attributes = [
      { type: OIDS.contentType, values: [encodeOid(options.contentType)] },
      ...(options.signingTime ? [{ type: OIDS.signingTime, values: [encodeTime(options.signingTime)] }] : []),
      { type: OIDS.messageDigest, values: [encodeTlv(0x04, messageDigest)] },
      ...(options.attributes ?? []),
    ].map((a) => new Attribute({ attrType: a.type, attrValues: a.values.map((v) => toArrayBuffer(v)) }));
    const encoded = attributes.map((a) => ({ a, der: Buffer.from(AsnConvert.serialize(a)) }));
    encoded.sort((x, y) => Buffer.compare(x.der, y.der));
    signedAttrs = encoded.map((e) => e.a);
    toSign = encodeTlv(0x31, Buffer.concat(sortDer(encoded.map((e) => e.der))));
  } else {
    toSign = Buffer.from(options.data);
  }
  const signature = parameters.sign(toSign);
  const signerInfo = new SignerInfo({
    version: CMSVersion.v1,
    sid: new SignerIdentifier({
      issuerAndSerialNumber: new IssuerAndSerialNumber({
        issuer: signer.tbsCertificate.issuer,
        serialNumber: signer.tbsCertificate.serialNumber,
      }),
    }),
    digestAlgorithm: new DigestAlgorithmIdentifier({ algorithm: DIGEST_OIDS[digest], parameters: null }),
    ...(signedAttrs ? { signedAttrs } : {}),
    signatureAlgorithm: new SignatureAlgorithmIdentifier({
      algorithm: parameters.algorithm,
      ...(parameters.parameters === null ? { parameters: null } : {}),
    }),
    signature: new OctetString(toArrayBuffer(signature)),
  });
  const signedData = new SignedData({
    version: CMSVersion.v1,
    digestAlgorithms: new DigestAlgorithmIdentifiers([
      new DigestAlgorithmIdentifier({ algorithm: DIGEST_OIDS[digest], parameters: null }),
    ]),
    encapContentInfo: new EncapsulatedContentInfo({
      eContentType: options.contentType,
      ...(options.content
        ? { eContent: new EncapsulatedContent({ any: toArrayBuffer(options.content) }) }
        : {}),
    }),
    ...(options.carryCertificates === false
      ? {}
      : {
          certificates: new CertificateSet(
            [signerDer, ...rest.map(certificateDer)].map(
              (der) => new CertificateChoices({ certificate: AsnParser.parse(der, AsnCertificate) }),
            ),
          ),
        }),
    signerInfos: new SignerInfos([signerInfo]),
  });
  const bare = Buffer.from(AsnConvert.serialize(signedData));
  if (options.wrap === false) return bare;
  return Buffer.from(
    AsnConvert.serialize(new ContentInfo({ contentType: id_signedData, content: toArrayBuffer(bare) })),
  );
}

function toArrayBuffer(data: Uint8Array): ArrayBuffer {
  return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer;
}

export interface CmsSigner {
  version: number;
  digest: CmsDigest;
  signatureAlgorithm: string;
  signature: Buffer;
  /** The signer's issuer (DER Name) and serial number. */
  issuer: Buffer;
  serialNumber: Buffer;
  /** The signed attributes as signed (a DER SET), and the ones Seal reads. */
  signedAttributes?: { der: Buffer; contentType?: string; messageDigest?: Buffer; signingTime?: Date };
  /** The certificate among the SignedData's that the issuer and serial number name. */
  certificate: NodeCertificate | undefined;
}

export interface CmsSignedData {
  version: number;
  contentType: string;
  /** The embedded content as encoded (tag, length, value), when not detached. */
  content: Tlv | undefined;
  digests: string[];
  /** Every certificate the SignedData carries, as DER, in order. */
  certificates: NodeCertificate[];
  signers: CmsSigner[];
}

function bad(what: string, message: string, cause?: unknown): PkiError {
  return new PkiError('PKI_BAD_CMS', `${what}: ${message}`, { cause });
}

const serialOf = (bytes: Uint8Array) => {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return Buffer.from(bytes.subarray(i)).toString('hex');
};

/**
 * Parses a SignedData, wrapped in a ContentInfo or bare (`wrapped`: 'either' tries both). The
 * encoding must fill `der` exactly. Nothing is verified here; see `verifyCmsSigner`.
 */
export function parseCms(
  der: Buffer,
  options: { wrapped?: boolean | 'either'; what?: string } = {},
): CmsSignedData {
  const what = options.what ?? 'PKCS#7 signature';
  try {
    return parseCmsStrictly(der, options.wrapped ?? 'either', what);
  } catch (error) {
    // Whatever the schema objects hold for damaged input (nulls, odd types) is a damaged signature.
    if (error instanceof PkiError) throw error;
    throw bad(what, `does not decode (${(error as Error).message})`, error);
  }
}

function parseCmsStrictly(der: Buffer, wrapped: boolean | 'either', what: string): CmsSignedData {
  const outer = readTlv(der, 0, what);
  if (outer.end !== der.length) throw bad(what, `${der.length - outer.end} bytes follow the DER structure`);
  if (outer.tag !== 0x30) throw bad(what, 'not a SEQUENCE');
  let signedDataTlv = outer;
  const parts = children(outer, der, what);
  const isWrapped = parts.length === 2 && parts[0]!.tag === 0x06;
  if (wrapped === true && !isWrapped) throw bad(what, 'not a ContentInfo');
  if (wrapped === false && isWrapped) throw bad(what, 'a ContentInfo where a bare SignedData belongs');
  if (isWrapped) {
    const type = decodeOid(parts[0]!.value);
    if (type !== id_signedData) throw bad(what, `content type ${type} is not signedData`);
    if (parts[1]!.tag !== 0xa0) throw bad(what, 'ContentInfo content is not [0] EXPLICIT');
    const inner = children(parts[1]!, der, what);
    if (inner.length !== 1 || inner[0]!.tag !== 0x30)
      throw bad(what, 'ContentInfo content is not one SignedData');
    signedDataTlv = inner[0]!;
  }
  let parsed: SignedData;
  try {
    parsed = AsnParser.parse(signedDataTlv.bytes, SignedData);
  } catch (error) {
    throw bad(what, `SignedData does not decode (${(error as Error).message})`, error);
  }
  // The raw parts, for the bytes signatures and digests cover.
  const fields = children(signedDataTlv, der, what);
  let index = 2;
  const encap = fields[index++];
  if (encap?.tag !== 0x30) throw bad(what, 'no EncapsulatedContentInfo');
  const encapParts = children(encap, der, what);
  let content: Tlv | undefined;
  if (encapParts.length > 1) {
    if (encapParts[1]!.tag !== 0xa0) throw bad(what, 'eContent is not [0] EXPLICIT');
    const inner = children(encapParts[1]!, der, what);
    if (inner.length !== 1) throw bad(what, 'eContent holds more than one value');
    content = inner[0]!;
  }
  const rawCertificates: Buffer[] = [];
  if (fields[index]?.tag === 0xa0) {
    for (const c of children(fields[index]!, der, what)) if (c.tag === 0x30) rawCertificates.push(c.bytes);
    index++;
  }
  if (fields[index]?.tag === 0xa1) index++;
  const signerSet = fields[index];
  if (signerSet?.tag !== 0x31 || index !== fields.length - 1) throw bad(what, 'bad SignerInfos');
  const rawSigners = children(signerSet, der, what);
  if (rawSigners.length !== parsed.signerInfos.length) throw bad(what, 'SignerInfos do not decode');
  let certificates: NodeCertificate[];
  try {
    certificates = rawCertificates.map((c) => new NodeCertificate(c));
  } catch (error) {
    throw bad(what, `a certificate does not decode (${(error as Error).message})`, error);
  }
  const parsedCertificates = rawCertificates.map((c) => AsnParser.parse(c, AsnCertificate));
  const signers = parsed.signerInfos.map((info, i): CmsSigner => {
    const digest = digestFromOid(info.digestAlgorithm.algorithm);
    if (!digest)
      throw bad(what, `signer ${i + 1}: unsupported digest algorithm ${info.digestAlgorithm.algorithm}`);
    const sid = info.sid.issuerAndSerialNumber;
    if (!sid) throw bad(what, `signer ${i + 1}: identified by key identifier, not issuer and serial number`);
    const issuer = Buffer.from(AsnConvert.serialize(sid.issuer));
    const serialNumber = Buffer.from(sid.serialNumber);
    const found = parsedCertificates.findIndex(
      (c) =>
        serialOf(new Uint8Array(c.tbsCertificate.serialNumber)) === serialOf(serialNumber) &&
        Buffer.from(AsnConvert.serialize(c.tbsCertificate.issuer)).equals(issuer),
    );
    const signer: CmsSigner = {
      version: info.version,
      digest,
      signatureAlgorithm: info.signatureAlgorithm.algorithm,
      signature: Buffer.from(info.signature.buffer),
      issuer,
      serialNumber,
      certificate: found >= 0 ? certificates[found] : undefined,
    };
    const rawAttributes = children(rawSigners[i]!, der, what).find((t) => t.tag === 0xa0);
    if (info.signedAttrs) {
      if (!rawAttributes) throw bad(what, `signer ${i + 1}: signed attributes do not decode`);
      const attributes: NonNullable<CmsSigner['signedAttributes']> = {
        der: encodeTlv(0x31, rawAttributes.value),
      };
      for (const attribute of info.signedAttrs) {
        const values = attribute.attrValues.map((v) => Buffer.from(v));
        if (values.length !== 1) continue;
        const value = readTlv(values[0]!, 0, what);
        if (attribute.attrType === OIDS.contentType && value.tag === 0x06)
          attributes.contentType = decodeOid(value.value);
        if (attribute.attrType === OIDS.messageDigest && value.tag === 0x04)
          attributes.messageDigest = value.value;
        if (attribute.attrType === OIDS.signingTime) attributes.signingTime = decodeTime(value);
      }
      signer.signedAttributes = attributes;
    }
    return signer;
  });
  return {
    version: parsed.version,
    contentType: parsed.encapContentInfo.eContentType,
    content,
    digests: parsed.digestAlgorithms.map((d) => d.algorithm),
    certificates,
    signers,
  };
}

function decodeTime(tlv: Tlv): Date | undefined {
  const text = tlv.value.toString('latin1');
  const m = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) return undefined;
  let year = Number(m[1]);
  if (m[1]!.length === 2) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/**
 * Checks one signer: the digest of `data` (the content's value, or the detached data) against the
 * signed message digest, the signed content type, and the signature with the signer certificate's
 * key. Throws PKI_BAD_SIGNATURE naming what does not hold.
 */
export function verifyCmsSigner(
  signedData: CmsSignedData,
  signer: CmsSigner,
  data: Uint8Array,
  what = 'signature',
): void {
  const fail = (message: string) => new PkiError('PKI_BAD_SIGNATURE', `${what}: ${message}`);
  const certificate = signer.certificate;
  if (!certificate) throw fail('the signer certificate is not in the signature');
  if (!signedData.digests.includes(DIGEST_OIDS[signer.digest]))
    throw fail(`the signer's digest algorithm ${signer.digest} is not among the SignedData's`);
  let signed: Buffer;
  if (signer.signedAttributes) {
    const { contentType, messageDigest, der } = signer.signedAttributes;
    if (contentType !== signedData.contentType)
      throw fail(`signed content type ${contentType} is not the content's (${signedData.contentType})`);
    const actual = createHash(signer.digest).update(data).digest();
    if (!messageDigest?.equals(actual)) throw fail('the signed message digest does not match the content');
    signed = der;
  } else {
    signed = Buffer.from(data);
  }
  let key: KeyObject;
  try {
    key = certificate.publicKey;
  } catch {
    throw fail(`the public key of "${certificate.subject.replace(/\n/g, ', ')}" does not decode`);
  }
  let ok: boolean;
  try {
    const rsa =
      signer.signatureAlgorithm === OIDS.rsaEncryption || signer.signatureAlgorithm in RSA_SIGNATURE_OIDS;
    const ecdsa =
      signer.signatureAlgorithm === OIDS.ecPublicKey || signer.signatureAlgorithm in ECDSA_SIGNATURE_OIDS;
    if (rsa && key.asymmetricKeyType === 'rsa') ok = verify(signer.digest, signed, key, signer.signature);
    else if (ecdsa && key.asymmetricKeyType === 'ec')
      ok = verify(signer.digest, signed, { key, dsaEncoding: 'der' }, signer.signature);
    else
      throw fail(
        `signature algorithm ${signer.signatureAlgorithm} does not fit the signer's ${key.asymmetricKeyType} key`,
      );
  } catch (error) {
    if (error instanceof PkiError) throw error;
    ok = false;
  }
  if (!ok)
    throw fail(
      `the signature value does not verify with the key of "${certificate.subject.replace(/\n/g, ', ')}"`,
    );
}

/**
 * Whether `anchor` vouches for `signer`, as firmware checks a db certificate (OpenSSL with a
 * partial chain, no time checks): the signer certificate is the anchor, or a chain through the
 * SignedData's certificates reaches a certificate that is the anchor or that the anchor issued.
 */
export function chainsTo(signer: NodeCertificate, pool: NodeCertificate[], anchor: NodeCertificate): boolean {
  let current = signer;
  const seen = new Set<NodeCertificate>();
  for (let depth = 0; depth < 8; depth++) {
    if (current.raw.equals(anchor.raw)) return true;
    if (issuedBy(current, anchor)) return true;
    seen.add(current);
    const next = pool.find((c) => !seen.has(c) && issuedBy(current, c));
    if (!next) return false;
    current = next;
  }
  return false;
}

function issuedBy(subject: NodeCertificate, issuer: NodeCertificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}
