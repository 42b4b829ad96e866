/** The `ls` and `extract` commands every filesystem image format offers, written once. */
import { type ListedInode, listLines, type Tree, writeTreeToDirectory } from '../../tree/index.ts';
import type { Command } from '../command.ts';

export interface OpenedImage {
  walk(): Iterable<{ path: string; inode: ListedInode }>;
  toTree(): Tree;
  close(): void;
}

const utf8 = (bytes: string) => Buffer.from(bytes, 'latin1').toString('utf8');

export function listCommand(format: string, open: (path: string) => OpenedImage, root: string): Command {
  return {
    path: [format, 'ls'],
    summary: `List a ${format} image like unsquashfs -lln`,
    args: 'IMG',
    arity: [1, 1],
    async run(ctx, [img]) {
      const image = open(img!);
      try {
        if (ctx.json) {
          ctx.result(
            [...image.walk()].map(({ path, inode }) => ({
              path: `/${utf8(path)}`,
              type: inode.type,
              mode: inode.mode & 0o7777,
              uid: inode.uid,
              gid: inode.gid,
              size: inode.size,
              mtime: inode.mtime,
              ...(inode.target !== undefined ? { target: utf8(inode.target) } : {}),
              ...(inode.rdev ? { rdev: inode.rdev } : {}),
            })),
          );
        } else {
          for (const line of listLines(image.walk(), root))
            process.stdout.write(Buffer.from(`${line}\n`, 'latin1'));
        }
      } finally {
        image.close();
      }
      return 0;
    },
  };
}

export function extractCommand(format: string, open: (path: string) => OpenedImage): Command {
  return {
    path: [format, 'extract'],
    summary: `Extract a ${format} image into a directory`,
    args: 'IMG DIR',
    arity: [2, 2],
    async run(ctx, [img, dir]) {
      const image = open(img!);
      try {
        await writeTreeToDirectory(image.toTree(), dir!);
      } finally {
        image.close();
      }
      ctx.result({ image: img, directory: dir });
      ctx.print(`Extracted ${img} into ${dir}`);
      return 0;
    },
  };
}
