/**
 * Signing and verifying PE images (UKIs, boot managers, kernels) with Authenticode, file to file:
 * `signPe` replaces the image's signatures (or appends one) and writes the result atomically;
 * `verifyPe` checks the whole file — checksum, that every byte is covered, every signature's
 * structure, signer signature and image digest — and which signatures the given anchors vouch
 * for, refusing what a forbidden list (dbx) names.
 */
import type { KeyObject, X509Certificate as NodeCertificate } from 'node:crypto';
import {
  authenticodeDigests,
  chunks,
  type DigestAlgorithm,
  encodeCertificateTable,
  imageChecksum,
  PeError,
  PeImage,
  PeStream,
  unsignedRanges,
} from '../pe/index.ts';
import {
  type AuthenticodeSignature,
  checkImageDigests,
  readAuthenticodeSignatures,
  signAuthenticodeDigest,
  signatureTrustedBy,
} from '../pki/authenticode.ts';
import type { CertificateInput, CmsDigest } from '../pki/cms.ts';
import { PkiError } from '../pki/errors.ts';
import { writeAtomic } from '../util/atomic.ts';

export interface SignPeOptions {
  key: KeyObject;
  /** The signer certificate first, then intermediates to include. */
  certificates: CertificateInput[];
  /** Keep the image's signatures and add this one (default: replace them). */
  append?: boolean;
  /** The image digest algorithm (default sha256). */
  digest?: CmsDigest;
  signingTime?: Date;
}

export interface SignPeResult {
  digest: string;
  algorithm: CmsDigest;
  signatures: number;
  checksum: number;
  size: number;
}

/** Signs `input` into `output` (which may be the same path). */
export async function signPe(input: string, output: string, options: SignPeOptions): Promise<SignPeResult> {
  const image = PeImage.open(input);
  try {
    const algorithm = options.digest ?? 'sha256';
    const existing = options.append ? image.certificates().map((c) => c.data) : [];
    const dataEnd = image.certificateTable?.offset ?? image.size;
    const digest = authenticodeDigests(image, [algorithm], { signing: true })[algorithm];
    const signature = signAuthenticodeDigest(digest, algorithm, options);
    const table = encodeCertificateTable([...existing, signature]);
    const { checkSum, certificateDirectory } = image.headers.offsets;
    if (certificateDirectory === undefined)
      throw new PeError('PE_BAD_HEADER', `${input}: the optional header has no certificate-table entry`, {
        subject: input,
      });
    return await writeAtomic(
      output,
      async (handle) => {
        const stream = new PeStream(handle, {
          checkSumOffset: checkSum,
          certificateDirectoryOffset: certificateDirectory,
        });
        for (const chunk of chunks(image.source, 0, dataEnd)) await stream.write(chunk);
        const checksum = await stream.finish(table);
        return {
          digest: digest.toString('hex'),
          algorithm,
          signatures: existing.length + 1,
          checksum,
          size: stream.position,
        };
      },
      0o644,
    );
  } finally {
    image.close();
  }
}

export interface ForbiddenList {
  certificates: NodeCertificate[];
  digests: { algorithm: DigestAlgorithm; digest: Buffer }[];
}

export interface VerifyPeOptions {
  /** Certificates that may vouch for the image (a `--cert`, or the X.509 entries of db). */
  anchors?: NodeCertificate[];
  /** Image digests allowed without a signature (db's hash entries). */
  allowedDigests?: { algorithm: DigestAlgorithm; digest: Buffer }[];
  /** What is refused whatever vouches for it (dbx). */
  forbidden?: ForbiddenList;
}

export interface SignatureReport {
  index: number;
  algorithm: DigestAlgorithm;
  digest: string;
  signer: string;
  issuer: string;
  serialNumber: string;
  signingTime?: string;
  /** The subject of the first anchor that vouches for this signature. */
  trustedBy?: string;
}

export interface PeVerification {
  image: string;
  size: number;
  checksum: number;
  digests: Partial<Record<DigestAlgorithm, string>>;
  signatures: SignatureReport[];
  /** Whether an anchor vouches for a signature (or db allows the digest); only when anchors were given. */
  trusted?: boolean;
  /** An allowed digest that admitted the image. */
  allowedDigest?: string;
}

const oneLine = (name: string) => name.replace(/\n/g, ', ');

