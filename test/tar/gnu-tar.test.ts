/**
 * The tar reader against archives GNU tar makes in each of its formats, and the writer against
 * GNU tar's reading of what Seal writes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, test } from 'node:test';
import { decompress, readTar } from '../../src/tar/index.ts';
import {
  Spool,
  treeFromDirectory,
  treeFromTar,
  treeToTar,
  writeTreeToDirectory,
} from '../../src/tree/index.ts';
import { assertTreesEqual, generateEdgeCaseTree } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-tar-'));
after(() => rm(work, { recursive: true, force: true }));

const source = join(work, 'source');
const edge = generateEdgeCaseTree(3, { sockets: false });
await writeTreeToDirectory(edge, source);
const expected = await treeFromDirectory(source);

async function readArchive(path: string) {
  const spool = await Spool.create(work);
  try {
    const tree = await treeFromTar(decompress(createReadStream(path)), spool);
    return { tree, spool };
  } catch (error) {
    await spool.close();
    throw error;
  }
}

for (const format of ['pax', 'gnu', 'ustar', 'v7'] as const) {
  test(`reads GNU tar --format=${format}`, async () => {
    const archive = join(work, `gnu-${format}.tar`);
    // ustar and v7 cannot hold long names, big ids, xattrs: archive a subset they can.
    const members =
      format === 'pax' || format === 'gnu' ? ['.'] : format === 'ustar' ? ['./files', './dev'] : ['./files'];
    execFileSync('tar', [
      `--format=${format}`,
      ...(format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : []),
      '--numeric-owner',
      ...(members[0] === '.' ? [] : ['--exclude=./files/big-ids']),
      '-cf',
      archive,
      '-C',
      source,
      ...members,
    ]);
    const { tree, spool } = await readArchive(archive);
    try {
      const roots = members.map((m) => m.slice(2));
      const only = (p: string) =>
        members[0] !== '.' && (p === 'files/big-ids' || !roots.some((r) => p === r || p.startsWith(`${r}/`)));
      await assertTreesEqual(tree, expected, {
        root: false,
        ignore: only,
        xattrs: format === 'pax',
        mtime: format === 'pax' ? 'nsec' : 'sec',
      });
    } finally {
      await spool.close();
    }
  });
}

test('reads gzip and zstd compressed archives made by the CLIs', async () => {
  const plain = join(work, 'plain.tar');
  execFileSync('tar', ['--format=pax', '--xattrs', '--xattrs-include=*', '-cf', plain, '-C', source, '.']);
  execFileSync('sh', ['-c', `gzip -9 -c ${plain} > ${plain}.gz && zstd -q -19 -c ${plain} > ${plain}.zst`]);
  for (const file of [`${plain}.gz`, `${plain}.zst`]) {
    const { tree, spool } = await readArchive(file);
    try {
      await assertTreesEqual(tree, expected, { root: false, mtime: 'nsec' });
    } finally {
      await spool.close();
    }
  }
});

test('GNU tar lists and extracts what Seal writes, identically', async () => {
  const archive = join(work, 'seal.tar');
  await pipeline(Readable.from(treeToTar(expected)), createWriteStream(archive));
  const listing = execFileSync('tar', ['-tf', archive], { encoding: 'latin1' });
  assert.ok(listing.includes(`names/${'n'.repeat(255)}\n`));
  const out = join(work, 'gnu-extracted');
  mkdirSync(out);
  execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', archive, '-C', out]);
  await assertTreesEqual(await treeFromDirectory(out), expected, { root: false, mtime: 'nsec' });
});

test('pax records: long link targets, huge ids and sizes from a hand-made header', async () => {
  // A pax header declaring a size beyond ustar's 8 GiB and ids beyond 2^21, for a hardlink
  // (which carries no data whatever size it declares).
  const records = [
    'uid=4000000000',
    'gid=3000000000',
    'size=9000000000',
    `linkpath=${'t/'.repeat(150)}x`,
  ].map((r) => {
    let len = r.length + 3;
    while (`${len} ${r}\n`.length !== len) len = `${len} ${r}\n`.length;
    return `${len} ${r}\n`;
  });
  const pax = Buffer.from(records.join(''));
  const header = (name: string, type: string, size: number) => {
    const h = Buffer.alloc(512);
    h.write(name, 0);
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
    h.write('00000000000\0', 136);
    h.write(type, 156);
    h.write('ustar\0' + '00', 257);
    h.fill(' ', 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    return h;
  };
  const archive = Buffer.concat([
    header('PaxHeaders/x', 'x', pax.length),
    pax,
    Buffer.alloc(512 - (pax.length % 512)),
    header('x', '1', 0),
    Buffer.alloc(1024),
  ]);
  const entries = [];
  for await (const e of readTar(
    (async function* () {
      yield archive;
    })(),
  ))
    entries.push(e);
  assert.equal(entries.length, 1);
  assert.equal(entries[0]!.type, 'hardlink');
  assert.equal(entries[0]!.uid, 4000000000);
  assert.equal(entries[0]!.gid, 3000000000);
  assert.equal(entries[0]!.linkname, `${'t/'.repeat(150)}x`);
  assert.equal(entries[0]!.size, 0);
});

test('a file body can be left unread and the next entry still parses', async () => {
  const dir = join(work, 'skip');
  mkdirSync(dir);
  writeFileSync(join(dir, 'a'), Buffer.alloc(100_000, 1));
  writeFileSync(join(dir, 'b'), 'second');
  const archive = join(work, 'skip.tar');
  execFileSync('tar', ['-cf', archive, '-C', dir, 'a', 'b']);
  const names: string[] = [];
  for await (const e of readTar(createReadStream(archive))) names.push(e.path);
  assert.deepEqual(names, ['a', 'b']);
});
