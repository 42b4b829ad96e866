/**
 * Authenticode signatures of PE images (UEFI Secure Boot's image signatures): a PKCS#7
 * SignedData whose content is SpcIndirectDataContent {SpcPeImageData, DigestInfo(image digest)},
 * one WIN_CERTIFICATE entry per signature. Signing makes that structure for a digest; reading
 * parses and checks every entry of an image (structure, signer signature, the image digest) and
 * says, for trust anchors, which of them vouch for which signature, as firmware decides.
 */
import { X509Certificate as NodeCertificate } from 'node:crypto';
import {
  authenticodeDigests,
  type DigestAlgorithm,
  type PeImage,
  WIN_CERT_REVISION_2_0,
  WIN_CERT_TYPE_PKCS_SIGNED_DATA,
  type WinCertificate,
} from '../pe/index.ts';
import {
  type CertificateInput,
  type CmsDigest,
  chainsTo,
  digestFromOid,
  digestOid,
  parseCms,
  signCms,
  verifyCmsSigner,
} from './cms.ts';
import { children, decodeOid, encodeOid, encodeTlv, readTlv } from './der.ts';
import { PkiError } from './errors.ts';

export const SPC_INDIRECT_DATA_OID = '1.3.6.1.4.1.311.2.1.4';
export const SPC_PE_IMAGE_DATA_OID = '1.3.6.1.4.1.311.2.1.15';

const seq = (...parts: Buffer[]) => encodeTlv(0x30, Buffer.concat(parts));

/**
 * SpcIndirectDataContent for an image digest. SpcPeImageData carries no flags and the
 * customary file link `<<<Obsolete>>>` (a BMPString), as every PE signer writes it.
 */
export function spcIndirectDataContent(digest: Buffer, algorithm: CmsDigest): Buffer {
  const obsolete = Buffer.from('<<<Obsolete>>>', 'utf16le').swap16();
  const peImageData = seq(
    Buffer.from([0x03, 0x01, 0x00]),
    encodeTlv(0xa0, encodeTlv(0xa2, encodeTlv(0x80, obsolete))),
  );
  return seq(
    seq(encodeOid(SPC_PE_IMAGE_DATA_OID), peImageData),
    seq(seq(encodeOid(digestOid(algorithm)), Buffer.from([0x05, 0x00])), encodeTlv(0x04, digest)),
  );
}

/** The digest algorithm and digest an SpcIndirectDataContent (its whole encoding) states. */
export function parseSpcIndirectDataContent(
  der: Buffer,
  what: string,
): { algorithm: CmsDigest; digest: Buffer } {
  const fail = (message: string) => new PkiError('PKI_BAD_CMS', `${what}: SpcIndirectDataContent ${message}`);
  const outer = readTlv(der, 0, what);
  const parts = children(outer, der, what);
  if (outer.tag !== 0x30 || parts.length !== 2 || parts[0]!.tag !== 0x30 || parts[1]!.tag !== 0x30)
    throw fail('is not two SEQUENCEs');
  const data = children(parts[0]!, der, what);
  if (data[0]?.tag !== 0x06 || decodeOid(data[0].value) !== SPC_PE_IMAGE_DATA_OID)
    throw fail('does not describe a PE image (SpcPeImageData)');
  const digestInfo = children(parts[1]!, der, what);
  if (digestInfo.length !== 2 || digestInfo[0]!.tag !== 0x30 || digestInfo[1]!.tag !== 0x04)
    throw fail('has no DigestInfo');
  const algorithmId = children(digestInfo[0]!, der, what);
  if (algorithmId[0]?.tag !== 0x06) throw fail('has no digest algorithm');
  const oid = decodeOid(algorithmId[0].value);
  const algorithm = digestFromOid(oid);
  if (!algorithm) throw fail(`names an unsupported digest algorithm ${oid}`);
  return { algorithm, digest: digestInfo[1]!.value };
}

export interface AuthenticodeSignOptions {
  key: import('node:crypto').KeyObject;
  /** The signer certificate first, then intermediates to include. */
  certificates: CertificateInput[];
  /** Adds a signingTime attribute (absent by default, so signatures are reproducible). */
  signingTime?: Date;
}

/** The PKCS#7 SignedData (DER) signing an image digest. */
export function signAuthenticodeDigest(
  digest: Buffer,
  algorithm: CmsDigest,
  options: AuthenticodeSignOptions,
): Buffer {
  const content = spcIndirectDataContent(digest, algorithm);
  return signCms({
    key: options.key,
    certificates: options.certificates,
    digest: algorithm,
    contentType: SPC_INDIRECT_DATA_OID,
    content,
    data: readTlv(content, 0).value,
    ...(options.signingTime ? { signingTime: options.signingTime } : {}),
  });
}

