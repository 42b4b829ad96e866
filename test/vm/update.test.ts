/**
 * Updates of a running device, under qemu (TCG) with OVMF Secure Boot and swtpm: the device
 * boots through systemd-boot, follows a tag on a registry on the host (reached only through qemu's restricted user network
 * and a guestfwd), and the test publishes systems there, one after another, watching the console.
 *
 *  - v8 changes one service: only it restarts, from its new image; only the new blobs are fetched
 *    (their bytes counted against the registry's); the other service keeps running.
 *  - Refused without a change: a system signed by another product, a rollback to v6, a system
 *    whose new layer was corrupted in the registry.
 *  - Downloads cut short (through a fault proxy in front of the registry): resumed with Range
 *    where they broke; when every try fails, refused with nothing switched, and the next check
 *    fetches the update whole.
 *  - v10 changes the host: the device reboots into it as a trial and confirms it.
 *  - v11's service never comes up: its trial boot fails, and the device returns to v10 by itself,
 *    saying why.
 *  - v12 brings a new UKI: staged on the ESP with a boot counter, started by systemd-boot,
 *    confirmed, and the old UKI removed — with the power cut after its fetch, after its UKI is
 *    staged and during its confirmation, every boot whole v10 or whole v12. v13's UKI never brings its service up: systemd-boot
 *    counts its boot, passes it over, and v12 boots again by itself.
 *  - Revocation: the management image (its own signer, PCR 7 and policy) raises the TPM policy
 *    version and installs v14 with its UKI; v12's UKI is then refused at unlock, v14's boots.
 *  - An installer UKI (seal.install) writes v12 from the registry onto a blank disk, which boots.
 *  - Network boot: a second device with a blank disk boots v10 straight from the registry, its
 *    store in memory, verified exactly as from disk.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { readTable } from '../../src/gpt/index.ts';
import { Machine } from '../../src/machine/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { closureBlobs, closureFiles } from '../helpers/closure.ts';
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
import { DEVICE_MEMORY_BUDGET } from '../helpers/memory.ts';
import { type FaultProxy, startFaultProxy, startRegistry, type TestRegistry } from '../registry/harness.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-update-vm-'));
let registry: TestRegistry;
let proxy: FaultProxy;
let f: DeviceFixture;
let session: DeviceSession;
let machine: Machine;
let stable: string;
let kit!: ReturnType<typeof buildBootKit>;
let port: string;
let uki7: string;

/** The device's kernel command line; `uki` tells the UKIs of different versions apart. */
const cmdline = (uki: string) =>
  [
    'console=ttyS0 quiet loglevel=3 panic=-1',
    'seal.net=10.0.2.15/24,gw=10.0.2.2',
    `seal.follow=docker://10.0.2.100:${port}/device/system:stable`,
    `seal.follow-interval=3 seal.registry-insecure seal.trial-boots=1 test.uki=${uki}`,
  ].join(' ');

/** A UKI of its own for `version` (the same initrd as version 7's), sealed as the boot image `boot-VERSION`. */
function bootImage(version: number): string {
  const uki = buildUki(f, kit, join(work, `seal-${version}.efi`), {
    cmdline: cmdline(String(version)),
    initrd: uki7.replace(/\.efi$/, '.initrd'),
  });
  seal('uki', 'image', uki, `oci:${f.layout}:boot-${version}`);
  return `boot-${version}`;
}

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
/** Scratch space for a closure. */
const scratch = () => mkdtempSync(join(work, 'closure-'));
const filesOf = (system: string) => closureFiles(system, scratch());
/** The configs and layers of `system`'s closure, by digest with their sizes. */
const blobsOf = (system: string) =>
  new Map([...closureBlobs(system, scratch())].map(([digest, { size }]) => [digest, size]));

/**
 * Waits for the device to say what left its store, and checks that it is exactly the blobs of
 * `gone` that `kept` does not share (the system a confirmation or fallback left behind).
 */
