/** Hostile tar layers packaged as every local image transport Seal reads. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openSource, unpackImage } from '../../src/store/index.ts';
import { writeLayout } from '../helpers/layout.ts';
import { scratch } from './helpers.ts';

export type Transport = 'oci' | 'oci-archive' | 'docker-archive';
export const TRANSPORTS: Transport[] = ['oci', 'oci-archive', 'docker-archive'];

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A tar of the directory `dir`'s contents, made by GNU tar. */
function tarDirectory(dir: string, file: string): void {
  execFileSync('tar', ['-C', dir, '-cf', file, '.']);
}

/** An image reference, of the given transport, to a one-image source whose layers are `layers` (uncompressed tars). */
export function imageWithLayers(transport: Transport, layers: Buffer[]): string {
  const work = scratch('image');
  if (transport === 'docker-archive') {
    const root = join(work, 'save');
    mkdirSync(root);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha256(l)}`) },
      }),
    );
    writeFileSync(join(root, `${sha256(config)}.json`), config);
    const names = layers.map((layer, i) => {
      mkdirSync(join(root, `layer${i}`));
      writeFileSync(join(root, `layer${i}`, 'layer.tar'), layer);
      return `layer${i}/layer.tar`;
    });
    writeFileSync(
      join(root, 'manifest.json'),
      JSON.stringify([{ Config: `${sha256(config)}.json`, RepoTags: ['hostile:t'], Layers: names }]),
    );
    tarDirectory(root, join(work, 'save.tar'));
    return `docker-archive:${join(work, 'save.tar')}`;
  }
  const layout = join(work, 'layout');
  writeLayout(layout, layers, 't');
  if (transport === 'oci') return `oci:${layout}:t`;
  tarDirectory(layout, join(work, 'layout.tar'));
  return `oci-archive:${join(work, 'layout.tar')}:t`;
}

/** `seal image unpack REF DIR` through the library. */
export async function unpack(ref: string, dir: string): Promise<void> {
  const src = await openSource(ref);
  try {
    await unpackImage(src, dir);
  } finally {
    await src.close();
  }
}
