/**
 * Updates from removable media, under qemu (TCG) with OVMF Secure Boot and swtpm: a device booted
 * with `seal.media` (no network, no registry) finds a FAT image made by `seal media create`,
 * attached read-only as a second virtio disk with `seal machine media`, and applies the system in
 * its seal-update/ through the same verification as a registry update. Two boots:
 *
 *  - A medium whose new layer was corrupted on the FAT (one byte, rewritten with mtools): refused
 *    with one line, nothing switched, not tried again while it stays in; the device's own disk is
 *    still the one it found and booted, with the medium beside it.
 *  - The medium swapped (machine stopped) for one carrying version 8, which changes one service:
 *    applied from the medium, only that service restarted, its new image running.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Machine } from '../../src/machine/index.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  type DeviceFixture,
  DeviceSession,
  installDisk,
  provisionTpm,
  sealedImage,
} from '../helpers/device.ts';
import { vmKernel } from '../helpers/vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-media-vm-'));
const machines = join(work, 'machines');
let f: DeviceFixture;
let session: DeviceSession | undefined;
let machine: Machine;

function seal(...args: string[]): string {
  const r = runSeal(args, { env: { SEAL_MACHINES: machines } });
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const mtools = (command: string, args: string[]) =>
  execFileSync(command, args, { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });

/** The first layer of the sealed image `tag` in the fixture's layout. */
const firstLayer = (tag: string) =>
  JSON.parse(seal('image', 'inspect', `oci:${f.layout}:${tag}`, '--json')).manifest.layers[0]
    .digest as string;

/** Version 8: the web service from a new image of its own. */
function version8(name: string, text: string): { system: string; layer: string } {
  const web = sealedImage(f, name, { 'etc/web-version': `${text}\n` });
  const system = buildSystem(f, 8, {
    tag: `system-8-${name}`,
    web: {
      image: web,
      command: ['/bin/sh', '-c', 'echo "web $(cat /etc/web-version) up"; exec httpd -f -p 8080 -h /srv'],
    },
  });
  return { system, layer: firstLayer(web) };
}

before(async () => {
  f = buildFixture(join(work, 'fixture'));
  const kit = buildBootKit(
    f,
    join(vmKernel(), 'vmlinuz'),
    execFileSync('bash', ['scripts/kernel-package.sh'], { encoding: 'utf8' }).trim(),
  );
  const uki = buildUki(f, kit, join(work, 'seal.efi'), {
    cmdline: 'console=ttyS0 quiet loglevel=3 panic=-1 seal.media seal.follow-interval=3',
  });
  const v7 = buildSystem(f, 7);
  const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };
  installDisk(f, v7, device.disk, uki);
  writeFileSync(device.vars, readFileSync(kit.vars));
  await provisionTpm(f, device.tpm);

  // The corrupt medium: version 8 whose new layer has one byte flipped on the FAT.
  const corrupt = version8('web8-corrupt', '8 (corrupt)');
  const bad = join(work, 'corrupt.img');
  seal('media', 'create', bad, '--manifest', corrupt.system);
  const onMedium = `::/seal-update/blobs/sha256/${corrupt.layer.slice(7)}`;
  const blob = join(work, 'blob');
  mtools('mcopy', ['-i', bad, onMedium, blob]);
  const bytes = readFileSync(blob);
  bytes[100]! ^= 1;
  writeFileSync(blob, bytes);
  mtools('mcopy', ['-o', '-i', bad, blob, onMedium]);

  seal(
    'machine',
    'create',
    'media-device',
    '--disk',
    device.disk,
    '--disk-in-place',
    '--vars',
    device.vars,
    '--tpm',
    'none',
    '--media',
    bad,
  );
  // The machine's TPM is the provisioned state, used in place (the CLI makes a TPM of its own).
  machine = await Machine.create({
    root: join(work, 'device'),
    name: 'media-device',
    disk: { path: device.disk, inPlace: true },
    vars: { path: device.vars, inPlace: true },
    tpm: { stateDir: device.tpm, inPlace: true },
    media: bad,
    memory: 2048,
  });
});

after(async () => {
  if (process.env.SEAL_TEST_CONSOLE) writeFileSync(process.env.SEAL_TEST_CONSOLE, session?.output ?? '');
  await session?.stop();
  await rm(work, { recursive: true, force: true });
});

test('seal machine create --media and seal machine media attach an image read-only, shown in the list', () => {
  const listed = seal('machine', 'list');
  assert.match(listed, /media-device\tstopped\t\S+disk\.img\t-\t-\t\S+corrupt\.img\n/);
  seal('machine', 'media', 'media-device', '--eject');
  assert.match(seal('machine', 'list'), /media-device\tstopped\t\S+disk\.img\t-\t-\t-\n/);
  const args = machine.qemuOptions().disks!;
  assert.deepEqual(
    args.map((d) => [d.path.split('/').at(-1), d.readonly ?? false]),
    [
      ['disk.img', false],
      ['corrupt.img', true],
    ],
  );
});

test('a medium with a corrupted layer: refused with nothing switched, and not tried again while it stays in', async () => {
  session = new DeviceSession(machine);
  try {
    await session.waitFor(/seal: \[ ok \] find the disk \(\d+ ms\): \/dev\/vda\n/);
    const from = (await session.waitFor(/seal: boot complete: \S+ version 7 is running/)).index;
    await session.waitFor(/seal: looking for update media every 3 s/, from);
    await session.waitFor(
      /update: oci:\/run\/seal\/media\/vdb\/seal-update:system is now sha256:[0-9a-f]{64}/,
      from,
    );
    await session.waitFor(
      /update refused: blob sha256:[0-9a-f]{64} in \/run\/seal\/media\/vdb\/seal-update has digest/,
      from,
    );
    const since = session.output.slice(from);
    assert.doesNotMatch(
      since,
      /service (web|counter): (started|exit)|confirm the update|web 8 \(corrupt\) up/,
    );
    assert.equal(since.split('seal-update:system is now').length - 1, 1, 'tried once');
  } finally {
    await session.stop();
    session = undefined;
  }
});

test('the medium swapped for one with version 8: applied from it, only the changed service restarted', async () => {
  const good = version8('web8-media', '8 (media)');
  const image = join(work, 'v8.img');
  seal('media', 'create', image, '--manifest', good.system);
  await machine.setMedia(image);
  session = new DeviceSession(machine);
  const from = (await session.waitFor(/seal: boot complete: \S+ version 7 is running/)).index;
  await session.waitFor(
    /update: oci:\/run\/seal\/media\/vdb\/seal-update:system is now sha256:[0-9a-f]{64}/,
    from,
  );
  await session.waitFor(/update applied: version 7 -> 8, restarted web, \d+ bytes fetched/, from);
  await session.waitFor(/\[web\] web 8 \(media\) up/, from);
  const since = session.output.slice(from);
  assert.doesNotMatch(since, /service counter: (started|exit)/, 'the unchanged service kept running');
  assert.doesNotMatch(since, /media: vdb skipped/);
});
