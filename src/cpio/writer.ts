/**
 * cpio "newc" archives (the initramfs format the kernel unpacks, Documentation/driver-api/
 * early-userspace/buffer-format.rst): a 110-byte ASCII header per entry, name and data each
 * padded to 4 bytes, and a TRAILER!!! entry. Written from the tree model, in memory (initrds
 * are small); hardlinked files keep one inode number with the data on the last name, as the
 * kernel expects.
 */
import { readContent } from '../tree/content.ts';
import { encodeDevice, fullMode, type Inode, linkCounts, type Tree, walk } from '../tree/model.ts';

const MAGIC = '070701';
const pad4 = (n: number) => (4 - (n % 4)) % 4;
const hex = (n: number) => (n >>> 0).toString(16).padStart(8, '0');

function header(fields: number[], name: string): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'latin1');
  const text = MAGIC + fields.map(hex).join('') + hex(nameBytes.length) + hex(0);
  return Buffer.concat([Buffer.from(text, 'latin1'), nameBytes, Buffer.alloc(pad4(110 + nameBytes.length))]);
}

/** The tree as a newc archive; paths are relative (`.`, `bin`, `bin/sh`), as initramfs wants. */
export async function treeToCpio(tree: Tree): Promise<Buffer> {
  const parts: Buffer[] = [];
  const links = linkCounts(tree);
  const numbers = new Map<Inode, number>();
  const entries = [...walk(tree)];
  // The data of a hardlinked file goes with its last name.
  const lastName = new Map<Inode, string>();
  for (const e of entries) if (e.inode.type === 'file') lastName.set(e.inode, e.path);
  for (const { path, inode } of entries) {
    let ino = numbers.get(inode);
    if (ino === undefined) {
      ino = numbers.size + 1;
      numbers.set(inode, ino);
    }
    let data: Buffer = Buffer.alloc(0);
    if (inode.type === 'symlink') data = Buffer.from(inode.target, 'latin1');
    else if (inode.type === 'file' && lastName.get(inode) === path) data = await readContent(inode.content);
    const rdev = inode.type === 'char' || inode.type === 'block' ? encodeDevice(inode.rdev) : 0;
    parts.push(
      header(
        [
          ino,
          fullMode(inode),
          inode.uid,
          inode.gid,
          links.get(inode) ?? 1,
          Math.max(0, inode.mtime.sec),
          data.length,
          0,
          0,
          (rdev >>> 8) & 0xfff,
          (rdev & 0xff) | ((rdev >>> 12) & 0xfff00),
        ],
        path === '' ? '.' : path,
      ),
      data,
      Buffer.alloc(pad4(data.length)),
    );
  }
  parts.push(header([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], 'TRAILER!!!'));
  return Buffer.concat(parts);
}
