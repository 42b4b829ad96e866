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
 *
 * The same device accepts systems pushed over the network (`seal.push`, reached through a qemu
 * forward; `seal push` on the host): a rollback is refused before anything but its manifest is
 * looked at, a stream that is not a layout is refused, and version 9 is applied from only the blobs
 * the device lacked.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Machine } from '../../src/machine/index.ts';
import { runSeal, runSealAsync } from '../helpers/cli.ts';
import { closureFiles } from '../helpers/closure.ts';
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
import { fileEntry, tarOf } from '../helpers/layout.ts';
import { freePort } from '../helpers/net.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-media-vm-'));
const machines = join(work, 'machines');
let f: DeviceFixture;
let session: DeviceSession | undefined;
let machine: Machine;
/** The device's push port, and the host's port forwarded to it. */
const PUSH_PORT = 7000;
let pushPort: number;
/** The system of the medium that was applied. */
let applied8: string;

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
  pushPort = await freePort();
  f = buildFixture(join(work, 'fixture'));
  const kit = buildBootKit(f);
  const uki = buildUki(f, kit, join(work, 'seal.efi'), {
    cmdline: `console=ttyS0 quiet loglevel=3 panic=-1 seal.media seal.follow-interval=3 seal.net=10.0.2.15/24,gw=10.0.2.2 seal.push=${PUSH_PORT}`,
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
    forwards: [{ hostPort: pushPort, guestPort: PUSH_PORT }],
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
  applied8 = good.system;
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

/** A PUT of `body` to the device's push port; its status and answer. */
function putRaw(body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: pushPort, method: 'PUT', path: '/seal/system', agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('pushed over the network: a rollback refused before anything else is read, a stream that is no layout refused, version 9 applied from only the blobs the device lacked', async () => {
  assert.ok(session, 'the device of the previous test runs on');
  const device = session;
  await device.waitFor(new RegExp(`seal: accepting pushed systems on port ${PUSH_PORT}`));
  const address = `127.0.0.1:${pushPort}`;

  const rollback = buildSystem(f, 6, { tag: 'system-6-push' });
  const refused = await runSealAsync(['push', address, '--manifest', rollback]);
  assert.equal(refused.status, 1, refused.stdout + refused.stderr);
  assert.match(
    refused.stdout,
    /device: seal: \[FAIL\] check the update oci:\/run\/seal\/data\/push:system: .*version 6 is older than version 8/,
  );
  assert.match(refused.stdout, /; refused: .*version 6 is older than version 8/);
  assert.doesNotMatch(refused.stdout, /fetch the update/, 'nothing of it copied into the store');

  const from = device.mark();
  const hostile = await tarOf([fileEntry('../../run/seal/config/device.json', '{}')]);
  const answer = await putRaw(hostile);
  assert.equal(answer.status, 400, answer.text);
  assert.match(answer.text, /not a file of an OCI layout/);
  await device.waitFor(/seal: push: refused: the pushed layout is refused/, from);

  const web9 = sealedImage(f, 'web9-push', { 'etc/web-version': '9 (pushed)\n' });
  const v9 = buildSystem(f, 9, {
    tag: 'system-9-push',
    web: {
      image: web9,
      command: ['/bin/sh', '-c', 'echo "web $(cat /etc/web-version) up"; exec httpd -f -p 8080 -h /srv'],
    },
  });
  const held = closureFiles(applied8, mkdtempSync(join(work, 'closure-')));
  const lacking = [...closureFiles(v9, mkdtempSync(join(work, 'closure-')))].filter(
    ([digest]) => !held.has(digest),
  );
  const pushed = await runSealAsync(['push', address, '--manifest', v9]);
  assert.equal(pushed.status, 0, pushed.stdout + pushed.stderr);
  const sent = /: (\d+) of (\d+) blobs sent \((\d+) bytes\); applied: version 8 -> 9/.exec(pushed.stdout);
  assert.ok(sent, pushed.stdout);
  assert.deepEqual(
    [Number(sent[1]), Number(sent[3])],
    [lacking.length, lacking.reduce((n, [, size]) => n + size, 0)],
    'only the blobs the device lacked were sent',
  );
  assert.ok(Number(sent[2]) > lacking.length);
  assert.match(pushed.stdout, /device: seal: update applied: version 8 -> 9, restarted web/);
  await device.waitFor(/\[web\] web 9 \(pushed\) up/, from);
  assert.doesNotMatch(device.output.slice(from), /service counter: (started|exit)/);
});
