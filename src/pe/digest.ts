/**
 * The Authenticode image digest: what a signature covers and what firmware measures into PCR 4.
 * As EDK2's image verification computes it: the headers without the CheckSum field and the
 * certificate-table directory entry, every section's raw data in file order (sections without raw
 * data skipped), then the bytes after SizeOfHeaders plus the sections' raw sizes up to the
 * certificate table. An unsigned image whose size is not a multiple of 8 is hashed as if padded
 * with zeros to 8 bytes (the padding a signer appends before the certificate table), unless
 * `pad` is false (the firmware measuring the file as it is).
 */
import { createHash } from 'node:crypto';
import { PeError } from './errors.ts';
import type { PeImage } from './reader.ts';
import { chunks } from './source.ts';

export type DigestAlgorithm = 'sha1' | 'sha256' | 'sha384' | 'sha512';

export interface Range {
  offset: number;
  length: number;
}

export interface AuthenticodeLayout {
  /** File ranges hashed, in order. */
  ranges: Range[];
  /** Zero bytes hashed after the ranges. */
  padding: number;
}

export interface LayoutOptions {
  /** Hash an unsigned image as padded to 8 bytes (default true). */
  pad?: boolean;
  /**
   * The digest a new signature of this image covers: without its certificate table (if any),
   * and padded to 8 bytes where the new table will start.
   */
  signing?: boolean;
}

export function authenticodeLayout(image: PeImage, options: LayoutOptions = {}): AuthenticodeLayout {
  const { headers, certificateTable: table, size, name } = image;
  const fail = (message: string) => new PeError('PE_BAD_HEADER', `${name}: ${message}`, { subject: name });
  const ranges: Range[] = [];
  const add = (offset: number, end: number) => {
    if (end > offset) ranges.push({ offset, length: end - offset });
  };
  const checkSum = headers.offsets.checkSum;
  const directory = headers.offsets.certificateDirectory;
  add(0, checkSum);
  if (directory !== undefined) {
    add(checkSum + 4, directory);
    add(directory + 8, headers.sizeOfHeaders);
  } else {
    add(checkSum + 4, headers.sizeOfHeaders);
  }
  let hashed = headers.sizeOfHeaders;
  const sorted = image.sections
    .map((section, index) => ({ section, index }))
    .filter(({ section }) => section.sizeOfRawData > 0)
    .sort((a, b) => a.section.pointerToRawData - b.section.pointerToRawData || a.index - b.index);
  for (const { section } of sorted) {
    add(section.pointerToRawData, section.pointerToRawData + section.sizeOfRawData);
    hashed += section.sizeOfRawData;
  }
  let end = size;
  if (table) {
    if (table.offset + table.size !== size)
      throw new PeError(
        'PE_BAD_CERTIFICATE_TABLE',
        `${name}: the certificate table (${table.size} bytes at ${table.offset}) does not end the file (${size} bytes)`,
        { subject: name },
      );
    end = table.offset;
  }
  if (hashed > end)
    throw fail(
      `headers and sections add up to ${hashed} bytes, more than the ${end} signed bytes of the file`,
    );
  add(hashed, end);
  const padding = options.signing || (!table && options.pad !== false) ? (8 - (end % 8)) % 8 : 0;
  return { ranges, padding };
}

/** The image's Authenticode digest with each algorithm, in one pass over the file. */
export function authenticodeDigests<A extends DigestAlgorithm>(
  image: PeImage,
  algorithms: readonly A[],
  options: LayoutOptions = {},
): Record<A, Buffer> {
  const { ranges, padding } = authenticodeLayout(image, options);
  const hashes = algorithms.map((a) => createHash(a));
  const scratch = Buffer.allocUnsafe(1 << 20);
  for (const range of ranges) {
    for (const chunk of chunks(image.source, range.offset, range.length, scratch))
      for (const h of hashes) h.update(chunk);
  }
  if (padding) for (const h of hashes) h.update(Buffer.alloc(padding));
  return Object.fromEntries(algorithms.map((a, i) => [a, hashes[i]!.digest()])) as Record<A, Buffer>;
}

export function authenticodeDigest(
  image: PeImage,
  algorithm: DigestAlgorithm = 'sha256',
  options: LayoutOptions = {},
): Buffer {
  return authenticodeDigests(image, [algorithm], options)[algorithm];
}

/**
 * File ranges no signature covers besides the CheckSum field, the certificate-table entry and
 * the certificate table itself: gaps between headers and sections, and bytes hashed twice mean
 * overlapping sections. A signed image with such ranges can be altered without breaking its
 * signature, so verification refuses it.
 */
export function unsignedRanges(image: PeImage): Range[] {
  const { ranges } = authenticodeLayout(image, { pad: false });
  const { headers, certificateTable } = image;
  const covered: Range[] = [...ranges, { offset: headers.offsets.checkSum, length: 4 }];
  if (headers.offsets.certificateDirectory !== undefined)
    covered.push({ offset: headers.offsets.certificateDirectory, length: 8 });
  if (certificateTable) covered.push({ offset: certificateTable.offset, length: certificateTable.size });
  covered.sort((a, b) => a.offset - b.offset);
  const gaps: Range[] = [];
  let at = 0;
  for (const r of covered) {
    if (r.offset > at) gaps.push({ offset: at, length: r.offset - at });
    at = Math.max(at, r.offset + r.length);
  }
  if (at < image.size) gaps.push({ offset: at, length: image.size - at });
  return gaps;
}
