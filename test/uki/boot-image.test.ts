/**
 * A system's boot image: a signed UKI sealed as `uki.efi` (squashfs or EROFS under dm-verity),
 * read back by unsquashfs and fsck.erofs and by Seal's own readers, the same UKI always the same
 * image; UKIs a device could not boot refused; a system manifest with a boot target, and `seal
 * install` putting that UKI under EFI/Linux beside systemd-boot (read back with mtools).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { readTable } from '../../src/gpt/index.ts';
import { ManifestError, parseSystemSpec } from '../../src/manifest/index.ts';
import { LayoutStore } from '../../src/store/index.ts';
import { extractBootUki, UkiError } from '../../src/uki/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { BOOT_MANAGER_254, opensslCertificate, testKernel } from '../helpers/efi.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-boot-image-'));
after(() => rm(work, { recursive: true, force: true }));
const f = (name: string) => join(work, name);
let keys: { key: string; cert: string };

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function refusedBySeal(args: string[], reason: RegExp): void {
  const r = runSeal(args);
  assert.notEqual(r.status, 0, `seal ${args.join(' ')} should fail`);
  assert.match(r.stderr, reason);
}

function layerBlob(layout: string, tag: string): string {
  const out = JSON.parse(seal('image', 'inspect', `oci:${layout}:${tag}`, '--json'));
  assert.equal(out.manifest.layers.length, 1);
  return join(layout, 'blobs/sha256', out.manifest.layers[0].digest.slice(7));
}

before(() => {
  keys = opensslCertificate(work, 'db');
  writeFileSync(f('initrd'), 'an initrd');
  writeFileSync(f('os-release'), 'ID=seal-test\nPRETTY_NAME="Seal test"\n');
  const build = (out: string, extra: string[]) =>
    seal('uki', 'build', '--linux', testKernel(), '--initrd', f('initrd'), ...extra, out);
  build(f('uki.efi'), ['--os-release', f('os-release'), '--key', keys.key, '--cert', keys.cert]);
  build(f('unsigned.efi'), ['--os-release', f('os-release')]);
  build(f('no-osrel.efi'), ['--key', keys.key, '--cert', keys.cert]);
  seal('uki', 'sign', BOOT_MANAGER_254, f('systemd-boot.efi'), '--key', keys.key, '--cert', keys.cert);
});

test('the UKI sealed as uki.efi: unsquashfs and fsck.erofs read it back byte for byte; the same UKI makes the same image', async () => {
  const uki = readFileSync(f('uki.efi'));
  const digests = new Set<string>();
  for (const layout of ['a', 'b']) {
    const out = JSON.parse(seal('uki', 'image', f('uki.efi'), `oci:${f(layout)}:boot`, '--json'));
    digests.add(out.digest);
  }
  assert.equal(digests.size, 1, 'reproducible');
  const squashfs = layerBlob(f('a'), 'boot');
  assert.match(
    execFileSync('unsquashfs', ['-lln', squashfs], { encoding: 'utf8' }),
    /-rw-r--r-- 0\/0 +\d+ .* squashfs-root\/uki\.efi\n$/,
  );
  assert.deepEqual(execFileSync('unsquashfs', ['-cat', squashfs, 'uki.efi'], { maxBuffer: 1 << 28 }), uki);

  seal('uki', 'image', f('uki.efi'), `oci:${f('e')}:boot`, '--format', 'erofs');
  execFileSync('fsck.erofs', [`--extract=${f('erofs-out')}`, layerBlob(f('e'), 'boot')], { stdio: 'ignore' });
  assert.deepEqual(readFileSync(join(f('erofs-out'), 'uki.efi')), uki);

  for (const [layout, name] of [
    ['a', 'from-squashfs.efi'],
    ['e', 'from-erofs.efi'],
  ] as const) {
    const store = await LayoutStore.open(f(layout));
    await extractBootUki(store, await store.resolve('boot'), f(name));
    assert.deepEqual(readFileSync(f(name)), uki);
  }
  // The image is a sealed image like any other: Seal's own verification passes.
  seal('image', 'verify', `oci:${f('a')}:boot`);
  // A store name keeps its name and tag ($SEAL_STORE).
  const named = runSeal(['uki', 'image', f('uki.efi'), 'appliance:boot-8', '--json'], {
    env: { SEAL_STORE: f('store') },
  });
  assert.equal(named.status, 0, named.stderr);
  const stored = await LayoutStore.open(f('store'));
  assert.equal((await stored.resolve('appliance:boot-8')).digest, JSON.parse(named.stdout).digest);
});

test('UKIs a device could not boot are refused: unsigned, without .osrel, not a UKI at all', () => {
  refusedBySeal(
    ['uki', 'image', f('unsigned.efi'), `oci:${f('x')}:boot`],
    /is not signed: the firmware would refuse it/,
  );
  refusedBySeal(['uki', 'image', f('no-osrel.efi'), `oci:${f('x')}:boot`], /has no \.osrel section/);
  refusedBySeal(
    ['uki', 'image', f('systemd-boot.efi'), `oci:${f('x')}:boot`],
    /has no \.linux section: it is not a UKI/,
  );
  refusedBySeal(['uki', 'image', f('initrd'), `oci:${f('x')}:boot`], /PE|MZ|not/);
  refusedBySeal(
    ['uki', 'image', f('uki.efi'), `oci:${f('x')}:boot`, '--format', 'composefs'],
    /squashfs or erofs/,
  );
});

test('an image that is not a boot image is refused with the reason', async () => {
  const root = f('not-boot');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/hostname'), 'x\n');
  seal('image', 'import', `dir:${root}`, `oci:${f('n')}:plain`);
  seal('image', 'seal', `oci:${f('n')}:plain`, `oci:${f('n')}:sealed`);
  const store = await LayoutStore.open(f('n'));
  for (const [tag, reason] of [
    ['plain', /is not one squashfs or EROFS layer sealed for dm-verity/],
    ['sealed', /holds no uki\.efi/],
  ] as const) {
    await assert.rejects(extractBootUki(store, await store.resolve(tag), f('out.efi')), (e: unknown) => {
      assert.ok(e instanceof UkiError);
      assert.equal(e.code, 'UKI_BOOT_IMAGE');
      assert.match(e.message, reason);
      return true;
    });
  }
});

test('a system has at most one boot target, and only services run', () => {
  const spec = (targets: string) =>
    `product: 6f1c0c1e-2a49-4a7e-9d1b-8a3c2f0e5d11\nversion: 3\ntargets:\n${targets}`;
  const boot = '  - { name: boot, role: boot, image: "oci:x:boot" }\n';
  assert.equal(parseSystemSpec(spec(boot)).targets[0]!.role, 'boot');
  for (const [targets, reason] of [
    [boot + boot.replace('name: boot', 'name: boot2'), /at most one boot target/],
    [
      '  - { name: boot, role: boot, image: "oci:x:boot", service: { command: [a] } }\n',
      /only service targets run/,
    ],
    ['  - { name: boot, role: kernel, image: "oci:x:boot" }\n', /must be host, service, data or boot/],
  ] as const) {
    assert.throws(
      () => parseSystemSpec(spec(targets)),
      (e: unknown) => {
        assert.ok(e instanceof ManifestError);
        assert.match(e.message, reason);
        return true;
      },
    );
  }
});

test('seal install takes the UKI from the boot target: EFI/Linux/seal-VERSION.efi beside systemd-boot', () => {
  const pki = f('pki');
  const product = '6f1c0c1e-2a49-4a7e-9d1b-8a3c2f0e5d11';
  seal('pki', 'init', pki);
  seal('pki', 'product', 'new', pki, '--name', 'boot-image-test', '--id', product);
  const root = f('host-root');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc/os-release'), 'PRETTY_NAME="host"\n');
  const layout = f('system');
  seal('image', 'import', `dir:${root}`, `oci:${layout}:host`);
  seal('image', 'seal', `oci:${layout}:host`, `oci:${layout}:host-sealed`);
  seal('uki', 'image', f('uki.efi'), `oci:${layout}:boot`);
  writeFileSync(
    f('system.yaml'),
    [
      `product: ${product}`,
      'version: 12',
      'targets:',
      `  - { name: host, role: host, image: "oci:${layout}:host-sealed" }`,
      `  - { name: boot, role: boot, image: "oci:${layout}:boot" }`,
      '',
    ].join('\n'),
  );
  seal('manifest', 'build', f('system.yaml'), `oci:${layout}:system`);
  seal(
    'manifest',
    'sign',
    `oci:${layout}:system`,
    '--key',
    join(pki, `products/${product}.key`),
    '--cert',
    join(pki, `products/${product}.pem`),
  );
  const disk = f('disk.img');
  seal(
    'install',
    '--disk',
    disk,
    '--manifest',
    `oci:${layout}:system`,
    '--ca',
    join(pki, 'manifest-ca.pem'),
    '--boot-manager',
    f('systemd-boot.efi'),
    '--size',
    '2G',
  );
  const esp = readTable(disk, 2 ** 31).partitions[0]!;
  const image = `${disk}@@${esp.firstLba * 512}`;
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  const listing = execFileSync('mdir', ['-b', '-i', image, '::/EFI/Linux'], { encoding: 'utf8', env });
  assert.deepEqual(listing.trim().split('\n'), ['::/EFI/Linux/seal-12.efi']);
  execFileSync('mcopy', ['-i', image, '::/EFI/Linux/seal-12.efi', f('installed.efi')], { env });
  assert.deepEqual(readFileSync(f('installed.efi')), readFileSync(f('uki.efi')));
  execFileSync('mcopy', ['-i', image, '::/EFI/BOOT/BOOTX64.EFI', f('installed-boot.efi')], { env });
  assert.deepEqual(readFileSync(f('installed-boot.efi')), readFileSync(f('systemd-boot.efi')));

  // A second UKI beside the system's would boot something the system does not pin.
  refusedBySeal(
    [
      'install',
      '--disk',
      f('disk2.img'),
      '--manifest',
      `oci:${layout}:system`,
      '--uki',
      f('uki.efi'),
      '--size',
      '2G',
    ],
    /carries its UKI \(target boot\); --uki would boot another/,
  );
  refusedBySeal(
    ['install', '--disk', f('disk3.img'), '--manifest', `oci:${layout}:host-sealed`, '--size', '2G'],
    /is not a system manifest/,
  );
});
