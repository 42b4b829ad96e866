/**
 * Streaming tar reader: ustar, pax (local and global headers, SCHILY/LIBARCHIVE xattrs,
 * nanosecond times, large sizes and ids), GNU long names and links, GNU base-256 numbers.
 * Entry bodies are streamed; memory stays bounded by the largest metadata record.
 */
import type { Timestamp } from '../tree/model.ts';
import { quoteBytes, xattrsProblem } from '../tree/names.ts';
import { ChunkReader } from './bytes.ts';
import { TarError } from './errors.ts';
import { BLOCK, isZeroBlock, parseHeader, parsePax, TYPEFLAG } from './header.ts';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  /** Path as stored (not normalised), a byte string. */
  path: string;
  type: TarEntryType;
  /** Hardlink or symlink target, a byte string ('' otherwise). */
  linkname: string;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: Timestamp;
  size: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes from pax `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*` records. */
  xattrs: Map<string, Uint8Array>;
}

export interface TarEntry extends TarHeader {
  /** The entry's data; consume it (or not) before asking for the next entry. */
  body: AsyncIterable<Uint8Array>;
}

/** Metadata records larger than this are refused rather than buffered. */
const MAX_METADATA = 16 << 20;

const TYPES: Record<number, TarEntryType> = {
  0: 'file',
  [TYPEFLAG.file]: 'file',
  [TYPEFLAG.contiguous]: 'file',
  [TYPEFLAG.hardlink]: 'hardlink',
  [TYPEFLAG.symlink]: 'symlink',
  [TYPEFLAG.char]: 'char',
  [TYPEFLAG.block]: 'block',
  [TYPEFLAG.dir]: 'dir',
  [TYPEFLAG.fifo]: 'fifo',
};

function parseTime(text: string): Timestamp {
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m) throw new TarError('TAR_CORRUPT', `malformed pax time ${JSON.stringify(text)}`);
  const sec = Number(m[2]) * (m[1] ? -1 : 1);
  const nsec = Number((m[3] ?? '').slice(0, 9).padEnd(9, '0'));
  if (m[1] && nsec > 0) return { sec: sec - 1, nsec: 1e9 - nsec };
  return { sec, nsec };
}

