import { ErofsImage, writeErofs } from '../../erofs/index.ts';
import { walk } from '../../tree/index.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';
import { catCommand, extractCommand, listCommand } from './image-file.ts';
import { withSourceTree } from './source-tree.ts';
import { registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

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
      ...TRANSPORT_OPTIONS,
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
        { xattrs, transport: registryOptions(options) },
      );
      ctx.result({ image: out, ...result });
      ctx.print(`Wrote ${out}: ${result.inodes} inodes, ${result.size} bytes`);
      return 0;
    },
  },
  listCommand('erofs', openErofs, 'erofs-root'),
  catCommand('erofs', openErofs),
  extractCommand('erofs', openErofs),
];

/** An EROFS image with its mtimes in whole seconds, as listings show them. */
function openErofs(path: string) {
  const image = ErofsImage.open(path);
  return {
    *walk() {
      for (const { path: p, inode } of image.walk())
        yield { path: p, inode: { ...inode, mtime: inode.mtime.sec } };
    },
    toTree: () => image.toTree(),
    read: (file: string, offset: number, length?: number) =>
      image.readFile(image.lookup(file), offset, length),
    close: () => image.close(),
  };
}