export interface AuthenticodeSignature {
  /** 1-based position in the certificate table. */
  index: number;
  /** The image digest algorithm and the digest the signature states. */
  algorithm: DigestAlgorithm;
  signedDigest: Buffer;
  signer: NodeCertificate;
  /** Every certificate the signature carries. */
  certificates: NodeCertificate[];
  signingTime?: Date;
  /** The PKCS#7 as stored. */
  der: Buffer;
}

/**
 * Every signature of `image`, each parsed and checked: the WIN_CERTIFICATE entry, the PKCS#7
 * structure, the signer's signature over the signed attributes and the attributes over the
 * content. The image digest is not compared here (`checkImageDigests` does).
 */
export function readAuthenticodeSignatures(image: PeImage): AuthenticodeSignature[] {
  return image.certificates().map((entry, i) => readAuthenticodeSignature(image, entry, i + 1));
}

/** Each signature of `image`, or the error that makes it unusable (as firmware skips such entries). */
export function tryReadAuthenticodeSignatures(image: PeImage): (AuthenticodeSignature | PkiError)[] {
  return image.certificates().map((entry, i) => {
    try {
      return readAuthenticodeSignature(image, entry, i + 1);
    } catch (error) {
      if (error instanceof PkiError) return error;
      throw error;
    }
  });
}

function readAuthenticodeSignature(
  image: PeImage,
  entry: WinCertificate,
  index: number,
): AuthenticodeSignature {
  const what = `${image.name}: signature ${index}`;
  if (entry.revision !== WIN_CERT_REVISION_2_0 || entry.type !== WIN_CERT_TYPE_PKCS_SIGNED_DATA)
    throw new PkiError(
      'PKI_BAD_CMS',
      `${what}: certificate entry of revision 0x${entry.revision.toString(16)}, type ${entry.type} is not a PKCS#7 signature`,
    );
  if (entry.padding.some((b) => b !== 0))
    throw new PkiError('PKI_BAD_CMS', `${what}: the padding after the entry is not zeros`);
  // Some signers count padding after the DER inside dwLength: it must be zeros too.
  const derLength = readTlv(entry.data, 0, what).end;
  if (entry.data.subarray(derLength).some((b) => b !== 0))
    throw new PkiError('PKI_BAD_CMS', `${what}: bytes after the PKCS#7 structure are not zeros`);
  const der = entry.data.subarray(0, derLength);
  const signedData = parseCms(der, { wrapped: true, what });
  if (signedData.contentType !== SPC_INDIRECT_DATA_OID)
    throw new PkiError(
      'PKI_BAD_CMS',
      `${what}: content type ${signedData.contentType} is not SpcIndirectDataContent`,
    );
  if (!signedData.content) throw new PkiError('PKI_BAD_CMS', `${what}: the signature has no content`);
  if (signedData.signers.length !== 1)
    throw new PkiError(
      'PKI_BAD_CMS',
      `${what}: ${signedData.signers.length} signers (Authenticode has exactly one)`,
    );
  const { algorithm, digest } = parseSpcIndirectDataContent(signedData.content.bytes, what);
  const signer = signedData.signers[0]!;
  verifyCmsSigner(signedData, signer, signedData.content.value, what);
  return {
    index,
    algorithm,
    signedDigest: digest,
    signer: signer.certificate!,
    certificates: signedData.certificates,
    ...(signer.signedAttributes?.signingTime ? { signingTime: signer.signedAttributes.signingTime } : {}),
    der: Buffer.from(der),
  };
}

/** Compares each signature's stated digest with the image's; PKI_BAD_SIGNATURE names the first that differs. */
export function checkImageDigests(
  image: PeImage,
  signatures: AuthenticodeSignature[],
): Record<DigestAlgorithm, Buffer> {
  const algorithms = [...new Set(signatures.map((s) => s.algorithm))];
  const digests = authenticodeDigests(image, algorithms);
  for (const s of signatures) {
    const actual = digests[s.algorithm];
    if (!actual.equals(s.signedDigest))
      throw new PkiError(
        'PKI_BAD_SIGNATURE',
        `${image.name}: signature ${s.index}: the image's ${s.algorithm} digest ${actual.toString('hex')} is not the signed ${s.signedDigest.toString('hex')} (the image changed after signing)`,
      );
  }
  return digests as Record<DigestAlgorithm, Buffer>;
}

/** Whether `anchor` vouches for the signature (see `chainsTo`). */
export function signatureTrustedBy(signature: AuthenticodeSignature, anchor: NodeCertificate): boolean {
  return chainsTo(signature.signer, signature.certificates, anchor);
}

export function toNodeCertificate(input: CertificateInput): NodeCertificate {
  if (input instanceof NodeCertificate) return input;
  try {
    return new NodeCertificate(input instanceof Uint8Array ? Buffer.from(input) : Buffer.from(input.rawData));
  } catch (error) {
    throw new PkiError('PKI_BAD_CERTIFICATE', `not an X.509 certificate: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
