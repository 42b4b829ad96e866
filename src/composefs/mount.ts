/**
 * Mounting a composefs image with the kernel: the EROFS metadata image is mounted read-only
 * (file-backed), then overlayfs stacks it over the object store as a data-only lower layer
 * (`lowerdir=META::OBJECTS`) with metacopy and redirects, and `verity=require` where the kernel
 * has fs-verity so every object is checked against the digest in the image. The EROFS mount is
 * detached right away: the overlay keeps it alive, and one `umount DIR` releases everything.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { ComposefsError } from './model.ts';

const run = promisify(execFile);

export type VerityMode = 'require' | 'none';

/** Whether the running kernel was built with fs-verity (undefined when it cannot tell). */
export function kernelHasFsverity(): boolean | undefined {
  try {
    const config = gunzipSync(readFileSync('/proc/config.gz')).toString('latin1');
    return /^CONFIG_FS_VERITY=y$/m.test(config);
  } catch {
    return undefined;
  }
}

async function mount(args: string[], what: string): Promise<void> {
  try {
    await run('mount', args);
  } catch (error) {
    const detail = String((error as { stderr?: string }).stderr ?? error).trim();
    throw new ComposefsError('COMPOSEFS_MOUNT', `mounting ${what} failed: ${detail}`, {
      subject: what,
      cause: error,
    });
  }
}

export interface ComposefsMountResult {
  target: string;
  /** Whether the kernel checks every object's fs-verity digest on open. */
  verity: boolean;
}

export async function mountComposefs(
  image: string,
  target: string,
  objects: string,
  options: { verity?: VerityMode } = {},
): Promise<ComposefsMountResult> {
  for (const [what, path] of [
    ['image', image],
    ['object store', objects],
    ['mount point', target],
  ] as const) {
    if (!existsSync(path))
      throw new ComposefsError('COMPOSEFS_MOUNT', `${what} ${path} does not exist`, { subject: path });
  }
  const verity = options.verity ?? (kernelHasFsverity() === false ? 'none' : 'require');
  const meta = await mkdtemp(join(tmpdir(), 'seal-composefs-'));
  try {
    await mount(['-t', 'erofs', '-o', 'ro', resolve(image), meta], image);
    try {
      const overlay = [
        'ro',
        'metacopy=on',
        'redirect_dir=on',
        `lowerdir=${meta}::${resolve(objects)}`,
        ...(verity === 'require' ? ['verity=require'] : []),
      ].join(',');
      await mount(['-t', 'overlay', 'composefs', '-o', overlay, resolve(target)], target);
    } finally {
      await run('umount', ['--lazy', meta]).catch(() => {});
    }
  } finally {
    await rm(meta, { recursive: true, force: true });
  }
  return { target, verity: verity === 'require' };
}

export async function unmountComposefs(target: string): Promise<void> {
  try {
    await run('umount', [resolve(target)]);
  } catch (error) {
    const detail = String((error as { stderr?: string }).stderr ?? error).trim();
    throw new ComposefsError('COMPOSEFS_MOUNT', `unmounting ${target} failed: ${detail}`, {
      subject: target,
    });
  }
}
