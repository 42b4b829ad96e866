/**
 * A Seal device, end to end, under qemu (TCG) with OVMF Secure Boot and swtpm: a PKI, a host
 * image and two services built and sealed here, a signed system manifest, a TPM provisioned as
 * the factory does, a signed UKI carrying the agent, `seal install` onto a disk — then boots.
 *
 *  - The first boot makes the LUKS2 partitions, runs both services (the counter reads the web
 *    service's page through the shared loopback), and PCR 7 is locked after the unlock.
 *  - The second boot finds the data of the first (the boot count) and a fresh container root.
 *  - Each tamper is refused at its step, with the reason on the console, no service started:
 *    a flipped byte in a host layer and in a service image (dm-verity), a manifest signed by
 *    another product, one chaining to another CA, a validly signed older one (rollback against
 *    the TPM's accepted version), a target swapped for another sealed image, a UKI signed by a
 *    key not in db (the firmware), a UKI whose initrd carries another CA, a TPM whose policy
 *    version was bumped, and the disk moved to another machine with its own TPM.
 *  - Afterwards the untampered device boots again, its count continuing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readTable, SECTOR } from '../../src/gpt/index.ts';
import { Swtpm } from '../../src/machine/index.ts';
import { extend } from '../../src/measure/index.ts';
import { lockDigest } from '../../src/tpm/index.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  assertRefused,
  type BootKit,
  bootDevice,
  bootRetries,
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  type DeviceFixture,
  flipByte,
  installDisk,
  newDevice,
  PRODUCT,
  predictPcr7,
  provisionTpm,
  storeOffset,
} from '../helpers/device.ts';
import { DEVICE_MEMORY_BUDGET } from '../helpers/memory.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-device-vm-'));
const OTHER_PRODUCT = '0b0b0b0b-0b0b-4b0b-8b0b-0b0b0b0b0b0b';
after(async () => {
  if (bootRetries.count) console.error(`device VM tests: ${bootRetries.count} crashed guest(s) booted again`);
  await rm(work, { recursive: true, force: true });
});

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

let f: DeviceFixture;
let kit: BootKit;
let uki: string;
let v7: string;
/** The device under test: its disk, varstore and TPM state. */
const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };

/** A copy of the device whose disk holds `system` (and `bootImage` on its ESP); same TPM state copied. */
function variant(name: string, system: string, bootImage = uki): typeof device {
  const v = {
    disk: join(work, `${name}.img`),
    vars: join(work, `${name}.vars`),
    tpm: join(work, `${name}.tpm`),
  };
  installDisk(f, system, v.disk, bootImage, { verify: false });
  copyFileSync(device.vars, v.vars);
  cpSync(device.tpm, v.tpm, { recursive: true });
  return v;
}

/** The digest of the first layer of the image a target of `system` pins. */
function layerOf(system: string, target: string): string {
  const doc = JSON.parse(seal('manifest', 'verify', system, '--ca', f.ca, '--json')).document as {
    targets: { name: string; image: { digest: string } }[];
  };
  const image = doc.targets.find((t) => t.name === target)!.image.digest;
  const manifest = JSON.parse(readFileSync(join(f.layout, 'blobs/sha256', image.slice(7)), 'utf8'));
  return manifest.layers[0].digest as string;
}

before(async () => {
  f = buildFixture(join(work, 'fixture'));
  kit = buildBootKit(f);
  uki = buildUki(f, kit, join(work, 'seal.efi'));
  v7 = buildSystem(f, 7);
  await newDevice(f, kit, v7, uki, device);
});

