/**
 * What a system pins and carries, as a device's fetch counts it: the configs and layers of every
 * manifest in its closure (the system, its images, its signatures), by digest with their sizes.
 * The system is synced into a layout of its own (as `seal sync` copies it) and read back.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runSeal } from './cli.ts';

export interface ClosureBlob {
  size: number;
  mediaType: string;
}

/** Digest → size and media type of the configs and layers `system` (any image reference) pins and carries; `dir` is scratch space, removed after. */
export function closureBlobs(system: string, dir: string): Map<string, ClosureBlob> {
  const r = runSeal(['sync', system, `oci:${dir}:x`]);
  if (r.status !== 0) throw new Error(`seal sync ${system}: ${r.stderr}`);
  const sizes = new Map<string, ClosureBlob>();
  try {
    for (const hex of readdirSync(join(dir, 'blobs/sha256'))) {
      const text = readFileSync(join(dir, 'blobs/sha256', hex));
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
