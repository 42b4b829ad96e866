/**
 * The decision UEFI firmware (EDK2's image verification, as OVMF runs it) makes about a PE image
 * under Secure Boot, and the db entry it then measures into PCR 7: every usable signature is
 * checked against dbx (a forbidden certificate vouching for it, or the image digest listed,
 * refuses the image outright); the first signature an X.509 entry of db vouches for admits it,
 * that entry being the authority; an unsigned image is admitted only by its digest in db.
 */
import { X509Certificate as NodeCertificate } from 'node:crypto';
import { GUIDS, type SignatureEntry } from '../efi/index.ts';
import { authenticodeDigests, type DigestAlgorithm, type PeImage } from '../pe/index.ts';
import {
  type AuthenticodeSignature,
  signatureTrustedBy,
  tryReadAuthenticodeSignatures,
} from './authenticode.ts';

export interface FirmwareVerdict {
  allowed: boolean;
  /** The db entry that admitted the image (what EV_EFI_VARIABLE_AUTHORITY carries). */
  authority?: SignatureEntry;
  /** Why, in words. */
  reason: string;
}

const HASH_TYPES: Partial<Record<string, DigestAlgorithm>> = {
  [GUIDS.certSha256]: 'sha256',
  [GUIDS.certSha384]: 'sha384',
  [GUIDS.certSha512]: 'sha512',
  [GUIDS.certSha1]: 'sha1',
};

function certificateOf(entry: SignatureEntry): NodeCertificate | undefined {
  if (entry.type !== GUIDS.certX509) return undefined;
  try {
    return new NodeCertificate(entry.data);
  } catch {
    return undefined;
  }
}

const subjectOf = (c: NodeCertificate) => c.subject.replace(/\n/g, ', ');

export function firmwareVerdict(
  image: PeImage,
  db: SignatureEntry[],
  dbx: SignatureEntry[],
): FirmwareVerdict {
  const read = tryReadAuthenticodeSignatures(image);
  const signatures = read.filter((s): s is AuthenticodeSignature => !(s instanceof Error));
  const algorithms = new Set<DigestAlgorithm>(['sha256']);
  for (const s of signatures) algorithms.add(s.algorithm);
  for (const e of [...db, ...dbx]) {
    const a = HASH_TYPES[e.type];
    if (a) algorithms.add(a);
  }
  const digests = authenticodeDigests(image, [...algorithms], { pad: false });
  const listed = (list: SignatureEntry[]) =>
    list.find((e) => {
      const a = HASH_TYPES[e.type];
      return a !== undefined && digests[a].equals(e.data);
    });
  const forbiddenHash = listed(dbx);
  if (forbiddenHash) return { allowed: false, reason: 'the image digest is in dbx' };
  // A signature counts only when it states the image's digest.
  const intact = signatures.filter((s) => digests[s.algorithm].equals(s.signedDigest));
  const dbxCertificates = dbx.map(certificateOf).filter((c) => c !== undefined);
  const dbCertificates = db.map((e) => ({ entry: e, certificate: certificateOf(e) }));
  let authority: SignatureEntry | undefined;
  let by: string | undefined;
  for (const s of intact) {
    const forbidden = dbxCertificates.find((c) => signatureTrustedBy(s, c));
    if (forbidden)
      return {
        allowed: false,
        reason: `signature ${s.index} is vouched for by "${subjectOf(forbidden)}" in dbx`,
      };
    if (!authority) {
      const match = dbCertificates.find((d) => d.certificate && signatureTrustedBy(s, d.certificate));
      if (match) {
        authority = match.entry;
        by = `signature ${s.index} is vouched for by "${subjectOf(match.certificate!)}" in db`;
      }
    }
  }
  if (authority) return { allowed: true, authority, reason: by! };
  const allowedHash = listed(db);
  if (allowedHash) return { allowed: true, authority: allowedHash, reason: 'the image digest is in db' };
  if (signatures.length === 0 && read.length === 0)
    return { allowed: false, reason: 'the image is not signed and its digest is not in db' };
  if (intact.length === 0)
    return {
      allowed: false,
      reason:
        'no signature states the image digest (the image changed after signing, or the signature is damaged)',
    };
  return { allowed: false, reason: 'no db certificate vouches for any signature' };
}
