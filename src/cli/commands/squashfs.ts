import { UsageError } from '../../errors.ts';
import {
  DEFAULT_LEVEL,
  SquashfsImage,
  type WriteCompression,
  writeSquashfs,
  XZ_FILTERS,
  type XzFilter,
} from '../../squashfs/index.ts';
import { walk } from '../../tree/index.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';
import { catCommand, extractCommand, listCommand, type OpenedImage } from './image-file.ts';
import { withSourceTree } from './source-tree.ts';
import { registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

export const squashfsCommands: Command[] = [
  {
    path: ['squashfs', 'create'],
    summary: 'Write a squashfs image of a directory, a tar file or an image',
    args: 'SRC OUT',
    arity: [2, 2],
    options: {
      compression: {
        type: 'string',
        value: 'none|gzip|zstd|xz',
        description: 'block compression (default gzip)',
      },
      level: {
        type: 'string',
        value: 'N',
        description: 'compression level (gzip 1-9, default 9; zstd 1-22, default 15; xz 0-9, default 6)',
      },
      'xz-filters': {
        type: 'string',
        value: 'LIST',
        description: `xz: branch filters to try per block, comma-separated (${Object.keys(XZ_FILTERS).join(', ')})`,
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
      ...TRANSPORT_OPTIONS,
    },
    details:
      'SRC is a directory, a tar file (plain, gzip or zstd), or an image reference such as oci:DIR:TAG.',
    async run(ctx, [src, out], options) {
      const compression = (options.compression as WriteCompression | undefined) ?? 'gzip';
      if (!(compression in DEFAULT_LEVEL))
        throw new UsageError(`--compression must be none, gzip, zstd or xz`);
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
            xzFilters: (options['xz-filters'] as string | undefined)?.split(',').filter(Boolean) as
              | XzFilter[]
              | undefined,
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
        { xattrs: options['no-xattrs'] !== true, transport: registryOptions(options) },
      );
      ctx.result({ image: out, ...result });
      ctx.print(`Wrote ${out}: ${result.inodes} inodes, ${result.bytesUsed} bytes used`);
      return 0;
    },
  },
  listCommand('squashfs', openSquashfs, 'squashfs-root'),
  catCommand('squashfs', openSquashfs),
  extractCommand('squashfs', openSquashfs),
];

function openSquashfs(path: string): OpenedImage {
  const image = SquashfsImage.open(path);
  return {
    walk: () => image.walk(),
    toTree: () => image.toTree(),
    read: (file, offset, length) => image.readFile(image.lookup(file), offset, length),
    close: () => image.close(),
  };
}
