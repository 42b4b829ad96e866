/**
 * What a system pins and carries, as a device's fetch counts it (the configs and layers of every
 * manifest in its closure: the system, its images, its signatures) and as its store holds it
 * (every blob file). The system is synced into a layout of its own (as `seal sync` copies it)
 * and read back.
 */
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runSeal } from './cli.ts';

export interface ClosureBlob {
  size: number;
  mediaType: string;
}

/** `system` synced into `dir` (scratch space) as a device's fetch copies it; its blob directory. */
function syncClosure(system: string, dir: string): string {
  const r = runSeal(['sync', system, `oci:${dir}:x`]);
  if (r.status !== 0) throw new Error(`seal sync ${system}: ${r.stderr}`);
  return join(dir, 'blobs/sha256');
}

/** Digest → size and media type of the configs and layers `system` (any image reference) pins and carries; `dir` is scratch space, removed after. */
export function closureBlobs(system: string, dir: string): Map<string, ClosureBlob> {
  const blobs = syncClosure(system, dir);
  const sizes = new Map<string, ClosureBlob>();
  try {
    for (const hex of readdirSync(blobs)) {
      const text = readFileSync(join(blobs, hex));
      let doc:
        | {
            config?: { digest: string; size: number; mediaType: string };
            layers?: { digest: string; size: number; mediaType: string }[];
          }
        | undefined;
      try {
        doc = JSON.parse(text.toString('utf8'));
      } catch {}
      for (const d of [doc?.config, ...(doc?.layers ?? [])])
        if (d?.digest) sizes.set(d.digest, { size: d.size, mediaType: d.mediaType });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return sizes;
}

/**
 * Every blob file of what a device's store holds of `system` — its manifests, signatures and
 * pinned images — by digest with its size; `dir` is scratch space, removed after.
 */
export function closureFiles(system: string, dir: string): Map<string, number> {
  const blobs = syncClosure(system, dir);
  try {
    return new Map(readdirSync(blobs).map((hex) => [`sha256:${hex}`, statSync(join(blobs, hex)).size]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
