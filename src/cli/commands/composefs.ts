import { readFileSync } from 'node:fs';
import {
  type CfsNode,
  composefsTree,
  dumpLines,
  type FormatVersion,
  mountComposefs,
  parseDumpfile,
  readComposefsImage,
  unmountComposefs,
  type VerityMode,
  writeComposefsImage,
} from '../../composefs/index.ts';
import { UsageError } from '../../errors.ts';
import { walk } from '../../tree/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';
import { withSourceTree } from './source-tree.ts';
import { registryOptions, TRANSPORT_OPTIONS } from './transport-options.ts';

const DUMPFILE = 'dumpfile:';

export const composefsCommands: Command[] = [
  {
    path: ['composefs', 'create'],
    summary: 'Write a composefs image and store the file contents in an object store',
    args: 'SRC OUT',
    arity: [2, 2],
    options: {
      objects: {
        type: 'string',
        value: 'DIR',
        description: 'store files over 64 bytes here (without it they are only digested)',
      },
      'format-version': {
        type: 'string',
        value: 'N',
        description: 'composefs format version, 0 or 1 (default 1)',
      },
      'print-digest': { type: 'boolean', description: "print the image's fs-verity digest" },
      ...TRANSPORT_OPTIONS,
    },
    details:
      'SRC is a directory, a tar file, an image reference such as oci:DIR:TAG, or dumpfile:PATH (a composefs dumpfile, as mkcomposefs --from-file takes).',
    async run(ctx, [src, out], options) {
      const version = integerOption(options['format-version'], 'format-version') ?? 1;
      if (version !== 0 && version !== 1) throw new UsageError('--format-version must be 0 or 1');
      const objects = options.objects as string | undefined;
      const build = async (root: CfsNode) => {
        const result = await writeComposefsImage(root, { version: version as FormatVersion });
        await writeFileAtomic(out!, result.image);
        return result;
      };
      const result = src!.startsWith(DUMPFILE)
        ? await build(parseDumpfile(readFileSync(src!.slice(DUMPFILE.length))))
        : await withSourceTree(
            src!,
            async (tree) => {
              const total = [...walk(tree)].reduce(
                (sum, e) => sum + (e.inode.type === 'file' && !e.linkOf ? e.inode.content.size : 0),
                0,
              );
              const progress = ctx.progress('composefs', total);
              const root = await composefsTree(tree, { objects, onProgress: (n) => progress.tick(n) });
              progress.done();
              return build(root);
            },
            // Symlink modes as the tar headers give them, as composefs-rs maps tar to composefs.
            { transport: registryOptions(options), symlinkModes: 'header' },
          );
      const digest = result.digest.toString('hex');
      ctx.result({ image: out, digest, version: result.version, size: result.image.length });
      if (options['print-digest']) process.stdout.write(`${digest}\n`);
      else ctx.print(`Wrote ${out}: composefs format ${result.version}, fs-verity digest ${digest}`);
      return 0;
    },
  },
  {
    path: ['composefs', 'dump'],
    summary: 'Print a composefs image as a dumpfile (as composefs-info dump)',
    args: 'IMG',
    arity: [1, 1],
    async run(_ctx, [img]) {
      const { root } = readComposefsImage(img!);
      for (const line of dumpLines(root)) process.stdout.write(Buffer.from(`${line}\n`, 'latin1'));
      return 0;
    },
  },
  {
    path: ['composefs', 'mount'],
    summary: 'Mount a composefs image over its object store (EROFS + overlayfs)',
    args: 'IMG DIR',
    arity: [2, 2],
    options: {
      objects: { type: 'string', value: 'DIR', description: 'the object store (required)' },
      verity: {
        type: 'string',
        value: 'require|none',
        description: 'fs-verity check of every object (default: require where the kernel has fs-verity)',
      },
    },
    async run(ctx, [img, dir], options) {
      const objects = options.objects as string | undefined;
      if (!objects) throw new UsageError('--objects DIR is required');
      const verity = options.verity as VerityMode | undefined;
      if (verity !== undefined && verity !== 'require' && verity !== 'none') {
        throw new UsageError('--verity must be require or none');
      }
      const result = await mountComposefs(img!, dir!, objects, { verity });
      ctx.result(result);
      ctx.print(
        result.verity
          ? `Mounted ${img} on ${dir}; the kernel checks every object's fs-verity digest`
          : `Mounted ${img} on ${dir}; this kernel has no fs-verity, object contents are not checked at run time`,
      );
      return 0;
    },
  },
  {
    path: ['composefs', 'umount'],
    summary: 'Unmount a composefs mount',
    args: 'DIR',
    arity: [1, 1],
    async run(ctx, [dir]) {
      await unmountComposefs(dir!);
      ctx.result({ target: dir });
      ctx.print(`Unmounted ${dir}`);
      return 0;
    },
  },
];
