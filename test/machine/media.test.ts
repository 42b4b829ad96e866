/**
 * `seal media create`: a FAT32 image (whole disk, no partition table) holding the signed system
 * and everything it pins as an OCI layout in seal-update/, tagged `system`. Read back with the
 * real tools — mtools lists and copies it out, fsck.vfat finds nothing to fix — and the copy is
 * verified by `seal manifest verify --deep` with the CA (every target, every layer). The same
 * system gives the same bytes; a size too small for FAT32, or no --manifest, is refused in one line.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { looksLikeFat } from '../../src/agent/media.ts';
import { runSeal } from '../helpers/cli.ts';
import { buildFixture, buildSystem, type DeviceFixture } from '../helpers/device.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-media-create-'));
let f: DeviceFixture;
let system: string;
after(() => rm(work, { recursive: true, force: true }));

before(() => {
  f = buildFixture(join(work, 'fixture'));
  system = buildSystem(f, 7);
});

const mtools = (command: string, args: string[]) =>
  execFileSync(command, args, { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });

/** `seal manifest verify --deep` of `ref` with the fixture's CA. */
function verify(ref: string) {
  const r = runSeal(['manifest', 'verify', ref, '--ca', f.ca, '--deep', '--json']);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test('the medium holds the system and all it pins in seal-update/; mtools and fsck.vfat read it, seal verifies the copy', () => {
  const image = join(work, 'media.img');
  const r = runSeal(['media', 'create', image, '--manifest', system, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  const digest = verify(system).manifest.digest as string;
  assert.equal(result.digest, digest);
  assert.equal(statSync(image).size, result.size);
  assert.ok(result.size >= 40 << 20);

  // A whole-disk FAT32 filesystem, clean for dosfstools' checker.
  const fd = openSync(image, 'r');
  const sector = Buffer.alloc(512);
  readSync(fd, sector, 0, 512, 0);
  closeSync(fd);
  assert.ok(looksLikeFat(sector));
  assert.equal(sector.toString('latin1', 82, 87), 'FAT32');
  execFileSync('fsck.vfat', ['-n', image], { stdio: 'ignore' });

  const root = mtools('mdir', ['-b', '-i', image, '::/']).trim().split('\n');
  assert.deepEqual(root, ['::/seal-update/']);
  const top = mtools('mdir', ['-b', '-i', image, '::/seal-update'])
    .trim()
    .split('\n')
    .map((l) => l.replace('::/seal-update/', ''))
    .sort();
  assert.deepEqual(top, ['blobs/', 'index.json', 'oci-layout']);
  const blobs = mtools('mdir', ['-b', '-i', image, '::/seal-update/blobs/sha256']).trim().split('\n');
  assert.equal(blobs.length, result.files - 2);

  const out = join(work, 'out');
  execFileSync('mkdir', ['-p', out]);
  mtools('mcopy', ['-s', '-i', image, '::/seal-update', out]);
  const copy = `oci:${join(out, 'seal-update')}:system`;
  // The copy read back by seal: the same system, every target and layer verified with the CA.
  const copied = verify(copy);
  assert.equal(copied.manifest.digest, digest);
  assert.equal(copied.document.version, 7);
});

test('the same system gives the same bytes', () => {
  const a = join(work, 'a.img');
  const b = join(work, 'b.img');
  for (const image of [a, b]) {
    const r = runSeal(['media', 'create', image, '--manifest', system]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /Wrote .*: .* \(sha256:[0-9a-f]{64}\) in seal-update\/, \d+ files, \d+ bytes, on \d+ MiB of FAT32/,
    );
  }
  assert.equal(sha256(a), sha256(b));
});

test('refused in one line: a size too small for FAT32, no --manifest, a missing system', () => {
  const image = join(work, 'small.img');
  const cases: [string[], RegExp][] = [
    [['--manifest', system, '--size', '1M'], /FAT32 needs 40 MiB or more.*MACHINE_MEDIA/],
    [[], /--manifest is required/],
    [['--manifest', `oci:${join(work, 'none')}:x`], /./],
    [['--manifest', system, '--size', 'big'], /--size takes a size/],
  ];
  for (const [args, message] of cases) {
    const r = runSeal(['media', 'create', image, ...args]);
    assert.notEqual(r.status, 0, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, message);
  }
  assert.throws(() => statSync(image), 'nothing is left behind');
});