async function collected(gone: Map<string, number>, kept: Map<string, number>, from: number) {
  const leaving = [...gone].filter(([digest]) => !kept.has(digest));
  const said = await session.waitFor(/store: (\d+) blobs no system needs removed, (\d+) bytes freed/, from);
  assert.deepEqual(
    [Number(said[1]), Number(said[2])],
    [leaving.length, leaving.reduce((n, [, size]) => n + size, 0)],
    'the store lost exactly the blobs of the system it left',
  );
}

before(async () => {
  registry = await startRegistry('none');
  // The device reaches the registry through a proxy that cuts downloads when a test says so.
  proxy = await startFaultProxy(registry.host);
  port = proxy.host.split(':')[1]!;
  stable = `docker://${registry.host}/device/system:stable`;
  f = buildFixture(join(work, 'fixture'));
  kit = buildBootKit(f);
  uki7 = buildUki(f, kit, join(work, 'seal-7.efi'), { cmdline: cmdline('7') });
  seal('uki', 'image', uki7, `oci:${f.layout}:boot-7`);
  const v7 = buildSystem(f, 7, { boot: 'boot-7' });
  publish(v7);
  const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };
  installDisk(f, stable, device.disk, undefined, { bootManager: kit.bootManager });
  writeFileSync(device.vars, readFileSync(kit.vars));
  await provisionTpm(f, device.tpm);
  machine = await Machine.create({
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
  await proxy?.stop();
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

test('the device boots version 7 and follows the registry through the guest forward', async () => {
  await session.waitFor(/seal: boot complete: \S+ version 7 is running/);
  await session.waitFor(/counter: boot 1, web says: <p>boot 1<\/p>/);
  await session.waitFor(/seal: following docker:\/\/10\.0\.2\.100:\d+\/device\/system:stable every 3 s/);
});

test('version 8 changes one service: only it restarts, from its new image; only the new blobs are fetched', async (t) => {
  const web8 = sealedImage(f, 'web8', { 'etc/web-version': '8\n' });
  const v8 = buildSystem(f, 8, {
    boot: 'boot-7',
    web: {
      image: web8,
      command: ['/bin/sh', '-c', 'echo "web $(cat /etc/web-version) up"; exec httpd -f -p 8080 -h /srv'],
    },
  });
  const before7 = blobsOf(stable);
  const after8 = blobsOf(v8);
  const [files7, files8] = [filesOf(stable), filesOf(v8)];
  const expected = [...after8].filter(([d]) => !before7.has(d)).reduce((n, [, size]) => n + size, 0);
  const from = session.mark();
  publish(v8);
  const applied = await session.waitFor(
    /update applied: version 7 -> 8, restarted web, (\d+) bytes fetched; agent peak memory ([\d.]+) MB/,
    from,
  );
  assert.equal(Number(applied[1]), expected, 'the bytes of the blobs v7 did not have, and no more');
  // Fetching, verifying every new layer and applying stayed within the device budget.
  assert.ok(Number(applied[2]) * 1e6 <= DEVICE_MEMORY_BUDGET, `the agent peaked at ${applied[2]} MB`);
  t.diagnostic(`agent peak memory after the update: ${applied[2]} MB`);
  // Version 7 stayed in the store until version 8 was confirmed, and then left it.
  await collected(files7, files8, from);
  await session.waitFor(/\[web\] web 8 up/, from);
  const since = session.output.slice(from);
  assert.doesNotMatch(since, /service counter: (started|exit)/, 'the unchanged service kept running');
  assert.match(since, /seal: \[ ok \] confirm the update/);
});

test('refused without a change: another product, a rollback, a corrupted layer', async () => {
  seal('pki', 'product', 'new', f.pki, '--name', 'other', '--id', '0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c');
  const other = buildSystem(f, 9, {
    boot: 'boot-7',
    tag: 'other-product',
    key: join(f.pki, 'products/0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c.key'),
    cert: join(f.pki, 'products/0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c.pem'),
  });
  const rollback = buildSystem(f, 6, { boot: 'boot-7', tag: 'rollback' });
  const web9 = sealedImage(f, 'web9', { 'etc/web-version': '9\n' });
  const corrupt = buildSystem(f, 9, { boot: 'boot-7', tag: 'corrupt', web: { image: web9 } });
  const from = session.mark();
  for (const [system, reason] of [
    [other, /update refused: .*(product|no valid signature)/],
    [rollback, /update refused: .*version 6 is older than version 8/],
  ] as const) {
    const mark = session.mark();
    publish(system);
    const refused = await session.waitFor(reason, mark);
    const said = session.output.slice(mark, refused.index);
    assert.match(said, /seal: \[FAIL\] check the update docker:\S+: /);
    assert.doesNotMatch(said, /fetch the update/, 'refused before any of its images was fetched');
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

/** Why a check whose layer download met only resets is refused: the download's or the request's failure. */
const LAYER_CUT = /download of sha256:[0-9a-f]{64} .*failed|ECONNRESET|socket hang up|aborted/;

test('downloads cut short: resumed where they broke, or, when the registry keeps failing, refused with nothing switched and fetched whole by the next check', async () => {
  const web9 = sealedImage(f, 'web9-cut', { 'etc/web-version': '9 (cut)\n' });
  const v9 = buildSystem(f, 9, {
    boot: 'boot-7',
    web: {
      image: web9,
      command: ['/bin/sh', '-c', 'echo "web $(cat /etc/web-version) up"; exec httpd -f -p 8080 -h /srv'],
    },
  });
  const layer = JSON.parse(seal('image', 'inspect', `oci:${f.layout}:${web9}`, '--json')).manifest.layers[0]
    .digest as string;
  const index = JSON.parse(readFileSync(join(f.layout, 'index.json'), 'utf8')) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const digest = index.manifests.find(
    (m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'system-9',
  )!.digest;
  const before8 = blobsOf(`oci:${f.layout}:system-8`);
  const [files8, files9] = [filesOf(`oci:${f.layout}:system-8`), filesOf(v9)];
  const expected = [...blobsOf(v9)].filter(([d]) => !before8.has(d)).reduce((n, [, size]) => n + size, 0);
  const isLayer = (method: string, path: string) => method === 'GET' && path.endsWith(`/blobs/${layer}`);
  const askedFrom = (n: number) =>
    proxy.log.slice(n).filter((r) => r.startsWith('GET ') && r.includes(`/blobs/${layer}`));
  // Each fault ends the registry's answer halfway. The first check meets nothing but resets, as
  // many as its download tries; the second a short answer, then a reset, and resumes past both.
  // Once the layer was asked for, later checks are held at the tag (500s, no "is now") until this
  // test has seen the first refused: however slowly it sees the console, no other check meets
  // the resets.
  let cutting = true;
  let layerAsked = false;
  const failing = {
    kind: 'reset' as const,
    match: (method: string, path: string) => {
      if (!cutting || !isLayer(method, path)) return false;
      layerAsked = true;
      return true;
    },
    times: 1000,
  };
  const holding = {
    kind: '500' as const,
    match: (_: string, path: string) => cutting && layerAsked && path.endsWith('/manifests/stable'),
    times: 1000,
  };
  proxy.faults.push(failing, holding);
  const seen = proxy.log.length;
  const from = session.mark();
  try {
    publish(v9);
    // The first check of v9 (a check of the corrupt system before may still end after `from`).
    // Its tries end in resets: the download's own, or, when a reset comes before the answer's
    // head reached the device, the request's.
    const taken = await session.waitFor(new RegExp(`is now ${digest}`), from);
    // Whole lines: the console arrives in pieces.
    const refused = await session.waitFor(/update (refused|check of \S+ failed): (.*)\n/, taken.index);
    assert.equal(refused[1], 'refused', refused[0]);
    assert.match(refused[2]!, LAYER_CUT);
  } finally {
    // However it went, the later checks are held no longer.
    cutting = false;
  }
  const retried = proxy.log.length;
  proxy.faults.push({ kind: 'truncate', match: isLayer }, { kind: 'reset', match: isLayer });
  const applied = await session.waitFor(
    /update applied: version 8 -> 9, restarted web, (\d+) bytes fetched/,
    from,
  );
  await session.waitFor(/\[web\] web 9 \(cut\) up/, from);
  const first = askedFrom(seen).slice(0, askedFrom(seen).length - askedFrom(retried).length);
  // (A reset may come before any byte reaches the device: a try then starts from 0 again.)
  assert.ok(first.length > 1, 'the first check tried the layer more than once');
  assert.ok(!first[0]!.includes('bytes='), 'from its start');
  assert.deepEqual(proxy.fired.slice(-2), ['truncate', 'reset']);
  const second = askedFrom(retried);
  assert.equal(second.length, 3, second.join('\n'));
  assert.ok(
    !second[0]!.includes('bytes='),
    'the second check starts the layer afresh: nothing of the first was kept',
  );
  assert.match(second[1]!, /bytes=\d+-$/, 'and resumes it where the short answer ended');
  assert.match(second[2]!, /bytes=\d+-$/, 'and where the reset broke it');
  // From the first check that took v9 up (the corrupt system's checks may still end after `from`).
  const start = session.output.indexOf(`is now ${digest}`, from);
  const again = session.output.indexOf(`is now ${digest}`, start + 1);
  assert.ok(start > 0 && again > start && again < applied.index, 'two checks took v9 up');
  assert.doesNotMatch(session.output.slice(again + 1, applied.index), /is now/, 'and no third');
  const firstCheck = session.output.slice(start, again);
  assert.match(firstCheck, new RegExp(`update refused: .*(${LAYER_CUT.source})`), 'the first was refused');
  assert.doesNotMatch(
    firstCheck,
    /service (web|counter): (started|exit)|confirm the update/,
    'nothing switched by the first',
  );
  // Nothing of the failed fetch was kept, nothing fetched twice in the second: every blob v8 lacked, once.
  assert.equal(Number(applied[1]), expected);
  await collected(files8, files9, start);
});

test('version 10 changes the host: the device reboots into it as a trial, and confirms it', async () => {
  const host10 = sealedImage(f, 'host10', { 'etc/os-release': 'PRETTY_NAME="Seal test host 10"\n' });
  const web8 = 'web8-sealed';
  const v10 = buildSystem(f, 10, { boot: 'boot-7', host: host10, web: { image: web8 } });
  const [files9, files10] = [filesOf(`oci:${f.layout}:system-9`), filesOf(v10)];
  const from = session.mark();
  publish(v10);
  await session.waitFor(/update: version 10 brings a new host; rebooting to try it \(1 boots?\)/, from);
  await session.waitFor(/seal: agent started/, from);
  await session.waitFor(/seal: \[ ok \] mount the host root \(\d+ ms\): Seal test host 10/, from);
  await session.waitFor(/seal: \[ ok \] confirm the system \(\d+ ms\): version 10 is good/, from);
  await session.waitFor(/history: \S+ version 10 confirmed good/, from);
  // Version 9 stays in the store through the trial (it is `current`), and leaves it once 10 is good.
  await collected(files9, files10, from);
  await session.waitFor(/counter: boot 2,/, from);
});

test('version 11 never brings its service up: the trial boot fails and the device returns to version 10 by itself', async () => {
  const host11 = sealedImage(f, 'host11', { 'etc/os-release': 'PRETTY_NAME="Seal test host 11"\n' });
  const v11 = buildSystem(f, 11, {
    boot: 'boot-7',
    host: host11,
    web: { image: 'web8-sealed' },
    counter: { command: ['/bin/sh', '-c', 'echo "counter 11 gives up"; exit 3'], restart: 'no' },
  });
  const [files10, files11] = [filesOf(`oci:${f.layout}:system-10`), filesOf(v11)];
  const from = session.mark();
  publish(v11);
  await session.waitFor(/rebooting to try it/, from);
  await session.waitFor(/seal: \[FAIL\] start the services: services not running: counter/, from);
  await session.waitFor(
    /fallback: version 11 did not come up within 1 boot \(last: services not running: counter\); booting version 10/,
    from,
  );
  // What version 11 brought leaves the store when 10 is back.
  await collected(files11, files10, from);
  await session.waitFor(/seal: boot complete: \S+ version 10 is running/, from);
  await session.waitFor(/counter: boot 3,/, from);
});

/** The files under EFI/Linux on the device's ESP, read with mtools from its disk. */
function bootEntriesOnDisk(): string[] {
  const disk = join(work, 'disk.img');
  const esp = readTable(disk, statSync(disk).size).partitions[0]!;
  const listing = execFileSync('mdir', ['-b', '-i', `${disk}@@${esp.firstLba * 512}`, '::/EFI/Linux'], {
    encoding: 'utf8',
    env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
  });
  return listing
    .trim()
    .split('\n')
    .map((line) => line.replace('::/EFI/Linux/', ''))
    .sort();
}

/** Each boot of the console: the UKI systemd-boot started, the host root mounted, the version that came up. */
function bootsOf(output: string): { entry?: string; host?: string; version?: number }[] {
  return output
    .split('seal: agent started')
    .slice(1)
    .map((boot) => ({
      entry: /read the boot entries \(\d+ ms\): \S+ \S+, started (seal-\d+)/.exec(boot)?.[1],
      host: /mount the host root \(\d+ ms\): (.*)/.exec(boot)?.[1],
      version: Number(/boot complete: \S+ version (\d+) is running/.exec(boot)?.[1]) || undefined,
    }));
}

test('version 12 brings a new UKI and host, the power cut after its fetch, after its UKI is staged and during its confirmation: every boot is whole 10 or whole 12, and 12 ends confirmed with its UKI alone', async () => {
  const host12 = sealedImage(f, 'host12', { 'etc/os-release': 'PRETTY_NAME="Seal test host 12"\n' });
  const v12 = buildSystem(f, 12, { boot: bootImage(12), host: host12, web: { image: 'web8-sealed' } });
  const from = session.mark();
  publish(v12);
  const outputs: string[] = [];
  // The power is cut (qemu ends at once) when the console shows `at` after `since`, and comes back.
  const cut = async (at: RegExp, since = 0) => {
    await session.waitFor(at, since);
    outputs.push(session.output.slice(since));
    await session.stop();
    session = new DeviceSession(machine);
  };
  await cut(/seal: \[ ok \] fetch the update docker:\S+ \(\d+ ms\): \d+ new blobs/, from);
  await cut(/seal: \[ ok \] stage the UKI of version 12 \(\d+ ms\): EFI\/Linux\/seal-12\+1\.efi/);
  await cut(/seal: \[ \.\. \] confirm the system/);
  await session.waitFor(/seal: boot complete: \S+ version 12 is running/);
  await session.waitFor(/history: \S+ version 12 confirmed good/);
  outputs.push(session.output);
  const boots = outputs.flatMap(bootsOf);
  assert.ok(boots.length >= 4, `${boots.length} boots`);
  for (const boot of boots) {
    if (boot.version === undefined && boot.host === undefined) continue;
    const whole =
      (boot.entry === 'seal-7' && boot.host === 'Seal test host 10' && boot.version !== 12) ||
      (boot.entry === 'seal-12' && boot.host === 'Seal test host 12' && boot.version !== 10);
    assert.ok(whole, `a boot mixed versions: ${JSON.stringify(boot)}`);
  }
  assert.equal(boots.at(-1)?.version, 12);
  assert.match(outputs.join('\n'), /seal: boot entries: seal-12 kept, seal-7\.efi removed|rebooting into it/);
  assert.deepEqual(bootEntriesOnDisk(), ['seal-12.efi']);
});

test("version 13's UKI never brings its service up: systemd-boot counts the boot, passes the entry over, and version 12 comes back", async () => {
  const v13 = buildSystem(f, 13, {
    boot: bootImage(13),
    host: 'host12-sealed',
    web: { image: 'web8-sealed' },
    counter: { command: ['/bin/sh', '-c', 'echo "counter 13 gives up"; exit 3'], restart: 'no' },
  });
  const from = session.mark();
  publish(v13);
  await session.waitFor(/update: version 13 brings a new UKI; rebooting to try it/, from);
  await session.waitFor(/started seal-13\S*\.efi/, from);
  await session.waitFor(/seal: \[FAIL\] start the services: services not running: counter/, from);
  await session.waitFor(
    /seal: \[ ok \] read the boot entries \(\d+ ms\): systemd-boot 254\S*, started seal-12\.efi; entries: seal-13\+0-1\.efi, seal-12\.efi/,
    from,
  );
  await session.waitFor(
    /fallback: version 13 did not come up within 1 boot of its UKI \(last: services not running: counter\); booting version 12/,
    from,
  );
  await session.waitFor(/seal: boot complete: \S+ version 12 is running/, from);
  assert.deepEqual(bootEntriesOnDisk(), ['seal-12.efi']);
});

test('revocation: the management image raises the TPM policy version and installs version 14 with its UKI; the old UKI is refused at unlock, the new one boots', async () => {
  // Version 14's UKI carries a policy for TPM policy version 2; its boot image says so beside it.
  const uki14 = buildUki(f, kit, join(work, 'seal-14.efi'), { cmdline: cmdline('14'), version: 2 });
  seal('uki', 'image', uki14, `oci:${f.layout}:boot-14`, '--policy', uki14.replace(/\.efi$/, '.policy.json'));
  const v14 = buildSystem(f, 14, { boot: 'boot-14', host: 'host12-sealed', web: { image: 'web8-sealed' } });
  seal('sync', v14, `docker://${registry.host}/device/system:14`);
  await session.stop();

  const management = buildUki(f, kit, join(work, 'management.efi'), {
    management: true,
    cmdline: [
      'console=ttyS0 quiet loglevel=3 panic=-1',
      'seal.net=10.0.2.15/24,gw=10.0.2.2',
      `seal.install=docker://10.0.2.100:${port}/device/system:14 seal.registry-insecure`,
    ].join(' '),
  });
  const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };
  const onItsOwnDisk = (name: string, uki: string) =>
    Machine.create({
      root: join(work, 'machines'),
      name,
      uki,
      disk: { path: device.disk, inPlace: true },
      vars: { path: device.vars, inPlace: true },
      tpm: { stateDir: device.tpm, inPlace: true },
      registry: Number(port),
      memory: 2048,
    });
  const manager = new DeviceSession(await onItsOwnDisk('management', management));
  try {
    await manager.waitFor(/seal: \[ ok \] read the management policy \(\d+ ms\): policy version 1/);
    await manager.waitFor(/seal: \[ ok \] verify it \(\d+ ms\): version 14, /);
    await manager.waitFor(/seal: \[ ok \] read the new UKI's policy \(\d+ ms\): policy version 2/);
    await manager.waitFor(
      /seal: \[ ok \] install the UKI of version 14 \(\d+ ms\): EFI\/Linux\/seal-14\.efi/,
    );
    await manager.waitFor(
      /seal: \[ ok \] revoke the older UKIs \(\d+ ms\): policy version 1 -> 2: every UKI with an older policy now fails at unlock/,
    );
    await manager.waitFor(
      /seal: management: version 14 installed with its UKI seal-14; removed seal-12\.efi/,
    );
    await manager.done;
    assert.doesNotMatch(
      manager.output,
      /service (web|counter): started/,
      'the management image runs no service',
    );
  } finally {
    await manager.stop();
  }
  assert.deepEqual(bootEntriesOnDisk(), ['seal-14.efi']);

  // Version 12's UKI, still signed and in db, booted from a disk of its own: the TPM refuses it.
  const old = new DeviceSession(await onItsOwnDisk('old-uki', join(work, 'seal-12.efi')));
  try {
    await old.waitFor(
      /seal: \[FAIL\] unlock the TPM and lock PCR 7: .*(policy version is 2|TPM_RC_POLICY|revoked)/,
    );
    await old.waitFor(/seal: the boot ends: poweroff/);
  } finally {
    await old.stop();
  }

  // The device's own disk: systemd-boot starts version 14's UKI, which unlocks and confirms it.
  session = new DeviceSession(machine);
  await session.waitFor(
    /seal: \[ ok \] read the boot entries \(\d+ ms\): systemd-boot 254\S*, started seal-14\.efi/,
  );
  await session.waitFor(/seal: \[ ok \] unlock the TPM and lock PCR 7 \(\d+ ms\): .*accepted version 12/);
  await session.waitFor(/seal: boot complete: \S+ version 14 is running/);
  await session.waitFor(/history: \S+ version 14 confirmed good \(was 12\); accepted version 14/);
});

test('an installer UKI writes version 12 from the registry onto a blank disk, which then boots it through systemd-boot', async () => {
  seal('sync', `oci:${f.layout}:system-12`, `docker://${registry.host}/device/system:12`);
  const installer = buildUki(f, kit, join(work, 'installer.efi'), {
    bootManager: true,
    cmdline: [
      'console=ttyS0 quiet loglevel=3 panic=-1',
      'seal.net=10.0.2.15/24,gw=10.0.2.2',
      `seal.install=docker://10.0.2.100:${port}/device/system:12 seal.registry-insecure`,
    ].join(' '),
  });
  const installing = new DeviceSession(
    await Machine.create({
      root: join(work, 'machines'),
      name: 'installed',
      uki: installer,
      vars: { path: kit.vars },
      diskSize: 3 * 2 ** 30,
      provision: { policyKey: f.policyPub, deviceCert: f.deviceCert, deviceKey: f.deviceKey },
      registry: Number(port),
      memory: 2048,
    }),
  );
  try {
    await installing.waitFor(/seal: \[ ok \] choose the disk to install on \(\d+ ms\): \/dev\/vd[a-z]/);
    await installing.waitFor(
      /seal: \[ ok \] install docker:\S+ on \/dev\/vd[a-z] \(\d+ ms\): version 12 \(sha256:[0-9a-f]{64}\), \d+ bytes in the store, behind systemd-boot/,
    );
    await installing.waitFor(/seal: installer: version 12 is on \/dev\/vd[a-z]; powering off/);
    await installing.done;
  } finally {
    await installing.stop();
  }
  // The disk alone, with the machine's varstore and TPM: the installed system boots.
  const dir = join(work, 'machines/installed');
  const booting = new DeviceSession(
    await Machine.create({
      root: join(work, 'machines'),
      name: 'installed-disk',
      disk: { path: join(dir, 'disk.img'), inPlace: true },
      vars: { path: join(dir, 'vars.fd'), inPlace: true },
      tpm: { stateDir: join(dir, 'tpm'), inPlace: true },
      // Version 12's UKI configures the network and follows the registry.
      registry: Number(port),
      memory: 2048,
    }),
  );
  try {
    await booting.waitFor(
      /seal: \[ ok \] read the boot entries \(\d+ ms\): systemd-boot 254\S*, started seal-12\.efi/,
    );
    await booting.waitFor(/seal: \[ ok \] open the config partition \(\d+ ms\): created/);
    await booting.waitFor(/seal: boot complete: \S+ version 12 is running/);
    await booting.waitFor(/counter: boot 1, web says: <p>boot 1<\/p>/);
  } finally {
    await booting.stop();
  }
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
