/** The `ls`, `cat` and `extract` commands every filesystem image format offers, written once. */
import { once } from 'node:events';
import { type ListedInode, listLines, type Tree, writeTreeToDirectory } from '../../tree/index.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';

export interface OpenedImage {
  walk(): Iterable<{ path: string; inode: ListedInode }>;
  toTree(): Tree;
  /** `length` bytes (default: to the end) from `offset` of the regular file at `path`, a byte string. */
  read(path: string, offset: number, length?: number): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
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

export function catCommand(format: string, open: (path: string) => OpenedImage): Command {
  return {
    path: [format, 'cat'],
    summary: `Print a file of a ${format} image, or a byte range of it`,
    args: 'IMG PATH',
    arity: [2, 2],
    options: {
      offset: { type: 'string', value: 'N', description: 'first byte to print (default 0)' },
      length: { type: 'string', value: 'N', description: 'bytes to print (default: to the end of the file)' },
    },
    async run(_ctx, [img, path], options) {
      const image = open(img!);
      try {
        const name = Buffer.from(path!, 'utf8').toString('latin1');
        const offset = integerOption(options.offset, 'offset') ?? 0;
        for await (const chunk of image.read(name, offset, integerOption(options.length, 'length'))) {
          if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
        }
      } finally {
        image.close();
      }
      return 0;
    },
  };
}
