/**
 * A store's composefs images and objects: the image made for a composefs-sealed image is the one
 * `seal composefs create` makes (its digest the annotated one), its files land in the object
 * store once, and collecting keeps exactly what the images left in the store name.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readComposefsImage, walkCfs } from '../../src/composefs/index.ts';
import {
  collectComposefs,
  composefsImageOf,
  composefsObjects,
  storeComposefsImage,
} from '../../src/seal/composefs-store.ts';
import { COMPOSEFS_MERGED_ANNOTATION } from '../../src/seal/formats.ts';
import { LayoutSource, LayoutStore, readImage } from '../../src/store/index.ts';
import { runSeal } from '../helpers/cli.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-composefs-store-'));
after(() => rm(work, { recursive: true, force: true }));

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** A composefs-sealed image `NAME` in `layout` from `files` (path → contents). */
function sealedImage(layout: string, name: string, files: Record<string, string>): void {
  const dir = join(work, 'roots', name);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  seal('image', 'import', `dir:${dir}`, `oci:${layout}:${name}-src`);
  seal('image', 'seal', `oci:${layout}:${name}-src`, `oci:${layout}:${name}`, '--format', 'composefs');
}

const objectsIn = (dir: string) =>
  existsSync(dir) ? readdirSync(dir).flatMap((p) => readdirSync(join(dir, p)).map((n) => `${p}/${n}`)) : [];

test('composefs images in a store: made as composefs create makes them, collected with what only they name', async () => {
  const layout = join(work, 'store');
  const shared = 'shared by both images, long enough to be an object of its own\n'.repeat(4);
  sealedImage(layout, 'a', { 'etc/shared': shared, 'etc/only-a': 'only in a, an object too: '.repeat(8) });
  sealedImage(layout, 'b', { 'etc/shared': shared, 'etc/only-b': 'only in b, an object too: '.repeat(8) });
  const store = await LayoutStore.open(layout);
  const images = join(layout, 'composefs-images');
  mkdirSync(images, { recursive: true });
  const made: Record<string, { digest: string; objects: string[] }> = {};
  for (const name of ['a', 'b']) {
    const src = new LayoutSource(name, store, name);
    // This host has no fs-verity: the store keeps no image, and says so.
    assert.equal(await storeComposefsImage(src), undefined);
    const built = await composefsImageOf(src, composefsObjects(src));
    const printed = seal(
      'composefs',
      'create',
      `oci:${layout}:${name}`,
      join(work, `${name}.cfs`),
      '--print-digest',
    );
    assert.equal(built.digest, printed.trim(), 'the digest composefs create prints');
    const { manifest } = await readImage(src);
    assert.equal(built.digest, manifest.annotations?.[COMPOSEFS_MERGED_ANNOTATION]);
    writeFileSync(join(images, `${built.digest}.cfs`), built.image);
    made[name] = { digest: built.digest, objects: built.objects };
  }
  const a = made.a!;
  const b = made.b!;
  assert.equal(a.objects.length, 2);
  assert.equal(b.objects.filter((o) => a.objects.includes(o)).length, 1, 'the shared file is one object');
  assert.deepEqual(
    objectsIn(join(layout, 'composefs-objects')).sort(),
    [...new Set([...a.objects, ...b.objects])].sort(),
  );
  // What each stored image names is what it was made with.
  const named = [...walkCfs(readComposefsImage(join(images, `${a.digest}.cfs`)).root)]
    .map((e) => e.node.payload)
    .filter(Boolean);
  assert.deepEqual(named.sort(), [...a.objects].sort());

  // Nothing is collected while both images are in the store; a stray file in the images goes.
  writeFileSync(join(images, 'stray'), 'x');
  assert.deepEqual(await collectComposefs(store), { removed: 1, freed: 1 });
  assert.equal(objectsIn(join(layout, 'composefs-objects')).length, 3);

  // b leaves the store: its image and the object only it named go, the shared one stays.
  await store.untag('b');
  await store.gc();
  const collected = await collectComposefs(store);
  assert.equal(collected.removed, 2);
  assert.deepEqual(readdirSync(images), [`${a.digest}.cfs`]);
  assert.deepEqual(objectsIn(join(layout, 'composefs-objects')).sort(), [...a.objects].sort());

  // An image that cannot be read is removed with its objects (it is made again when needed).
  writeFileSync(join(images, `${a.digest}.cfs`), 'not a composefs image');
  await collectComposefs(store);
  assert.deepEqual(readdirSync(images), []);
  assert.deepEqual(objectsIn(join(layout, 'composefs-objects')), []);
  const again = await composefsImageOf(
    new LayoutSource('a', store, 'a'),
    composefsObjects(new LayoutSource('a', store, 'a')),
  );
  assert.equal(again.digest, a.digest);
  assert.deepEqual(objectsIn(join(layout, 'composefs-objects')).sort(), [...a.objects].sort());
});
