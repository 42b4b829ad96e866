/**
 * Updates of a running device, under qemu (TCG) with OVMF Secure Boot and swtpm: the device
 * follows a tag on a registry on the host (reached only through qemu's restricted user network
 * and a guestfwd), and the test publishes systems there, one after another, watching the console.
 *
 *  - v8 changes one service: only it restarts, from its new image; only the new blobs are fetched
 *    (their bytes counted against the registry's); the other service keeps running.
 *  - Refused without a change: a system signed by another product, a rollback to v6, a system
 *    whose new layer was corrupted in the registry.
 *  - v10 changes the host: the device reboots into it as a trial and confirms it.
 *  - v11's service never comes up: its trial boot fails, and the device returns to v10 by itself,
 *    saying why.
 *  - Network boot: a second device with a blank disk boots v10 straight from the registry, its
 *    store in memory, verified exactly as from disk.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Machine, Swtpm } from '../../src/machine/index.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  type DeviceFixture,
  DeviceSession,
  installDisk,
  sealedImage,
} from '../helpers/device.ts';
import { vmKernel } from '../helpers/vm.ts';
import { startRegistry, type TestRegistry } from '../registry/harness.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-update-vm-'));
let registry: TestRegistry;
let f: DeviceFixture;
let session: DeviceSession;
let stable: string;
let kit!: ReturnType<typeof buildBootKit>;
let port: string;

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Publishes a system (with all it pins and carries) under the tag the device follows. */
function publish(system: string): void {
  seal('sync', system, stable);
}

/**
 * The configs and layers (what the device's fetch counts, manifests aside) a system pins and
 * carries, by digest with their sizes: the system synced into a layout of its own and read back.
 */
function blobsOf(system: string): Map<string, number> {
  const dir = join(work, `closure-${Math.random().toString(36).slice(2)}`);
  seal('sync', system, `oci:${dir}:x`);
  const sizes = new Map<string, number>();
  for (const hex of readdirSync(join(dir, 'blobs/sha256'))) {
    const text = readFileSync(join(dir, 'blobs/sha256', hex));
    let doc:
      | { config?: { digest: string; size: number }; layers?: { digest: string; size: number }[] }
      | undefined;
    try {
      doc = JSON.parse(text.toString('utf8'));
    } catch {}
    for (const d of [doc?.config, ...(doc?.layers ?? [])]) if (d?.digest) sizes.set(d.digest, d.size);
  }
  return sizes;
}

before(async () => {
  registry = await startRegistry('none');
  port = registry.host.split(':')[1]!;
  stable = `docker://${registry.host}/device/system:stable`;
  f = buildFixture(join(work, 'fixture'));
  kit = buildBootKit(
    f,
    join(vmKernel(), 'vmlinuz'),
    execFileSync('bash', ['scripts/kernel-package.sh'], { encoding: 'utf8' }).trim(),
  );
  const uki = buildUki(f, kit, join(work, 'seal.efi'), {
    cmdline: [
      'console=ttyS0 quiet loglevel=3 panic=-1',
      'seal.net=10.0.2.15/24,gw=10.0.2.2',
      `seal.follow=docker://10.0.2.100:${port}/device/system:stable`,
      'seal.follow-interval=3 seal.registry-insecure seal.trial-boots=1',
    ].join(' '),
  });
  const v7 = buildSystem(f, 7);
  publish(v7);
  const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };
  installDisk(f, stable, device.disk, uki);
  writeFileSync(device.vars, readFileSync(kit.vars));
  const tpm = await Swtpm.start({ stateDir: device.tpm, mode: 'tcp' });
  try {
    seal(
      'tpm',
      'provision',
      '--tpm',
      tpm.address,
      '--product-policy-key',
      f.policyPub,
      '--device-cert',
      f.deviceCert,
      '--device-key',
      f.deviceKey,
    );
  } finally {
    await tpm.stop();
  }
  const machine = await Machine.create({
    root: join(work, 'machines'),
    name: 'updating',
    disk: { path: device.disk, inPlace: true },
    vars: { path: device.vars, inPlace: true },
    tpm: { stateDir: device.tpm, inPlace: true },
    registry: Number(port),
    memory: 2048,
  });
  session = new DeviceSession(machine);
});

