/** Builds OCI image layouts by hand, for tests that need exact control over their bytes. */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { type TarWriteEntry, writeTar } from '../../src/tar/index.ts';

export async function tarOf(entries: TarWriteEntry[]): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of writeTar(entries)) chunks.push(c);
  return Buffer.concat(chunks);
}

const t = { sec: 1_650_000_000, nsec: 0 };
export const dirEntry = (path: string, over: Partial<TarWriteEntry> = {}): TarWriteEntry => ({
  path,
  type: 'dir',
  mode: 0o755,
  uid: 0,
  gid: 0,
  mtime: t,
  ...over,
});
export const fileEntry = (
  path: string,
  data: string | Uint8Array,
  over: Partial<TarWriteEntry> = {},
): TarWriteEntry => ({
  path,
  type: 'file',
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtime: t,
  size: Buffer.byteLength(data),
  body: (async function* () {
    yield typeof data === 'string' ? Buffer.from(data) : data;
  })(),
  ...over,
});
export const linkEntry = (path: string, type: 'hardlink' | 'symlink', linkname: string): TarWriteEntry => ({
  path,
  type,
  linkname,
  mode: 0o777,
  uid: 0,
  gid: 0,
  mtime: t,
});

/** Writes a layout at `dir` whose image `tag` has the given uncompressed tar layers (stored gzipped). */
export function writeLayout(dir: string, layers: Buffer[], tag = 'test'): void {
  mkdirSync(join(dir, 'blobs/sha256'), { recursive: true });
  const put = (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs/sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: {
        type: 'layers',
        diff_ids: layers.map((b) => `sha256:${createHash('sha256').update(b).digest('hex')}`),
      },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(config) },
      layers: layers.map((b) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        ...put(gzipSync(b)),
      })),
    }),
  );
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...put(manifest),
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
}

/**
 * A three-layer image (tag `test`) exercising overlay semantics: a whiteout, an opaque
 * directory, a directory replaced by a file, a hardlink into a lower layer, a directory only
 * implied by a layer, and a file deleted then re-added.
 */
export async function writeThreeLayerImage(dir: string): Promise<void> {
  writeLayout(dir, [
    await tarOf([
      dirEntry('etc/'),
      fileEntry('etc/keep', 'kept'),
      fileEntry('etc/gone', 'deleted above'),
      dirEntry('opaque/', { mode: 0o750 }),
      fileEntry('opaque/old', 'hidden'),
      dirEntry('replaced/'),
      fileEntry('replaced/child', 'dir becomes file'),
      fileEntry('lower-target', 'linked from above', { uid: 7, gid: 8 }),
      dirEntry('attrs/', { mode: 0o700, uid: 3 }),
      fileEntry('attrs/inside', 'stays'),
    ]),
    await tarOf([
      fileEntry('etc/.wh.gone', ''),
      dirEntry('opaque/', { mode: 0o750 }),
      fileEntry('opaque/.wh..wh..opq', ''),
      fileEntry('opaque/new', 'new'),
      fileEntry('replaced', 'now a file'),
      linkEntry('upper-link', 'hardlink', 'lower-target'),
      fileEntry('attrs/added', 'inside a directory only implied by this layer'),
    ]),
    await tarOf([fileEntry('etc/gone', 'back again'), linkEntry('sym', 'symlink', 'etc/keep')]),
  ]);
}
