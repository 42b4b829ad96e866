/**
 * The SRC argument of the filesystem-creating commands: a directory, a tar file (plain, gzip
 * or zstd), or an image reference (its merged root filesystem).
 */
import { createReadStream, statSync } from 'node:fs';
import { mergedTree, type OpenOptions, openSource, readImage } from '../../store/index.ts';
import { decompress } from '../../tar/index.ts';
import { Spool, type TarTreeOptions, type Tree, treeFromDirectory, treeFromTar } from '../../tree/index.ts';

export async function withSourceTree<T>(
  src: string,
  use: (tree: Tree) => Promise<T>,
  options: { xattrs?: boolean; transport?: OpenOptions } & TarTreeOptions = {},
): Promise<T> {
  const st = (() => {
    try {
      return statSync(src);
    } catch {
      return undefined;
    }
  })();
  if (st?.isDirectory()) return use(await treeFromDirectory(src, options));
  const spool = await Spool.create();
  try {
    if (st?.isFile()) return await use(await treeFromTar(decompress(createReadStream(src)), spool, options));
    const image = await openSource(src, options.transport);
    try {
      return await use(await mergedTree(image, await readImage(image), spool, options));
    } finally {
      await image.close();
    }
  } finally {
    await spool.close();
  }
}