after(async () => {
  // The console of the whole run, for a failure's diagnosis.
  if (process.env.SEAL_TEST_CONSOLE) writeFileSync(process.env.SEAL_TEST_CONSOLE, session?.output ?? '');
  await session?.stop();
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

test('the device boots version 7 and follows the registry through the guest forward', async () => {
  await session.waitFor(/seal: boot complete: \S+ version 7 is running/);
  await session.waitFor(/counter: boot 1, web says: <p>boot 1<\/p>/);
  await session.waitFor(/seal: following docker:\/\/10\.0\.2\.100:\d+\/device\/system:stable every 3 s/);
});

test('version 8 changes one service: only it restarts, from its new image; only the new blobs are fetched', async () => {
  const web8 = sealedImage(f, 'web8', { 'etc/web-version': '8\n' });
  const v8 = buildSystem(f, 8, {
    web: {
      image: web8,
      command: ['/bin/sh', '-c', 'echo "web $(cat /etc/web-version) up"; exec httpd -f -p 8080 -h /srv'],
    },
  });
  const before7 = blobsOf(stable);
  const after8 = blobsOf(v8);
  const expected = [...after8].filter(([d]) => !before7.has(d)).reduce((n, [, size]) => n + size, 0);
  const from = session.mark();
  publish(v8);
  const applied = await session.waitFor(
    /update applied: version 7 -> 8, restarted web, (\d+) bytes fetched/,
    from,
  );
  assert.equal(Number(applied[1]), expected, 'the bytes of the blobs v7 did not have, and no more');
  await session.waitFor(/\[web\] web 8 up/, from);
  const since = session.output.slice(from);
  assert.doesNotMatch(since, /service counter: (started|exit)/, 'the unchanged service kept running');
  assert.match(since, /seal: \[ ok \] confirm the update/);
});

test('refused without a change: another product, a rollback, a corrupted layer', async () => {
  seal('pki', 'product', 'new', f.pki, '--name', 'other', '--id', '0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c');
  const other = buildSystem(f, 9, {
    tag: 'other-product',
    key: join(f.pki, 'products/0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c.key'),
    cert: join(f.pki, 'products/0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c.pem'),
  });
  const rollback = buildSystem(f, 6, { tag: 'rollback' });
  const web9 = sealedImage(f, 'web9', { 'etc/web-version': '9\n' });
  const corrupt = buildSystem(f, 9, { tag: 'corrupt', web: { image: web9 } });
  const from = session.mark();
  for (const [system, reason] of [
    [other, /update refused: .*(product|no valid signature)/],
    [rollback, /update refused: .*version 6 is older than version 8/],
  ] as const) {
    const mark = session.mark();
    publish(system);
    await session.waitFor(reason, mark);
  }
  // The new layer of v9, changed in the registry's storage after it was pushed.
  publish(corrupt);
  const layer = JSON.parse(seal('image', 'inspect', `oci:${f.layout}:${web9}`, '--json')).manifest.layers[0]
    .digest as string;
  const stored = join(
    registry.dir,
    'data/docker/registry/v2/blobs/sha256',
    layer.slice(7, 9),
    layer.slice(7),
    'data',
  );
  const bytes = readFileSync(stored);
  bytes[100] ^= 1;
  writeFileSync(stored, bytes);
  const mark = session.mark();
  await session.waitFor(/update refused: .*(digest|DIGEST)/, mark);
  const since = session.output.slice(from);
  assert.doesNotMatch(since, /service (web|counter): (started|exit)/, 'no service restarted');
  assert.doesNotMatch(since, /confirm the update/);
});

test('version 10 changes the host: the device reboots into it as a trial, and confirms it', async () => {
  const host10 = sealedImage(f, 'host10', { 'etc/os-release': 'PRETTY_NAME="Seal test host 10"\n' });
  const web8 = 'web8-sealed';
  const v10 = buildSystem(f, 10, { host: host10, web: { image: web8 } });
  const from = session.mark();
  publish(v10);
  await session.waitFor(/update: version 10 changes the host; rebooting to try it \(1 boots?\)/, from);
  await session.waitFor(/seal: agent started/, from);
  await session.waitFor(/seal: \[ ok \] mount the host root \(\d+ ms\): Seal test host 10/, from);
  await session.waitFor(/seal: \[ ok \] confirm the system \(\d+ ms\): version 10 is good/, from);
  await session.waitFor(/history: \S+ version 10 confirmed good/, from);
  await session.waitFor(/counter: boot 2,/, from);
});

test('version 11 never brings its service up: the trial boot fails and the device returns to version 10 by itself', async () => {
  const host11 = sealedImage(f, 'host11', { 'etc/os-release': 'PRETTY_NAME="Seal test host 11"\n' });
  const v11 = buildSystem(f, 11, {
    host: host11,
    web: { image: 'web8-sealed' },
    counter: { command: ['/bin/sh', '-c', 'echo "counter 11 gives up"; exit 3'], restart: 'no' },
  });
  const from = session.mark();
  publish(v11);
  await session.waitFor(/rebooting to try it/, from);
  await session.waitFor(/seal: \[FAIL\] start the services: services not running: counter/, from);
  await session.waitFor(
    /fallback: version 11 did not come up within 1 boot \(last: services not running: counter\); booting version 10/,
    from,
  );
  await session.waitFor(/seal: boot complete: \S+ version 10 is running/, from);
  await session.waitFor(/counter: boot 3,/, from);
});

test('network boot: a device with a blank disk boots version 10 from the registry, verified as from disk', async () => {
  // v10 republished under a tag of its own: the test above left v11 under `stable`.
  seal('sync', `oci:${f.layout}:system-10`, `docker://${registry.host}/device/system:netboot`);
  const uki = buildUki(f, kit, join(work, 'netboot.efi'), {
    cmdline: [
      'console=ttyS0 quiet loglevel=3 panic=-1',
      'seal.net=10.0.2.15/24,gw=10.0.2.2',
      `seal.boot=docker://10.0.2.100:${port}/device/system:netboot seal.registry-insecure`,
    ].join(' '),
  });
  const machine = await Machine.create({
    root: join(work, 'machines'),
    name: 'netboot',
    uki,
    vars: { path: kit.vars },
    diskSize: 64 << 20,
    provision: { policyKey: f.policyPub, deviceCert: f.deviceCert, deviceKey: f.deviceKey },
    registry: Number(port),
    memory: 2048,
  });
  const netboot = new DeviceSession(machine);
  try {
    await netboot.waitFor(
      /seal: \[ ok \] fetch the system docker:\/\/10\.0\.2\.100:\d+\/device\/system:netboot into memory \(\d+ ms\): \d+ bytes/,
    );
    await netboot.waitFor(/seal: \[ ok \] verify the system manifest \(\d+ ms\): version 10/);
    await netboot.waitFor(/seal: \[ ok \] mount the host root \(\d+ ms\): Seal test host 10/);
    await netboot.waitFor(/counter: boot 1, web says: <p>boot 1<\/p>/);
    assert.doesNotMatch(netboot.output, /find the disk|open the config partition/, 'no disk was used');
  } finally {
    await netboot.stop();
  }
});
