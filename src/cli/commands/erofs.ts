import { ErofsImage, writeErofs } from '../../erofs/index.ts';
import { listLines, walk, writeTreeToDirectory } from '../../tree/index.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';
import { withSourceTree } from './source-tree.ts';

export const erofsCommands: Command[] = [
  {
    path: ['erofs', 'create'],
    summary: 'Write an uncompressed EROFS image of a directory, a tar file or an image',
    args: 'SRC OUT',
    arity: [2, 2],
    options: {
      mtime: { type: 'string', value: 'N', description: 'give every inode this mtime (as mkfs.erofs -T)' },
      'all-root': { type: 'boolean', description: 'make every file owned by root' },
      'no-xattrs': { type: 'boolean', description: 'leave extended attributes out' },
      'chunk-size': {
        type: 'string',
        value: 'N',
        description: 'store files chunk-based with N-byte chunks (all-zero chunks become holes)',
      },
    },
    details:
      'SRC is a directory, a tar file (plain, gzip or zstd), or an image reference such as oci:DIR:TAG.',
    async run(ctx, [src, out], options) {
      const xattrs = options['no-xattrs'] !== true;
      const result = await withSourceTree(
        src!,
        async (tree) => {
          const total = [...walk(tree)].reduce(
            (sum, e) => sum + (e.inode.type === 'file' && !e.linkOf ? e.inode.content.size : 0),
            0,
          );
          const progress = ctx.progress('erofs', total);
          const r = await writeErofs(tree, out!, {
            mtime: integerOption(options.mtime, 'mtime'),
            allRoot: options['all-root'] === true,
            xattrs,
            chunkSize: integerOption(options['chunk-size'], 'chunk-size'),
            onProgress: (n) => progress.tick(n),
          });
          progress.done();
          return r;
        },
        { xattrs },
      );
      ctx.result({ image: out, ...result });
      ctx.print(`Wrote ${out}: ${result.inodes} inodes, ${result.size} bytes`);
      return 0;
    },
  },
  {
    path: ['erofs', 'ls'],
    summary: 'List an EROFS image (in the format of unsquashfs -lln)',
    args: 'IMG',
    arity: [1, 1],
    async run(ctx, [img]) {
      const image = ErofsImage.open(img!);
      try {
        const entries = [...image.walk()].map(({ path, inode }) => ({
          path,
          inode: { ...inode, mtime: inode.mtime.sec },
        }));
        if (ctx.json) {
          ctx.result(
            entries.map(({ path, inode }) => ({
              path: `/${Buffer.from(path, 'latin1').toString('utf8')}`,
              type: inode.type,
              mode: inode.mode & 0o7777,
              uid: inode.uid,
              gid: inode.gid,
              size: inode.size,
              mtime: inode.mtime,
              nlink: inode.nlink,
              ...(inode.target !== undefined
                ? { target: Buffer.from(inode.target, 'latin1').toString('utf8') }
                : {}),
              ...(inode.rdev ? { rdev: inode.rdev } : {}),
            })),
          );
        } else {
          for (const line of listLines(entries, 'erofs-root'))
            process.stdout.write(Buffer.from(`${line}\n`, 'latin1'));
        }
      } finally {
        image.close();
      }
      return 0;
    },
  },
  {
    path: ['erofs', 'extract'],
    summary: 'Extract an EROFS image into a directory',
    args: 'IMG DIR',
    arity: [2, 2],
    async run(ctx, [img, dir]) {
      const image = ErofsImage.open(img!);
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