function parseDecimal(text: string, field: string): number {
  if (!/^\d+$/.test(text))
    throw new TarError('TAR_CORRUPT', `malformed pax ${field} ${JSON.stringify(text)}`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new TarError('TAR_TOO_LARGE', `pax ${field} too large`);
  return value;
}

export async function* readTar(input: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const reader = new ChunkReader(input);
  const global = new Map<string, string>();
  let pax: Map<string, string> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;

  const readBlock = async (what: string): Promise<Uint8Array | undefined> => {
    const block = await reader.read(BLOCK);
    if (block.length === 0) return undefined;
    if (block.length < BLOCK) throw new TarError('TAR_TRUNCATED', `tar archive truncated in ${what}`);
    return block;
  };
  const readPadded = async (size: number, what: string): Promise<Uint8Array> => {
    if (size > MAX_METADATA) throw new TarError('TAR_TOO_LARGE', `${what} of ${size} bytes is too large`);
    const data = await reader.read(size);
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (data.length < size || (await reader.skip(padding)) < padding) {
      throw new TarError('TAR_TRUNCATED', `tar archive truncated in ${what}`);
    }
    return data;
  };

  for (;;) {
    const offset = reader.position;
    const block = await readBlock('a header');
    if (!block) return; // end of stream without end-of-archive blocks: accepted, as GNU tar does
    if (isZeroBlock(block)) {
      await reader.drain();
      return;
    }
    const h = parseHeader(block);
    switch (h.typeflag) {
      case TYPEFLAG.paxLocal:
        pax = parsePax(await readPadded(h.size, 'a pax header'));
        continue;
      case TYPEFLAG.paxGlobal:
        for (const [k, v] of parsePax(await readPadded(h.size, 'a pax global header'))) global.set(k, v);
        continue;
      case TYPEFLAG.gnuLongName:
        longName = cstr(await readPadded(h.size, 'a GNU long name'));
        continue;
      case TYPEFLAG.gnuLongLink:
        longLink = cstr(await readPadded(h.size, 'a GNU long link name'));
        continue;
    }
    const type = TYPES[h.typeflag];
    if (!type) {
      throw new TarError(
        'TAR_UNSUPPORTED',
        `unsupported tar entry type ${JSON.stringify(String.fromCharCode(h.typeflag))} at offset ${offset}`,
      );
    }
    const merged = new Map([...global, ...(pax ?? [])]);
    // Empty values cancel a keyword, except for xattrs, whose values may be empty.
    const records = new Map([...merged].filter(([k, v]) => v !== '' || k.includes('.xattr.')));
    let path = records.get('path') ?? longName ?? (h.prefix ? `${h.prefix}/${h.name}` : h.name);
    const linkname = records.get('linkpath') ?? longLink ?? h.linkname;
    if (path.includes('\0') || linkname.includes('\0')) {
      throw new TarError(
        'TAR_INVALID_NAME',
        `a name holding a NUL byte at offset ${offset}: ${quoteBytes(path)}`,
      );
    }
    const xattrs = paxXattrs(records);
    const problem = xattrsProblem(xattrs);
    if (problem)
      throw new TarError('TAR_INVALID_NAME', `${quoteBytes(path)} at offset ${offset}: ${problem}`);
    const size = records.has('size') ? parseDecimal(records.get('size')!, 'size') : h.size;
    pax = undefined;
    longName = undefined;
    longLink = undefined;
    // Old tars mark directories only by a trailing slash on a regular-file entry.
    let entryType = type;
    if (type === 'file' && h.typeflag !== TYPEFLAG.contiguous && path.endsWith('/')) entryType = 'dir';
    if (entryType === 'dir') path = path.replace(/\/+$/, '') || '.';
    // Only regular-file entries are followed by data (even one turned into a directory by a
    // trailing slash); whatever size other entry types declare, nothing follows them.
    const followSize = type === 'file' ? size : 0;
    const dataSize = entryType === 'file' ? size : 0;
    let remaining = dataSize;
    let started = false;
    const body = async function* () {
      if (started) throw new Error('tar entry body read twice');
      started = true;
      for await (const chunk of reader.stream(remaining)) {
        remaining -= chunk.length;
        yield chunk;
      }
      if (remaining > 0) throw new TarError('TAR_TRUNCATED', `tar archive truncated in the data of ${path}`);
    };
    yield {
      path,
      type: entryType,
      linkname,
      mode: h.mode & 0o7777,
      uid: records.has('uid') ? parseDecimal(records.get('uid')!, 'uid') : h.uid,
      gid: records.has('gid') ? parseDecimal(records.get('gid')!, 'gid') : h.gid,
      uname: records.get('uname') ?? h.uname,
      gname: records.get('gname') ?? h.gname,
      mtime: records.has('mtime') ? parseTime(records.get('mtime')!) : { sec: h.mtime, nsec: 0 },
      size: dataSize,
      devmajor: h.devmajor,
      devminor: h.devminor,
      xattrs,
      body: body(),
    };
    // Skip what the consumer left of the data, then the padding to the next block.
    const skip = remaining + (followSize - dataSize) + ((BLOCK - (followSize % BLOCK)) % BLOCK);
    remaining = 0;
    if ((await reader.skip(skip)) < skip) {
      throw new TarError('TAR_TRUNCATED', `tar archive truncated in the data of ${path}`);
    }
  }
}

/** Extended attributes from pax `SCHILY.xattr.NAME` (raw bytes) and `LIBARCHIVE.xattr.NAME` (URL-encoded name, base64 value) records. */
function paxXattrs(records: Map<string, string>): Map<string, Uint8Array> {
  const xattrs = new Map<string, Uint8Array>();
  for (const [key, value] of records) {
    if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice(13), Buffer.from(value, 'latin1'));
    else if (key.startsWith('LIBARCHIVE.xattr.'))
      xattrs.set(percentDecode(key.slice(17)), Buffer.from(value, 'base64'));
  }
  return xattrs;
}

/** `%XX` escapes to the bytes they stand for, as a byte string. */
function percentDecode(text: string): string {
  return text.replace(/%(..)?/g, (_, hex: string | undefined) => {
    if (!hex || !/^[0-9a-fA-F]{2}$/.test(hex)) {
      throw new TarError('TAR_CORRUPT', `malformed URL encoding in the pax xattr name ${quoteBytes(text)}`);
    }
    return String.fromCharCode(Number.parseInt(hex, 16));
  });
}

function cstr(data: Uint8Array): string {
  const end = data.indexOf(0);
  return Buffer.from(end < 0 ? data : data.subarray(0, end)).toString('latin1');
}
