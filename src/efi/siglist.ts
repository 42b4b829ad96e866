/**
 * EFI_SIGNATURE_LIST {SignatureType GUID, u32 SignatureListSize, u32 SignatureHeaderSize,
 * u32 SignatureSize, header, EFI_SIGNATURE_DATA {owner GUID, data}…}: how PK, KEK, db and dbx
 * hold certificates (EFI_CERT_X509, one list per certificate as their sizes differ) and hashes
 * (EFI_CERT_SHA256 and friends, many to a list).
 */
import { EfiError } from './errors.ts';
import { decodeGuid, encodeGuid, GUIDS } from './guid.ts';

export interface SignatureEntry {
  /** The signature type GUID of the list the entry is in. */
  type: string;
  owner: string;
  /** The certificate (DER) or hash. */
  data: Buffer;
}

const HASH_SIZES: Record<string, number> = {
  [GUIDS.certSha256]: 32,
  [GUIDS.certSha384]: 48,
  [GUIDS.certSha512]: 64,
  [GUIDS.certSha1]: 20,
  [GUIDS.certX509Sha256]: 48,
  [GUIDS.certX509Sha384]: 64,
  [GUIDS.certX509Sha512]: 80,
};

/** Parses the concatenated signature lists of a variable's data. */
export function parseSignatureLists(data: Uint8Array, subject = 'signature list'): SignatureEntry[] {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const entries: SignatureEntry[] = [];
  const fail = (message: string, at: number) =>
    new EfiError('EFI_BAD_DATA', `${subject}: ${message} at byte ${at}`, { subject });
  for (let at = 0; at < buffer.length; ) {
    if (at + 28 > buffer.length) throw fail('EFI_SIGNATURE_LIST header cut off', at);
    const type = decodeGuid(buffer, at);
    const listSize = buffer.readUInt32LE(at + 16);
    const headerSize = buffer.readUInt32LE(at + 20);
    const signatureSize = buffer.readUInt32LE(at + 24);
    if (listSize < 28 || at + listSize > buffer.length) throw fail(`list size ${listSize} does not fit`, at);
    if (
      signatureSize < 16 ||
      28 + headerSize > listSize ||
      (listSize - 28 - headerSize) % signatureSize !== 0
    )
      throw fail(`signature size ${signatureSize} does not divide the list`, at);
    const expected = HASH_SIZES[type];
    if (expected !== undefined && signatureSize !== 16 + expected)
      throw fail(`${signatureSize - 16}-byte entries in a list of ${expected}-byte hashes`, at);
    for (let s = at + 28 + headerSize; s < at + listSize; s += signatureSize) {
      entries.push({ type, owner: decodeGuid(buffer, s), data: buffer.subarray(s + 16, s + signatureSize) });
    }
    at += listSize;
  }
  return entries;
}

/**
 * Signature lists for `entries`: consecutive hashes of one type share a list, every certificate
 * has its own; order is kept.
 */
export function encodeSignatureLists(entries: SignatureEntry[]): Buffer {
  const lists: Buffer[] = [];
  let i = 0;
  while (i < entries.length) {
    const first = entries[i]!;
    const size = first.data.length;
    const group = [first];
    const shareable = first.type !== GUIDS.certX509;
    while (shareable && i + group.length < entries.length) {
      const next = entries[i + group.length]!;
      if (next.type !== first.type || next.data.length !== size) break;
      group.push(next);
    }
    const header = Buffer.alloc(28);
    encodeGuid(first.type).copy(header, 0);
    header.writeUInt32LE(28 + group.length * (16 + size), 16);
    header.writeUInt32LE(0, 20);
    header.writeUInt32LE(16 + size, 24);
    lists.push(header, ...group.flatMap((e) => [encodeGuid(e.owner), e.data]));
    i += group.length;
  }
  return Buffer.concat(lists);
}

/** One EFI_SIGNATURE_DATA as stored (owner GUID and data): what PCR 7 authority events carry. */
export function encodeSignatureData(entry: { owner: string; data: Uint8Array }): Buffer {
  return Buffer.concat([encodeGuid(entry.owner), entry.data]);
}
