/**
 * Update media: a FAT image (a whole-disk "superfloppy", no partition table) whose root holds
 * `seal-update/`, an OCI image layout with the signed system under the tag `system` and
 * everything it pins and carries — what a device booted with `seal.media` looks for on a stick.
 *
 * The layout is synced into a scratch directory, then FAT is made by dosfstools and filled by
 * mtools straight into the image file (no loop device, no mount). Output is deterministic: a
 * fixed volume id (`--invariant`), directories made and files copied in sorted order, every
 * timestamp SOURCE_DATE_EPOCH's (mtools honours it) or, without it, 2000-01-01.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MEDIA_DIR, MEDIA_TAG } from '../agent/media.ts';
import { syncImage } from '../registry/sync.ts';
import { type OpenOptions, openDestination, openSource } from '../store/index.ts';
import { writeAtomic } from '../util/atomic.ts';
import { MachineError } from './swtpm.ts';

const run = promisify(execFile);
const MiB = 1 << 20;

/** FAT32 wants at least about 33 MiB. */
const MIN_SIZE = 40 * MiB;
/** 2000-01-01T00:00:00Z, the timestamps without SOURCE_DATE_EPOCH. */
const DEFAULT_EPOCH = 946_684_800;

export interface MediaOptions {
  /** The image file to write (replaced atomically). */
  image: string;
  /** The signed system manifest: any image reference. */
  manifest: string;
  /** Bytes of the image (default: what the layout needs, and room for FAT, at least 40 MiB). */
  size?: number;
  /** Registry options for the manifest's reference. */
  transport?: OpenOptions;
}

export interface MediaResult {
  image: string;
  /** The system manifest's digest. */
  digest: string;
  /** Bytes of the image file. */
  size: number;
  /** Bytes and files of the layout on it. */
  layoutBytes: number;
  files: number;
}

async function tool(command: string, args: string[], epoch: number): Promise<void> {
  try {
    await run(command, args, {
      maxBuffer: 16 * MiB,
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1', SOURCE_DATE_EPOCH: String(epoch) },
    });
  } catch (error) {
    const e = error as { stderr?: string; code?: unknown };
    throw new MachineError(
      'MACHINE_MEDIA',
      `update media: ${command} failed: ${(e.stderr ?? String(error)).trim().split('\n').at(-1)}${e.code === 'ENOENT' ? ` (install ${command === 'mkfs.vfat' ? 'dosfstools' : 'mtools'})` : ''}`,
      { cause: error },
    );
  }
}

/** The directories and files under `dir`, relative, sorted, directories before what they hold. */
function walk(dir: string): { dirs: string[]; files: { path: string; size: number }[] } {
  const dirs: string[] = [];
  const files: { path: string; size: number }[] = [];
  const visit = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = statSync(join(dir, path));
      if (st.isDirectory()) {
        dirs.push(path);
        visit(path);
      } else files.push({ path, size: st.size });
    }
  };
  visit('');
  return { dirs, files };
}

/**
 * Copies the signed system at `manifest`, with everything it pins and carries (signatures), into
 * a new OCI layout at `layout` under `tag`, as a device takes it in; returns its digest.
 */
export async function copySystem(
  manifest: string,
  layout: string,
  tag: string,
  transport?: OpenOptions,
): Promise<string> {
  const src = await openSource(manifest, transport);
  try {
    const dst = await openDestination(`oci:${layout}:${tag}`);
    try {
      const digest = (await syncImage(src, dst, { tag })).root.digest;
      await dst.commit();
      return digest;
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

/** Writes update media for `options.manifest` into `options.image`. */
export async function writeMedia(options: MediaOptions): Promise<MediaResult> {
  const epochText = process.env.SOURCE_DATE_EPOCH;
  const epoch = epochText && /^\d{1,12}$/.test(epochText) ? Number(epochText) : DEFAULT_EPOCH;
  const scratch = mkdtempSync(join(tmpdir(), 'seal-media-'));
  try {
    const layout = join(scratch, MEDIA_DIR);
    const digest = await copySystem(options.manifest, layout, MEDIA_TAG, options.transport);
    const { dirs, files } = walk(layout);
    const layoutBytes = files.reduce((n, f) => n + f.size, 0);
    // Each file rounded up to a 4 KiB cluster, the FATs and directories, and some room.
    const needed = files.reduce((n, f) => n + Math.ceil((f.size + 1) / 4096) * 4096, 0);
    const size = options.size ?? Math.max(MIN_SIZE, Math.ceil((needed * 1.05 + 4 * MiB) / MiB) * MiB);
    if (!Number.isSafeInteger(size) || size < MIN_SIZE)
      throw new MachineError('MACHINE_MEDIA', `update media of ${size} bytes: FAT32 needs 40 MiB or more`);
    for (const f of files) utimesSync(join(layout, f.path), epoch, epoch);
    await writeAtomic(options.image, async (handle, temp) => {
      await handle.truncate(size);
      await tool('mkfs.vfat', ['-F', '32', '-n', 'SEALUPDATE', '--invariant', temp], epoch);
      await tool('mmd', ['-i', temp, `::/${MEDIA_DIR}`, ...dirs.map((d) => `::/${MEDIA_DIR}/${d}`)], epoch);
      // One mcopy per directory, its files in sorted order.
      const byDir = new Map<string, string[]>();
      for (const f of files) {
        const parent = f.path.includes('/') ? f.path.slice(0, f.path.lastIndexOf('/')) : '';
        byDir.set(parent, [...(byDir.get(parent) ?? []), f.path]);
      }
      for (const [parent, paths] of byDir) {
        // mcopy takes many files per call; a few hundred at a time keeps the argument list short.
        for (let i = 0; i < paths.length; i += 256) {
          const batch = paths.slice(i, i + 256).map((p) => join(layout, p));
          await tool(
            'mcopy',
            ['-m', '-i', temp, ...batch, `::/${MEDIA_DIR}${parent ? `/${parent}` : ''}/`],
            epoch,
          );
        }
      }
    });
    return { image: options.image, digest, size, layoutBytes, files: files.length };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
