/**
 * Deterministic tar writer: ustar headers, with a pax header whenever something does not fit
 * (long names or link targets, xattrs, sub-second mtimes, large ids or sizes, non-ASCII names).
 * The same entries always give the same bytes: no user/group names, no atime/ctime, fixed pax names.
 */
import type { Timestamp } from '../tree/model.ts';
import { TarError } from './errors.ts';
import { BLOCK, formatHeader, formatPax, octalFits, type RawHeader, TYPEFLAG } from './header.ts';
import type { TarEntryType } from './reader.ts';

export interface TarWriteEntry {
  /** Path (byte string), relative; directories may end with '/'. */
  path: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  mtime: Timestamp;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Uint8Array>;
  /** Regular files: the data and its exact size. */
  size?: number;
  body?: AsyncIterable<Uint8Array>;
}

const ZERO = new Uint8Array(BLOCK * 2);

/** Splits a path into ustar prefix (≤155) and name (≤100) at a '/', or returns undefined. */
function splitUstar(path: string): { prefix: string; name: string } | undefined {
  if (path.length <= 100) return { prefix: '', name: path };
  for (let i = path.length - 101; i < path.length; i++) {
    if (i > 0 && path[i] === '/' && i <= 155 && path.length - i - 1 <= 100 && path.length - i - 1 > 0) {
      return { prefix: path.slice(0, i), name: path.slice(i + 1) };
    }
  }
  return undefined;
}

const isAscii = (s: string) => /^[\x20-\x7e]*$/.test(s);

function formatTime({ sec, nsec }: Timestamp): string {
  if (nsec === 0) return String(sec);
  if (sec < 0) {
    const whole = sec + 1;
    return `${whole === 0 ? '-0' : whole}.${String(1e9 - nsec).padStart(9, '0')}`.replace(/0+$/, '');
  }
  return `${sec}.${String(nsec).padStart(9, '0')}`.replace(/0+$/, '');
}

/** libarchive's URL encoding of an xattr name: '%', '=' and bytes outside printable ASCII as %XX. */
function percentEncode(name: string): string {
  return name.replace(
    /[^\x21-\x24\x26-\x3c\x3e-\x7e]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  );
}

export function entryHeaders(entry: TarWriteEntry): Uint8Array[] {
  const size = entry.type === 'file' ? (entry.size ?? 0) : 0;
  const linkname = entry.linkname ?? '';
  const pax: [string, string][] = [];
  const split = isAscii(entry.path) ? splitUstar(entry.path) : undefined;
  if (!split) pax.push(['path', entry.path]);
  if (linkname.length > 100 || !isAscii(linkname)) pax.push(['linkpath', linkname]);
  if (!octalFits(entry.uid, 8)) pax.push(['uid', String(entry.uid)]);
  if (!octalFits(entry.gid, 8)) pax.push(['gid', String(entry.gid)]);
  if (!octalFits(size, 12)) pax.push(['size', String(size)]);
  if (entry.mtime.nsec !== 0 || !octalFits(entry.mtime.sec, 12)) pax.push(['mtime', formatTime(entry.mtime)]);
  for (const [key, value] of [...(entry.xattrs ?? [])].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    // A SCHILY key ends at its first '=': such names need libarchive's URL-encoded form.
    if (key.includes('='))
      pax.push([`LIBARCHIVE.xattr.${percentEncode(key)}`, Buffer.from(value).toString('base64')]);
    else pax.push([`SCHILY.xattr.${key}`, Buffer.from(value).toString('latin1')]);
  }
  const typeflag = {
    file: TYPEFLAG.file,
    hardlink: TYPEFLAG.hardlink,
    symlink: TYPEFLAG.symlink,
    char: TYPEFLAG.char,
    block: TYPEFLAG.block,
    dir: TYPEFLAG.dir,
    fifo: TYPEFLAG.fifo,
  }[entry.type];
  const fallbackName = (split?.name ?? entry.path.slice(-100)).replace(/[^\x20-\x7e]/g, '_');
  const header: RawHeader = {
    name: split?.name ?? fallbackName,
    prefix: split?.prefix ?? '',
    mode: entry.mode & 0o7777,
    uid: octalFits(entry.uid, 8) ? entry.uid : 0,
    gid: octalFits(entry.gid, 8) ? entry.gid : 0,
    size: octalFits(size, 12) ? size : 0,
    mtime: octalFits(entry.mtime.sec, 12) ? entry.mtime.sec : 0,
    typeflag,
    linkname:
      linkname.length <= 100 && isAscii(linkname)
        ? linkname
        : linkname.slice(0, 100).replace(/[^\x20-\x7e]/g, '_'),
    magic: 'ustar',
    uname: entry.uname ?? '',
    gname: entry.gname ?? '',
    devmajor: entry.devmajor ?? 0,
    devminor: entry.devminor ?? 0,
  };
  const blocks: Uint8Array[] = [];
  if (pax.length > 0) {
    const data = formatPax(pax);
    const paxName = `PaxHeaders/${fallbackName}`.slice(0, 100);
    blocks.push(
      formatHeader({
        ...header,
        name: paxName,
        prefix: '',
        typeflag: TYPEFLAG.paxLocal,
        size: data.length,
        linkname: '',
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: '',
        gname: '',
        devmajor: 0,
        devminor: 0,
      }),
      data,
      new Uint8Array((BLOCK - (data.length % BLOCK)) % BLOCK),
    );
  }
  blocks.push(formatHeader(header));
  return blocks;
}

/** Streams a tar archive of `entries`, ending with the two zero blocks. */
export async function* writeTar(
  entries: AsyncIterable<TarWriteEntry> | Iterable<TarWriteEntry>,
): AsyncGenerator<Uint8Array> {
  for await (const entry of entries) {
    yield* entryHeaders(entry);
    if (entry.type !== 'file') continue;
    const size = entry.size ?? 0;
    let written = 0;
    if (entry.body) {
      for await (const chunk of entry.body) {
        written += chunk.length;
        if (written > size) break;
        yield chunk;
      }
    }
    if (written !== size) {
      throw new TarError('TAR_CORRUPT', `content of ${entry.path} is not the declared ${size} bytes`, {
        subject: entry.path,
      });
    }
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad) yield new Uint8Array(pad);
  }
  yield ZERO;
}
