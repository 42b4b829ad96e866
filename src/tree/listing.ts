/**
 * Listings in the format of `unsquashfs -lln` (numeric ids, local time), used for every image
 * format so listings can be compared line for line with squashfs-tools and with each other.
 */
import type { DeviceNumber, InodeType } from './model.ts';

export interface ListedInode {
  type: InodeType;
  /** Permission bits (type bits, if present, are ignored). */
  mode: number;
  uid: number;
  gid: number;
  /** Files: bytes; directories: as the format reports; symlinks: target length. */
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  target?: string;
  rdev?: DeviceNumber;
}

const TYPE_CHAR: Record<InodeType, string> = {
  dir: 'd',
  file: '-',
  symlink: 'l',
  block: 'b',
  char: 'c',
  fifo: 'p',
  socket: 's',
};

export function modeString(type: InodeType, mode: number): string {
  const bit = (mask: number, c: string) => (mode & mask ? c : '-');
  const special = (x: number, s: number, on: string, off: string) =>
    mode & s ? (mode & x ? on : off) : bit(x, 'x');
  return (
    TYPE_CHAR[type] +
    bit(0o400, 'r') +
    bit(0o200, 'w') +
    special(0o100, 0o4000, 's', 'S') +
    bit(0o040, 'r') +
    bit(0o020, 'w') +
    special(0o010, 0o2000, 's', 'S') +
    bit(0o004, 'r') +
    bit(0o002, 'w') +
    special(0o001, 0o1000, 't', 'T')
  );
}

const pad = (n: number) => String(n).padStart(2, '0');

/** One line per entry, as `unsquashfs -lln IMAGE` prints them (numeric ids, local time). */
export function* listLines(
  entries: Iterable<{ path: string; inode: ListedInode }>,
  root = 'squashfs-root',
): Generator<string> {
  for (const { path, inode } of entries) {
    const owner = `${inode.uid}/${inode.gid}`;
    // unsquashfs pads the size to 25 characters minus the lengths of the two ids.
    const width = 25 - (owner.length - 1);
    let size: string;
    if (inode.type === 'char' || inode.type === 'block') {
      const raw =
        ((inode.rdev!.minor & 0xff) | (inode.rdev!.major << 8) | ((inode.rdev!.minor & ~0xff) << 12)) >>> 0;
      size = `${' '.padStart(Math.max(1, width - 7))}${String(raw >>> 8).padStart(3)},${String(raw & 0xff).padStart(3)}`;
    } else {
      const value = inode.type === 'fifo' || inode.type === 'socket' ? 0 : inode.size;
      size = String(value).padStart(Math.max(0, width));
    }
    const t = new Date(inode.mtime * 1000);
    const time = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}:${pad(t.getMinutes())}`;
    const name = path === '' ? root : `${root}/${path}`;
    const link = inode.type === 'symlink' ? ` -> ${inode.target}` : '';
    yield `${modeString(inode.type, inode.mode)} ${owner} ${size} ${time} ${name}${link}`;
  }
}
