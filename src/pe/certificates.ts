/**
 * The attribute certificate table of a signed PE image: WIN_CERTIFICATE entries
 * {u32 dwLength, u16 wRevision, u16 wCertificateType, bCertificate}, each starting on an 8-byte
 * boundary, at the file offset the certificate data directory gives. Authenticode signatures are
 * entries of revision 0x0200 and type WIN_CERT_TYPE_PKCS_SIGNED_DATA (2).
 */
import { PeError } from './errors.ts';

export const WIN_CERT_REVISION_2_0 = 0x0200;
export const WIN_CERT_REVISION_1_0 = 0x0100;
export const WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002;
export const WIN_CERTIFICATE_HEADER = 8;

export interface WinCertificate {
  /** File offset of the entry. */
  offset: number;
  /** dwLength: header and certificate, without the padding to 8 bytes. */
  length: number;
  revision: number;
  type: number;
  /** The certificate bytes (for type 2, a DER PKCS#7 ContentInfo, possibly followed by padding). */
  data: Buffer;
  /** The bytes after dwLength up to the next 8-byte boundary (must be zeros). */
  padding: Buffer;
}

const align8 = (n: number) => (n + 7) & ~7;

/** Parses a certificate table (`table` is its bytes, `offset` where it starts in the file). */
export function parseCertificateTable(table: Buffer, offset: number, subject: string): WinCertificate[] {
  const entries: WinCertificate[] = [];
  const fail = (message: string) =>
    new PeError('PE_BAD_CERTIFICATE_TABLE', `${subject}: certificate table: ${message}`, { subject });
  for (let at = 0; at < table.length; ) {
    if (at + WIN_CERTIFICATE_HEADER > table.length)
      throw fail(`entry ${entries.length + 1} header is cut off`);
    const length = table.readUInt32LE(at);
    if (length < WIN_CERTIFICATE_HEADER) throw fail(`entry ${entries.length + 1} declares ${length} bytes`);
    if (at + length > table.length)
      throw fail(`entry ${entries.length + 1} (${length} bytes) runs past the table (${table.length} bytes)`);
    const next = Math.min(align8(at + length), table.length);
    entries.push({
      offset: offset + at,
      length,
      revision: table.readUInt16LE(at + 4),
      type: table.readUInt16LE(at + 6),
      data: table.subarray(at + WIN_CERTIFICATE_HEADER, at + length),
      padding: table.subarray(at + length, next),
    });
    at = next;
  }
  return entries;
}

/** A table holding `signatures` (DER PKCS#7 each) as padded WIN_CERTIFICATE entries. */
export function encodeCertificateTable(signatures: Uint8Array[]): Buffer {
  const parts: Buffer[] = [];
  for (const signature of signatures) {
    const length = WIN_CERTIFICATE_HEADER + signature.length;
    const header = Buffer.alloc(WIN_CERTIFICATE_HEADER);
    header.writeUInt32LE(length, 0);
    header.writeUInt16LE(WIN_CERT_REVISION_2_0, 4);
    header.writeUInt16LE(WIN_CERT_TYPE_PKCS_SIGNED_DATA, 6);
    parts.push(header, Buffer.from(signature), Buffer.alloc(align8(length) - length));
  }
  if (parts.length === 0)
    throw new PeError('PE_INVALID_OPTION', 'a certificate table needs at least one signature');
  return Buffer.concat(parts);
}