test('first boot: LUKS made, system verified, host switched into, both services running, PCR 7 locked', async (t) => {
  const boot = await bootDevice(device);
  assert.ok(boot.booted, boot.output.slice(-4000));
  for (const step of [
    'find the disk',
    'unlock the TPM and lock PCR 7',
    'open the config partition \\(\\d+ ms\\): created',
    'open the data partition \\(\\d+ ms\\): created',
    'verify the system manifest \\(\\d+ ms\\): version 7',

    'open the host target host',
    'mount the host root \\(\\d+ ms\\): Seal test host',
    'switch into the host root',
    'start the services \\(\\d+ ms\\): 2 running',
    'confirm the system \\(\\d+ ms\\): version 7 is good; accepted version 7',
  ])
    assert.match(boot.output, new RegExp(`seal: \\[ ok \\] ${step}`), step);
  assert.equal(boot.counter?.boot, 1);
  assert.equal(boot.counter?.page, '<p>boot 1</p>', 'the counter read the web service');
  // The agent booted the device (LUKS, TPM, manifest, dm-verity, crun) within the device budget.
  const peak = /boot complete: .*; agent peak memory ([\d.]+) MB/.exec(boot.output);
  assert.ok(peak, 'the agent says its peak memory');
  assert.ok(Number(peak[1]) * 1e6 <= DEVICE_MEMORY_BUDGET, `the agent peaked at ${peak[1]} MB`);
  t.diagnostic(`agent peak memory at boot complete: ${peak[1]} MB`);
  assert.equal(boot.counter?.rootfs, 'fresh');
  // PCR 7 is the predicted value extended once more with Seal's lock event.
  const predicted = predictPcr7(kit, uki);
  assert.equal(
    boot.counter?.pcr7,
    extend('sha256', Buffer.from(predicted, 'hex'), lockDigest('sha256')).toString('hex'),
  );
});

test('second boot: the data of the first is there, the container roots are fresh again', async () => {
  const boot = await bootDevice(device);
  assert.ok(boot.booted, boot.output.slice(-3000));
  assert.match(boot.output, /open the data partition \(\d+ ms\): opened/);
  assert.match(boot.output, /history: \S+ version 7 confirmed good; accepted version 7/);
  assert.equal(boot.counter?.boot, 2);
  assert.equal(boot.counter?.page, '<p>boot 2</p>');
  assert.equal(boot.counter?.rootfs, 'fresh');
});

