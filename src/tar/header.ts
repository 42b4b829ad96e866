/**
 * The 512-byte ustar header and the pax extended-header records, at byte level.
 * Strings are byte strings (latin1), as in the tree model.
 */
import { TarError } from './errors.ts';

export const BLOCK = 512;

export const TYPEFLAG = {
  file: 0x30, // '0' (also '\0' and '7' when reading)
  hardlink: 0x31,
  symlink: 0x32,
  char: 0x33,
  block: 0x34,
  dir: 0x35,
  fifo: 0x36,
  contiguous: 0x37,
  paxLocal: 0x78, // 'x'
  paxGlobal: 0x67, // 'g'
  gnuLongName: 0x4c, // 'L'
  gnuLongLink: 0x4b, // 'K'
  gnuSparse: 0x53, // 'S'
} as const;

export interface RawHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: number;
  linkname: string;
  magic: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  prefix: string;
}

function cString(block: Uint8Array, offset: number, length: number): string {
  let end = offset;
  while (end < offset + length && block[end] !== 0) end++;
  return Buffer.from(block.buffer, block.byteOffset + offset, end - offset).toString('latin1');
}

/** Numeric field: octal text (space/NUL terminated) or GNU base-256 when the high bit is set. */
export function parseNumber(block: Uint8Array, offset: number, length: number, field: string): number {
  if (block[offset]! & 0x80) {
    if (block[offset] === 0xff) throw new TarError('TAR_CORRUPT', `negative ${field} in tar header`);
    let value = block[offset]! & 0x7f;
    for (let i = 1; i < length; i++) value = value * 256 + block[offset + i]!;
    if (!Number.isSafeInteger(value)) throw new TarError('TAR_TOO_LARGE', `${field} too large in tar header`);
    return value;
  }
  const text = cString(block, offset, length)
    .replace(/[ \0]+$/, '')
    .trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text))
    throw new TarError('TAR_CORRUPT', `malformed ${field} ${JSON.stringify(text)} in tar header`);
  const value = Number.parseInt(text, 8);
  if (!Number.isSafeInteger(value)) throw new TarError('TAR_TOO_LARGE', `${field} too large in tar header`);
  return value;
}

export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

function checksum(block: Uint8Array): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return { unsigned, signed };
}

export function parseHeader(block: Uint8Array): RawHeader {
  const stored = parseNumber(block, 148, 8, 'checksum');
  const { unsigned, signed } = checksum(block);
  if (stored !== unsigned && stored !== signed) {
    throw new TarError('TAR_CHECKSUM', 'tar header checksum mismatch (not a tar archive, or corrupt)');
  }
  const magic = cString(block, 257, 6);
  const ustar = magic.startsWith('ustar');
  return {
    name: cString(block, 0, 100),
    mode: parseNumber(block, 100, 8, 'mode'),
    uid: parseNumber(block, 108, 8, 'uid'),
    gid: parseNumber(block, 116, 8, 'gid'),
    size: parseNumber(block, 124, 12, 'size'),
    mtime: parseNumber(block, 136, 12, 'mtime'),
    typeflag: block[156]!,
    linkname: cString(block, 157, 100),
    magic,
    uname: ustar ? cString(block, 265, 32) : '',
    gname: ustar ? cString(block, 297, 32) : '',
    devmajor: ustar ? parseNumber(block, 329, 8, 'devmajor') : 0,
    devminor: ustar ? parseNumber(block, 337, 8, 'devminor') : 0,
    // GNU tar (magic "ustar  ") uses this area for atime/ctime, not a prefix.
    prefix: magic === 'ustar' ? cString(block, 345, 155) : '',
  };
}

function putString(block: Uint8Array, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'latin1');
  if (bytes.length > length) throw new Error(`tar field overflow: ${value}`);
  block.set(bytes, offset);
}

function putOctal(block: Uint8Array, offset: number, length: number, value: number): void {
  putString(block, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

export function octalFits(value: number, length: number): boolean {
  return value >= 0 && value < 8 ** (length - 1);
}

/** Formats a ustar header; every field must already fit (the writer moves what does not into pax). */
export function formatHeader(h: RawHeader): Uint8Array {
  const block = new Uint8Array(BLOCK);
  putString(block, 0, 100, h.name);
  putOctal(block, 100, 8, h.mode);
  putOctal(block, 108, 8, h.uid);
  putOctal(block, 116, 8, h.gid);
  putOctal(block, 124, 12, h.size);
  putOctal(block, 136, 12, h.mtime);
  block.fill(0x20, 148, 156);
  block[156] = h.typeflag;
  putString(block, 157, 100, h.linkname);
  putString(block, 257, 6, 'ustar\0');
  putString(block, 263, 2, '00');
  putString(block, 265, 32, h.uname);
  putString(block, 297, 32, h.gname);
  putOctal(block, 329, 8, h.devmajor);
  putOctal(block, 337, 8, h.devminor);
  putString(block, 345, 155, h.prefix);
  putString(block, 148, 8, `${checksum(block).unsigned.toString(8).padStart(6, '0')}\0 `);
  return block;
}

/** Parses pax extended-header records `LEN KEY=VALUE\n`; keys and values stay byte strings. */
export function parsePax(data: Uint8Array): Map<string, string> {
  const records = new Map<string, string>();
  const text = Buffer.from(data.buffer, data.byteOffset, data.length).toString('latin1');
  let pos = 0;
  while (pos < text.length) {
    if (text.charCodeAt(pos) === 0) break; // NUL padding
    const space = text.indexOf(' ', pos);
    const length = Number(text.slice(pos, space));
    if (space < 0 || !Number.isInteger(length) || length <= space - pos + 1 || pos + length > text.length) {
      throw new TarError('TAR_CORRUPT', 'malformed pax extended header record');
    }
    const record = text.slice(space + 1, pos + length);
    if (!record.endsWith('\n')) throw new TarError('TAR_CORRUPT', 'pax record without newline');
    const eq = record.indexOf('=');
    if (eq <= 0) throw new TarError('TAR_CORRUPT', 'pax record without a key');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1, -1);
    // An empty value cancels a keyword (callers fall back to the header) but is a valid xattr.
    records.set(key, value);
    pos += length;
  }
  return records;
}

/** Formats pax records; LEN counts its own digits. Keys and values are byte strings. */
export function formatPax(records: [string, string][]): Uint8Array {
  const parts: string[] = [];
  for (const [key, value] of records) {
    const body = ` ${key}=${value}\n`;
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length = String(length).length + body.length;
    parts.push(`${length}${body}`);
  }
  return Buffer.from(parts.join(''), 'latin1');
}
