/**
 * What every filesystem image reader needs to serve `cat`: finding an inode by path, and
 * checking a requested byte range of a file. Each reader turns the answers into its own errors.
 */

/**
 * The inode at `path` (`/`-separated byte-string names from `root`; `.`/`..` and symlinks are
 * not followed), or undefined when a name is missing or a non-directory is crossed.
 */
export function resolvePath<I>(
  root: I,
  path: string,
  child: (dir: I, name: string) => I | undefined,
): I | undefined {
  let inode: I | undefined = root;
  for (const name of path.split('/')) {
    if (name === '') continue;
    inode = name === '.' || name === '..' ? undefined : child(inode, name);
    if (inode === undefined) return undefined;
  }
  return inode;
}

/** Why `offset`+`length` cannot be read from an inode of this type and size, or undefined if it can. */
export function fileRangeProblem(
  type: string,
  size: number,
  offset: number,
  length: number,
): string | undefined {
  if (type !== 'file') return `is a ${type}, not a regular file`;
  const valid =
    Number.isSafeInteger(offset) &&
    Number.isSafeInteger(length) &&
    offset >= 0 &&
    length >= 0 &&
    offset + length <= size;
  return valid ? undefined : `has ${size} bytes: ${offset}+${length} is outside them`;
}
