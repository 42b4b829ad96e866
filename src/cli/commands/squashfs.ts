import { UsageError } from '../../errors.ts';
import { DEFAULT_LEVEL, SquashfsImage, type WriteCompression, writeSquashfs } from '../../squashfs/index.ts';
import { listLines, walk, writeTreeToDirectory } from '../../tree/index.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';
import { withSourceTree } from './source-tree.ts';

export const squashfsCommands: Command[] = [
  {
    path: ['squashfs', 'create'],
    summary: 'Write a squashfs image of a directory, a tar file or an image',
    args: 'SRC OUT',
    arity: [2, 2],
    options: {
      compression: {
        type: 'string',
        value: 'none|gzip|zstd',
        description: 'block compression (default gzip)',
      },
      level: {
        type: 'string',
        value: 'N',
        description: 'compression level (gzip 1-9, default 9; zstd 1-22, default 15)',
      },
      'block-size': {
        type: 'string',
        value: 'N',
        description: 'data block size, 4096..1048576 (default 131072)',
      },
      mtime: {
        type: 'string',
        value: 'N',
        description: 'filesystem creation time (default $SOURCE_DATE_EPOCH, else newest mtime)',
      },
      'all-root': { type: 'boolean', description: 'make every file owned by root' },
      'no-xattrs': { type: 'boolean', description: 'leave extended attributes out' },
      'tail-ends': { type: 'boolean', description: 'pack the tail ends of large files into fragments' },
    },
    details:
      'SRC is a directory, a tar file (plain, gzip or zstd), or an image reference such as oci:DIR:TAG.',
    async run(ctx, [src, out], options) {
      const compression = (options.compression as WriteCompression | undefined) ?? 'gzip';
      if (!(compression in DEFAULT_LEVEL)) throw new UsageError(`--compression must be none, gzip or zstd`);
      const result = await withSourceTree(
        src!,
        async (tree) => {
          const total = [...walk(tree)].reduce(
            (sum, e) => sum + (e.inode.type === 'file' && !e.linkOf ? e.inode.content.size : 0),
            0,
          );
          const progress = ctx.progress('squashfs', total);
          const r = await writeSquashfs(tree, out!, {
            compression,
            level: integerOption(options.level, 'level'),
            blockSize: integerOption(options['block-size'], 'block-size'),
            mkfsTime: integerOption(options.mtime, 'mtime'),
            allRoot: options['all-root'] === true,
            xattrs: options['no-xattrs'] !== true,
            tailEnds: options['tail-ends'] === true,
            onProgress: (n) => progress.tick(n),
          });
          progress.done();
          return r;
        },
        { xattrs: options['no-xattrs'] !== true },
      );
      ctx.result({ image: out, ...result });
      ctx.print(`Wrote ${out}: ${result.inodes} inodes, ${result.bytesUsed} bytes used`);
      return 0;
    },
  },
  {
    path: ['squashfs', 'ls'],
    summary: 'List a squashfs image like unsquashfs -lln',
    args: 'IMG',
    arity: [1, 1],
    async run(ctx, [img]) {
      const image = SquashfsImage.open(img!);
      try {
        if (ctx.json) {
          ctx.result(
            [...image.walk()].map(({ path, inode }) => ({
              path: `/${Buffer.from(path, 'latin1').toString('utf8')}`,
              type: inode.type,
              mode: inode.mode,
              uid: inode.uid,
              gid: inode.gid,
              size: inode.size,
              mtime: inode.mtime,
              ...(inode.target !== undefined
                ? { target: Buffer.from(inode.target, 'latin1').toString('utf8') }
                : {}),
              ...(inode.rdev ? { rdev: inode.rdev } : {}),
            })),
          );
        } else {
          for (const line of listLines(image.walk()))
            process.stdout.write(Buffer.from(`${line}\n`, 'latin1'));
        }
      } finally {
        image.close();
      }
      return 0;
    },
  },
  {
    path: ['squashfs', 'extract'],
    summary: 'Extract a squashfs image into a directory',
    args: 'IMG DIR',
    arity: [2, 2],
    async run(ctx, [img, dir]) {
      const image = SquashfsImage.open(img!);
      try {
        await writeTreeToDirectory(image.toTree(), dir!);
      } finally {
        image.close();
      }
      ctx.result({ image: img, directory: dir });
      ctx.print(`Extracted ${img} into ${dir}`);
      return 0;
    },
  },
];
