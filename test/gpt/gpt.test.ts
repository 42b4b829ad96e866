/** GPTs written by Seal read by sfdisk, sfdisk's read by Seal; damaged tables fall back or are refused, fuzzed. */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SealError } from '../../src/errors.ts';
import { layoutTable, PartitionType, readTable, SECTOR, writeTable } from '../../src/gpt/index.ts';
import { prng } from '../helpers/trees.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-gpt-'));
after(() => rmSync(work, { recursive: true, force: true }));

function sparse(name: string, bytes: number): string {
  const path = join(work, name);
  const fd = openSync(path, 'w');
  closeSync(fd);
  execFileSync('truncate', ['-s', String(bytes), path]);
  return path;
}

const SPECS = [
  { name: 'esp', type: PartitionType.esp, size: 64 << 20 },
  { name: 'seal-store', type: PartitionType.sealStore, size: 300 << 20 },
  { name: 'seal-config', type: PartitionType.sealConfig, size: 16 << 20 },
  { name: 'seal-data', type: PartitionType.sealData },
];

test('a table Seal writes is what sfdisk reads (and verifies), and reads back the same', () => {
  const disk = sparse('seal.img', 1 << 30);
  const table = layoutTable(1 << 30, SPECS, '11111111-2222-4333-8444-555555555555');
  writeTable(disk, table);
  const verify = spawnSync('sfdisk', ['--verify', disk], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stdout + verify.stderr);
  assert.match(verify.stdout, /No errors detected/);
  const json = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })).partitiontable;
  assert.equal(json.label, 'gpt');
  assert.equal(json.id, '11111111-2222-4333-8444-555555555555'.toUpperCase());
  assert.equal(json.partitions.length, 4);
  for (const [i, p] of table.partitions.entries()) {
    const theirs = json.partitions[i];
    assert.equal(theirs.start, p.firstLba);
    assert.equal(theirs.size, p.lastLba - p.firstLba + 1);
    assert.equal(theirs.type, p.type.toUpperCase());
    assert.equal(theirs.uuid, p.guid.toUpperCase());
    assert.equal(theirs.name, p.name);
    assert.equal(p.firstLba % 2048, 0, '1 MiB aligned');
  }
  assert.equal(
    json.partitions[3].start + json.partitions[3].size,
    2048 * 1023,
    'the last fills the disk, aligned',
  );
  assert.deepEqual(readTable(disk), table);
});

test('a table sfdisk writes is what Seal reads', () => {
  const disk = sparse('theirs.img', 256 << 20);
  const script = [
    'label: gpt',
    'label-id: A1B2C3D4-0000-4000-8000-000000000001',
    `size=32MiB, type=${PartitionType.esp}, name="EFI System"`,
    `size=100MiB, type=${PartitionType.linuxData}, name="ünïcode name"`,
    `type=${PartitionType.sealData}, name=data`,
    '',
  ].join('\n');
  execFileSync('sfdisk', ['--quiet', disk], { input: script });
  const json = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })).partitiontable;
  const table = readTable(disk);
  assert.equal(table.diskGuid.toUpperCase(), json.id);
  assert.deepEqual(
    table.partitions.map((p) => [
      p.number,
      p.firstLba,
      p.lastLba - p.firstLba + 1,
      p.type.toUpperCase(),
      p.name,
    ]),
    json.partitions.map((p: { start: number; size: number; type: string; name: string }, i: number) => [
      i + 1,
      p.start,
      p.size,
      p.type,
      p.name,
    ]),
  );
});

test('a damaged primary falls back to the backup; both damaged is a typed error; no table at all is GPT_NOT_FOUND', () => {
  const disk = sparse('damaged.img', 64 << 20);
  const table = layoutTable(64 << 20, [{ name: 'only', type: PartitionType.linuxData }]);
  writeTable(disk, table);
  const data = readFileSync(disk);
  data[SECTOR + 40] ^= 1; // the primary's first usable LBA: its header CRC no longer matches
  writeFileSync(disk, data);
  const read = readTable(disk);
  assert.equal(read.fromBackup, true);
  assert.deepEqual(read.partitions, table.partitions);
  data[data.length - SECTOR + 40] ^= 1;
  writeFileSync(disk, data);
  assert.throws(
    () => readTable(disk),
    (e) => e instanceof SealError && e.code === 'GPT_CORRUPT',
  );
  const blank = sparse('blank.img', 64 << 20);
  assert.throws(
    () => readTable(blank),
    (e) => e instanceof SealError && e.code === 'GPT_NOT_FOUND',
  );
});

test('mutated tables give typed errors or a consistent table, never a crash', () => {
  const disk = sparse('fuzz.img', 5 << 20);
  writeTable(
    disk,
    layoutTable(
      5 << 20,
      SPECS.slice(0, 3).map((s) => ({ ...s, size: 1 << 20 })),
    ),
  );
  const base = readFileSync(disk);
  const random = prng(31);
  let refused = 0;
  const fd = openSync(disk, 'r+');
  try {
    for (let i = 0; i < 2000; i++) {
      // Bytes of the primary header, its entries and the backup header, changed in place and restored.
      const changed: number[] = [];
      for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++) {
        const region = random();
        const at =
          region < 0.5
            ? SECTOR + Math.floor(random() * 92)
            : region < 0.8
              ? 2 * SECTOR + Math.floor(random() * 512)
              : base.length - SECTOR + Math.floor(random() * 92);
        writeSync(fd, Buffer.of(Math.floor(random() * 256)), 0, 1, at);
        changed.push(at);
      }
      try {
        const t = readTable(disk);
        for (const p of t.partitions)
          assert.ok(p.firstLba >= t.firstUsableLba && p.lastLba <= t.lastUsableLba);
      } catch (error) {
        assert.ok(error instanceof SealError, `case ${i}: ${(error as Error).stack}`);
        refused++;
      }
      for (const at of changed) writeSync(fd, base, at, 1, at);
    }
  } finally {
    closeSync(fd);
  }
  assert.ok(refused > 100, `${refused} refused`);
});
