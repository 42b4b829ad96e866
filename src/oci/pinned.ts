/**
 * Images pinned inside an artifact: every object shaped like a manifest descriptor in the small
 * JSON blobs (config and layers) of a manifest — how a system manifest pins its targets. Both
 * `sync` (to follow them) and the store's garbage collector (to keep them) use it.
 */
import type { Descriptor, Index, Manifest } from './types.ts';
import { isManifestType } from './validate.ts';

export async function pinnedDescriptors(
  doc: Manifest | Index,
  readBlob: (desc: Descriptor) => Promise<Uint8Array>,
): Promise<Descriptor[]> {
  if (!('layers' in doc) || !Array.isArray(doc.layers)) return [];
  const found: Descriptor[] = [];
  for (const blob of [doc.config, ...doc.layers]) {
    if (!blob || !/json/.test(blob.mediaType) || blob.size > 4 << 20 || blob.size <= 2) continue;
    let value: unknown;
    try {
      value = JSON.parse(Buffer.from(await readBlob(blob)).toString('utf8'));
    } catch {
      continue;
    }
    const visit = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(visit);
      else if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        if (
          isManifestType(o.mediaType as string) &&
          typeof o.digest === 'string' &&
          typeof o.size === 'number'
        ) {
          found.push({ mediaType: o.mediaType as string, digest: o.digest, size: o.size });
        } else Object.values(o).forEach(visit);
      }
    };
    visit(value);
  }
  return found;
}