describe('tampered devices, two booted at a time, each refused at its step', { concurrency: 2 }, () => {
  /** The devices to boot, each a copy of the good one with one thing changed, made before any boots. */
  const cases = new Map<string, typeof device>();
  const layers: Record<string, string> = {};

  before(async () => {
    for (const target of ['host', 'web']) {
      const layer = (layers[target] = layerOf(v7, target));
      const copy = variant(`flip-${target}`, v7);
      // The first block of a squashfs layer (its superblock and first metadata) is read at mount.
      flipByte(copy.disk, storeOffset(copy.disk, `/blobs/sha256/${layer.slice(7)}`, 200));
      cases.set(`flip-${target}`, copy);
    }
    seal('pki', 'product', 'new', f.pki, '--name', 'other', '--id', OTHER_PRODUCT);
    const other = {
      key: join(f.pki, `products/${OTHER_PRODUCT}.key`),
      cert: join(f.pki, `products/${OTHER_PRODUCT}.pem`),
    };
    const foreignPki = join(work, 'foreign-pki');
    seal('pki', 'init', foreignPki);
    seal('pki', 'product', 'new', foreignPki, '--name', 'same id, other CA', '--id', PRODUCT);
    const foreign = {
      key: join(foreignPki, `products/${PRODUCT}.key`),
      cert: join(foreignPki, `products/${PRODUCT}.pem`),
    };
    cases.set(
      'other-product',
      variant('other-product', buildSystem(f, 8, { ...other, tag: 'other-product' })),
    );
    cases.set('other-ca', variant('other-ca', buildSystem(f, 8, { ...foreign, tag: 'foreign-ca' })));
    cases.set('rollback', variant('rollback', buildSystem(f, 6)));

    const swapped = variant('swapped', v7);
    const doc = JSON.parse(seal('manifest', 'verify', v7, '--ca', f.ca, '--json')).document as {
      targets: { name: string; image: { digest: string } }[];
    };
    const web = doc.targets.find((t) => t.name === 'web')!.image.digest;
    const counter = doc.targets.find((t) => t.name === 'counter')!.image.digest;
    assert.notEqual(web, counter, 'the swap must change the image');
    const store = readTable(swapped.disk).partitions.find((p) => p.name === 'seal-store')!;
    const image = `${swapped.disk}?offset=${store.firstLba * SECTOR}`;
    const replacement = join(work, 'counter-manifest.json');
    writeFileSync(replacement, readFileSync(join(f.layout, 'blobs/sha256', counter.slice(7))));
    execFileSync('debugfs', ['-w', '-R', `rm /blobs/sha256/${web.slice(7)}`, image], { stdio: 'ignore' });
    execFileSync('debugfs', ['-w', '-R', `write ${replacement} /blobs/sha256/${web.slice(7)}`, image], {
      stdio: 'ignore',
    });
    cases.set('swapped', swapped);

    const foreignKeys = join(work, 'foreign-secureboot');
    seal('secureboot', 'keys', foreignKeys);
    const foreignSigned = buildUki(f, kit, join(work, 'foreign-signed.efi'), {
      signer: { key: join(foreignKeys, 'db.key'), cert: join(foreignKeys, 'db.crt') },
    });
    cases.set('foreign-uki', variant('foreign-uki', v7, foreignSigned));
    const otherCa = join(work, 'other-ca');
    seal('pki', 'init', otherCa);
    const wrongCa = buildUki(f, kit, join(work, 'wrong-ca.efi'), { ca: join(otherCa, 'manifest-ca.pem') });
    cases.set('wrong-ca', variant('wrong-ca', v7, wrongCa));

    // Revocation, as a management image would do it (here from the host, PCR 7 of a fresh swtpm).
    const revoked = variant('revoked', v7);
    const tpm = await Swtpm.start({ stateDir: revoked.tpm, mode: 'tcp' });
    try {
      const value = JSON.parse(seal('tpm', 'pcrs', '7', '--tpm', tpm.address, '--json'))[
        'sha256:7'
      ] as string;
      const mgmt = join(work, 'mgmt.json');
      seal(
        'tpm',
        'policy',
        'sign',
        '--management',
        '--key',
        f.policyKey,
        '--pcr7',
        value,
        '--version',
        '1',
        mgmt,
      );
      seal('tpm', 'revoke', '--tpm', tpm.address, '--management-policy', mgmt);
    } finally {
      await tpm.stop();
    }
    cases.set('revoked', revoked);
    // The same disk in another machine, whose TPM the factory provisioned for another device.
    const moved = variant('moved', v7);
    rmSync(moved.tpm, { recursive: true, force: true });
    mkdirSync(moved.tpm);
    await provisionTpm(f, moved.tpm, 'SN0002');
    execFileSync('cp', ['--sparse=always', device.disk, moved.disk]);
    cases.set('moved', moved);
  });

  for (const target of ['host', 'web'] as const) {
    test(`a flipped byte in the ${target} image: dm-verity refuses it, naming the layer`, async () => {
      const boot = await bootDevice(cases.get(`flip-${target}`)!);
      assertRefused(
        boot,
        target === 'host' ? /open the host target host|mount the host root/ : /open the service image web/,
        new RegExp(`${target} layer 1 \\(${layers[target]}\\).*(dm-verity|I/O error|cannot be mounted)`),
        `flipped ${target}`,
      );
    });
  }

  for (const [name, what, reason] of [
    ['other-product', 'a manifest signed by another product', /product|no valid signature/],
    ['other-ca', 'a manifest whose product certificate chains to another CA', /no valid signature|chain/],
    ['rollback', 'a validly signed older manifest (rollback)', /version 6 is older than version 7/],
    ['swapped', 'a target swapped for another sealed image', /target web: no image matches the pinned/],
    ['wrong-ca', 'a correctly signed UKI whose initrd holds another CA', /no valid signature/],
  ] as const) {
    test(`${what}: refused at verification`, async () => {
      assertRefused(await bootDevice(cases.get(name)!), /verify the system manifest/, reason, what);
    });
  }

  test('a UKI signed by a key not in db: the firmware refuses it', async () => {
    const refused = await bootDevice(cases.get('foreign-uki')!);
    assert.ok(refused.firmwareRefused, refused.output.slice(-2000));
    assert.doesNotMatch(refused.output, /seal: agent started/);
  });

  test('a TPM whose policy version was bumped refuses the unlock', async () => {
    assertRefused(
      await bootDevice(cases.get('revoked')!),
      /unlock the TPM/,
      /TPM_RC_POLICY|revoked|policy version is 2/,
      'revoked',
    );
  });

  test('the disk moved to another machine with its own TPM cannot be opened', async () => {
    assertRefused(
      await bootDevice(cases.get('moved')!),
      /open the config partition/,
      /cryptsetup|No key available|passphrase/,
      'moved disk',
    );
  });
});

test('after every refusal the untampered device boots again, its count continuing', async () => {
  const boot = await bootDevice(device);
  assert.ok(boot.booted, boot.output.slice(-3000));
  assert.equal(boot.counter?.boot, 3);
  assert.equal(boot.counter?.rootfs, 'fresh');
});