/**
 * Verifies a signed PE image. Integrity failures (a changed byte anywhere) and, when anchors are
 * given, the lack of a trusted signature throw, naming what failed; dbx matches throw too.
 */
export function verifyPe(path: string, options: VerifyPeOptions = {}): PeVerification {
  const image = PeImage.open(path);
  try {
    return verifyImage(image, options);
  } finally {
    image.close();
  }
}

export function verifyImage(image: PeImage, options: VerifyPeOptions = {}): PeVerification {
  const name = image.name;
  const signatures = readAuthenticodeSignatures(image);
  const gaps = unsignedRanges(image);
  if (gaps.length > 0 && signatures.length > 0) {
    const g = gaps[0]!;
    throw new PkiError(
      'PKI_BAD_SIGNATURE',
      `${name}: ${g.length} bytes at offset ${g.offset} are covered by no signature${gaps.length > 1 ? ` (and ${gaps.length - 1} more ranges)` : ''}`,
    );
  }
  const wanted = new Set<DigestAlgorithm>(['sha256', ...signatures.map((s) => s.algorithm)]);
  for (const d of options.allowedDigests ?? []) wanted.add(d.algorithm);
  for (const d of options.forbidden?.digests ?? []) wanted.add(d.algorithm);
  checkImageDigests(image, signatures);
  // The checksum is not signed; a wrong one still means the file changed.
  const stored = image.headers.checkSum;
  const computed = imageChecksum(image);
  if (stored !== 0 && stored !== computed)
    throw new PeError(
      'PE_BAD_HEADER',
      `${name}: the PE CheckSum 0x${stored.toString(16)} is not the file's 0x${computed.toString(16)} (the image changed)`,
      { subject: name },
    );
  const digests = authenticodeDigests(image, [...wanted], { pad: false });
  for (const f of options.forbidden?.digests ?? []) {
    if (digests[f.algorithm].equals(f.digest))
      throw new PkiError('PKI_UNTRUSTED', `${name}: the image's ${f.algorithm} digest is forbidden (dbx)`);
  }
  const reports = signatures.map((s) => report(s));
  for (const s of signatures) {
    for (const forbidden of options.forbidden?.certificates ?? []) {
      if (signatureTrustedBy(s, forbidden))
        throw new PkiError(
          'PKI_UNTRUSTED',
          `${name}: signature ${s.index} is by "${oneLine(s.signer.subject)}", which the forbidden list (dbx) names ("${oneLine(forbidden.subject)}")`,
        );
    }
  }
  const result: PeVerification = {
    image: name,
    size: image.size,
    checksum: computed,
    digests: Object.fromEntries(Object.entries(digests).map(([k, v]) => [k, v.toString('hex')])),
    signatures: reports,
  };
  if (options.anchors || options.allowedDigests) {
    for (const [i, s] of signatures.entries()) {
      const anchor = (options.anchors ?? []).find((a) => signatureTrustedBy(s, a));
      if (anchor) reports[i]!.trustedBy = oneLine(anchor.subject);
    }
    const allowed = (options.allowedDigests ?? []).find((d) => digests[d.algorithm].equals(d.digest));
    if (allowed) result.allowedDigest = `${allowed.algorithm}:${allowed.digest.toString('hex')}`;
    result.trusted = reports.some((r) => r.trustedBy !== undefined) || allowed !== undefined;
    if (!result.trusted) {
      if (signatures.length === 0) throw new PkiError('PKI_NOT_SIGNED', `${name} is not signed`);
      throw new PkiError(
        'PKI_UNTRUSTED',
        `${name}: no signature is vouched for by the given certificates (signed by ${reports.map((r) => `"${r.signer}"`).join(', ')})`,
      );
    }
  } else if (signatures.length === 0) {
    throw new PkiError('PKI_NOT_SIGNED', `${name} is not signed`);
  }
  return result;
}

function report(s: AuthenticodeSignature): SignatureReport {
  return {
    index: s.index,
    algorithm: s.algorithm,
    digest: s.signedDigest.toString('hex'),
    signer: oneLine(s.signer.subject),
    issuer: oneLine(s.signer.issuer),
    serialNumber: s.signer.serialNumber.toLowerCase(),
    ...(s.signingTime ? { signingTime: s.signingTime.toISOString() } : {}),
  };
}
