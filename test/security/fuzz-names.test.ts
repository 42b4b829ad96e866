/**
 * The readers fuzzed where hostile input hurts most: the bytes of directory-entry names and
 * xattr records. Images and layers full of placeholder names are made by the reference tools
 * and by Seal; each mutant has random bytes ('/', NUL, '.', newlines, anything) written over
 * names, and is read whole and extracted. Only typed errors may come out, and nothing outside the
 * destination may change.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErofsImage } from '../../src/erofs/index.ts';
import { SealError } from '../../src/errors.ts';
import { SquashfsImage } from '../../src/squashfs/index.ts';
import { Spool, treeFromTar, writeTreeToDirectory } from '../../src/tree/index.ts';
import { setXattr } from '../../src/util/fsops.ts';
import { fileEntry, tarOf } from '../helpers/layout.ts';
import { prng } from '../helpers/trees.ts';
import { makeCanary, referenceImages, scratch } from './helpers.ts';

const canary = makeCanary();
const work = scratch('fuzz-names');
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(canary.dir, { recursive: true, force: true });
});

const random = prng(2112);
/** Bytes an attacker would try in a name, and any byte at all. */
const NASTY = [0x2f, 0x00, 0x2e, 0x0a, 0x0d, 0x3d, 0x1b, 0x7f, 0xff, 0x5c, 0x20];
const nastyByte = () =>
  random() < 0.7 ? NASTY[Math.floor(random() * NASTY.length)]! : Math.floor(random() * 256);

/** A source directory whose entries and xattrs carry placeholder names (Nxx… and Xxx…). */
function placeholderDirectory(): { dir: string; markers: Buffer[] } {
  const dir = join(work, 'source');
  const markers: Buffer[] = [];
  mkdirSync(join(dir, 'Ndir0000'), { recursive: true });
  markers.push(Buffer.from('Ndir0000'));
  for (let i = 0; i < 12; i++) {
    const name = `Nfile${String(i).padStart(3, '0')}`;
    const path = join(dir, i % 2 ? 'Ndir0000' : '', name);
    writeFileSync(path, `data ${i}`);
    const xattr = `Xattr${String(i).padStart(3, '0')}`;
    setXattr(Buffer.from(path), `user.${xattr}`, Buffer.from(`v${i}`));
    markers.push(Buffer.from(name), Buffer.from(xattr));
  }
  return { dir, markers };
}

/** Every offset at which one of `markers` starts in `data`. */
function markerOffsets(data: Buffer, markers: Buffer[]): [number, number][] {
  const found: [number, number][] = [];
  for (const marker of markers) {
    for (let at = data.indexOf(marker); at >= 0; at = data.indexOf(marker, at + 1))
      found.push([at, marker.length]);
  }
  return found;
}

/** `data` with 1–3 names overwritten in places by nasty bytes. */
function mutateNames(data: Buffer, offsets: [number, number][]): Buffer {
  const mutant = Buffer.from(data);
  for (let k = 0, n = 1 + Math.floor(random() * 3); k < n; k++) {
    const [at, length] = offsets[Math.floor(random() * offsets.length)]!;
    for (let j = 0, m = 1 + Math.floor(random() * 3); j < m; j++)
      mutant[at + Math.floor(random() * length)] = nastyByte();
  }
  return mutant;
}

/** Extracts `tree()` into a fresh destination; a typed refusal is fine, anything else fails the test. */
async function readAndExtract(what: string, read: () => Promise<void>): Promise<'read' | 'refused'> {
  try {
    await read();
    return 'read';
  } catch (error) {
    assert.ok(error instanceof SealError, `${what}: ${(error as Error).stack}`);
    return 'refused';
  }
}

test('squashfs and EROFS images with mutated entry and xattr names: typed errors only, the host untouched', async () => {
  const { dir, markers } = placeholderDirectory();
  // Shared xattrs (-x1): the inline ones are covered by the other tests.
  const images = referenceImages(dir, ['-x1']);
  const bases: [string, Buffer][] = [
    ['squashfs', readFileSync(images.squashfs)],
    ['erofs', readFileSync(images.erofs)],
  ];
  const counts = { read: 0, refused: 0 };
  for (let i = 0; i < 1200; i++) {
    const [format, base] = bases[i % bases.length]!;
    const offsets = markerOffsets(base, markers);
    assert.ok(offsets.length >= 20, `${format}: ${offsets.length} names found`);
    const file = join(work, `mutant.${format}`);
    writeFileSync(file, mutateNames(base, offsets));
    const dest = join(work, `out-${i}`);
    const outcome = await readAndExtract(`${format} case ${i}`, async () => {
      const image = format === 'squashfs' ? SquashfsImage.open(file) : ErofsImage.open(file);
      try {
        const tree = image.toTree();
        // Extraction is the path that reaches the host; every tenth mutant takes it in full.
        if (i % 10 === 0) await writeTreeToDirectory(tree, dest);
      } finally {
        image.close();
      }
    });
    counts[outcome]++;
    rmSync(dest, { recursive: true, force: true });
  }
  canary.assertUntouched();
  assert.ok(counts.refused > 300 && counts.read > 50, JSON.stringify(counts));
});

test('tar layers with mutated paths, link names and pax xattr records: typed errors only, the host untouched', async () => {
  const entries = [];
  for (let i = 0; i < 10; i++) {
    const xattrs = new Map([[`user.Xattr${String(i).padStart(3, '0')}`, Buffer.from(`v${i}`)]]);
    entries.push(fileEntry(`Ndir0000/Nfile${String(i).padStart(3, '0')}`, `data ${i}`, { xattrs }));
  }
  const base = await tarOf(entries);
  const markers = [
    Buffer.from('Ndir0000'),
    Buffer.from('Nfile'),
    Buffer.from('Xattr'),
    Buffer.from('SCHILY.xattr.user'),
  ];
  const offsets = markerOffsets(base, markers);
  const counts = { read: 0, refused: 0 };
  for (let i = 0; i < 1500; i++) {
    const mutant = mutateNames(base, offsets);
    const dest = join(work, `tar-out-${i}`);
    const outcome = await readAndExtract(`tar case ${i}`, async () => {
      const spool = await Spool.create(work);
      try {
        const tree = await treeFromTar(
          (async function* () {
            yield mutant;
          })(),
          spool,
        );
        if (i % 10 === 0) await writeTreeToDirectory(tree, dest);
      } finally {
        await spool.close();
      }
    });
    counts[outcome]++;
    rmSync(dest, { recursive: true, force: true });
  }
  canary.assertUntouched();
  assert.ok(counts.refused > 300 && counts.read > 100, JSON.stringify(counts));
});
