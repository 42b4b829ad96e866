/**
 * Update media on the device: which block devices in a (fake) /sys/block are looked at — never
 * the device's own disk, nor loop, ram, device-mapper or zram devices, nor an empty reader; a
 * disk's partitions when it has any, else the whole disk — and the FAT sniff before the kernel
 * is asked to mount (against boot sectors mkfs.vfat wrote, and sectors that are not FAT).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { findMediaCandidates, looksLikeFat } from '../../src/agent/media.ts';
import { prng } from '../helpers/trees.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-media-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** A /sys/block: each disk with its size in sectors and its partitions (name → size). */
function sysfs(name: string, disks: Record<string, { size: number; partitions?: Record<string, number> }>) {
  const sys = join(work, name);
  for (const [disk, { size, partitions }] of Object.entries(disks)) {
    const dir = join(sys, 'block', disk);
    mkdirSync(join(dir, 'queue'), { recursive: true }); // other sysfs entries are not partitions
    writeFileSync(join(dir, 'size'), `${size}\n`);
    let number = 1;
    for (const [part, sectors] of Object.entries(partitions ?? {})) {
      mkdirSync(join(dir, part));
      writeFileSync(join(dir, part, 'size'), `${sectors}\n`);
      writeFileSync(join(dir, part, 'partition'), `${number++}\n`);
    }
  }
  return { sys, dev: '/dev' };
}

test('media candidates: other disks whole or by partition; never the own disk, loop, ram, dm, zram or an empty reader', () => {
  const m = sysfs('mixed', {
    vda: { size: 4194304, partitions: { vda1: 100, vda2: 200, vda3: 300, vda4: 400 } },
    vdb: { size: 81920 },
    sda: { size: 1000, partitions: { sda1: 500, sda2: 0 } },
    nvme0n1: { size: 2000, partitions: { nvme0n1p1: 1000 } },
    sdc: { size: 0 },
    loop0: { size: 8 },
    ram0: { size: 8 },
    'dm-0': { size: 8 },
    zram0: { size: 8 },
  });
  assert.deepEqual(
    findMediaCandidates('vda', m).map((c) => [c.name, c.device]),
    [
      ['nvme0n1p1', '/dev/nvme0n1p1'],
      ['sda1', '/dev/sda1'],
      ['vdb', '/dev/vdb'],
    ],
  );
  // A device booted from the network has no disk of its own: every disk may be a medium.
  assert.deepEqual(
    findMediaCandidates(undefined, m).map((c) => c.name),
    ['nvme0n1p1', 'sda1', 'vda1', 'vda2', 'vda3', 'vda4', 'vdb'],
  );
  // The own disk named as the kernel names it on NVMe.
  assert.deepEqual(
    findMediaCandidates('nvme0n1', m).map((c) => c.name),
    ['sda1', 'vda1', 'vda2', 'vda3', 'vda4', 'vdb'],
  );
  assert.deepEqual(findMediaCandidates('vda', { sys: join(work, 'absent') }), []);
});

test('media candidates: names that are not kernel device names are ignored', () => {
  const m = sysfs('odd', { vdb: { size: 8 }, 'Bad Name': { size: 8 }, '.hidden': { size: 8 } });
  assert.deepEqual(
    findMediaCandidates('vda', m).map((c) => c.name),
    ['vdb'],
  );
});

function firstSector(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(512);
    readSync(fd, b, 0, 512, 0);
    return b;
  } finally {
    closeSync(fd);
  }
}

test('the FAT sniff: boot sectors of FAT12, FAT16 and FAT32 from mkfs.vfat pass; zeros, an MBR, ext4 and a damaged FAT do not', () => {
  for (const [bits, size] of [
    ['12', 4],
    ['16', 32],
    ['32', 40],
  ] as const) {
    const image = join(work, `fat${bits}.img`);
    writeFileSync(image, '');
    truncateSync(image, size << 20);
    execFileSync('mkfs.vfat', ['-F', bits, '--invariant', image], { stdio: 'ignore' });
    const sector = firstSector(image);
    assert.ok(looksLikeFat(sector), `FAT${bits}`);
    const noSignature = Buffer.from(sector);
    noSignature[511] = 0;
    assert.ok(!looksLikeFat(noSignature), `FAT${bits} without 55AA`);
    const badSectorSize = Buffer.from(sector);
    badSectorSize.writeUInt16LE(300, 11);
    assert.ok(!looksLikeFat(badSectorSize), `FAT${bits} with 300-byte sectors`);
  }
  assert.ok(!looksLikeFat(Buffer.alloc(512)), 'zeros');
  assert.ok(!looksLikeFat(Buffer.alloc(100)), 'short');
  const mbr = Buffer.alloc(512);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  assert.ok(!looksLikeFat(mbr), 'an MBR');
  const ext4 = join(work, 'ext4.img');
  writeFileSync(ext4, '');
  truncateSync(ext4, 8 << 20);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', ext4], { stdio: 'ignore' });
  assert.ok(!looksLikeFat(firstSector(ext4)), 'ext4');
});

test('fuzz: the FAT sniff takes any bytes (mutated FAT32 boot sectors, random, short) without throwing', () => {
  const image = join(work, 'fuzz.img');
  writeFileSync(image, '');
  truncateSync(image, 40 << 20);
  execFileSync('mkfs.vfat', ['-F', '32', '--invariant', image], { stdio: 'ignore' });
  const base = firstSector(image);
  const random = prng(17);
  let passed = 0;
  for (let i = 0; i < 5000; i++) {
    const sector = Buffer.from(base.subarray(0, i % 7 === 0 ? Math.floor(random() * 600) : 512));
    for (let n = 1 + Math.floor(random() * 4); n > 0 && sector.length; n--)
      sector[Math.floor(random() * sector.length)] = Math.floor(random() * 256);
    if (looksLikeFat(sector)) passed++;
  }
  // Most mutations miss the few bytes the sniff reads; those that hit them are told apart.
  assert.ok(passed > 0 && passed < 5000, `${passed}`);
});
