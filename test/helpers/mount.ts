import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

/** Mounts read-only with the kernel, runs `use`, and always unmounts. */
export async function withMount<T>(
  type: 'squashfs' | 'erofs',
  image: string,
  dir: string,
  use: (dir: string) => Promise<T>,
): Promise<T> {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', type, '-o', type === 'squashfs' ? 'loop,ro' : 'ro', image, dir]);
  try {
    return await use(dir);
  } finally {
    execFileSync('umount', [dir]);
  }
}
