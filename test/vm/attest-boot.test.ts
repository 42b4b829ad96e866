/**
 * Attestation at boot, end to end (qemu TCG, OVMF Secure Boot, swtpm): a device made by `seal
 * machine create` as the factory makes one for attestation — its identity key created in its TPM
 * and certified by the device CA (`provision.identity`), the TPM provisioned with it — whose UKI's
 * command line says `seal.attest=http://10.0.2.101:PORT/ seal.attest-secret=join-token`, and a
 * verifier (`startVerifier`) on 127.0.0.1:PORT that the machine forwards into the guest (`attest`).
 *
 *  - With the reference `seal attest reference` made of that UKI and varstore, the agent attests
 *    after the unlock, before PCR 7 is locked, the verifier releases the secret to that serial, and
 *    the web service reads it at /run/secrets/join-token (read-only, root's, 0400) and prints its
 *    SHA-256 — equal to the secret's; then PCR 7 is locked and the boot completes.
 *  - With a reference of another UKI only (same kernel and initrd, another command line), the
 *    verifier refuses naming the event that differs, the agent's step fails with that
 *    code and message, and the boot ends there: no secret released, no service started.
 *  - A new UKI on trial (a counted entry beside the good one, as an update stages it) that the
 *    verifier does not accept: the failure comes before the device's state can be read, so the
 *    agent reboots and systemd-boot counts it; with its tries spent, systemd-boot starts the good
 *    UKI, which attests and boots.
 *
 * The machine boots through systemd-boot (its UKI a boot entry), as a device that takes new UKIs
 * by update does; the references name it. Five boots in all.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type Decision, parseReference, startVerifier, type Verifier } from '../../src/attest/index.ts';
import { readTable } from '../../src/gpt/index.ts';
import { Machine } from '../../src/machine/index.ts';
import { parseCertificate } from '../../src/pki/index.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  type BootKit,
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  type DeviceFixture,
  PRODUCT,
} from '../helpers/device.ts';
import { freePort } from '../helpers/net.ts';
import { CRASH } from '../helpers/uki-vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-attest-boot-'));
const SECRET = Buffer.from('fleet join token 7c1e9a: for this device, in this boot\n');
const SERIAL = 'SN-ATTEST1';
let retries = 0;

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

let f: DeviceFixture;
let kit: BootKit;
let port: number;
let uki: string;
let otherUki: string;
let machine: Machine;
let verifier: Verifier | undefined;
const decisions: Decision[] = [];

async function serve(ukiFile: string): Promise<void> {
  await verifier?.close();
  const ref = join(work, `${ukiFile.split('/').at(-1)}.ref.json`);
  seal(
    'attest',
    'reference',
    '--product',
    PRODUCT,
    '--uki',
    ukiFile,
    '--boot-manager',
    kit.bootManager,
    '--vars',
    kit.vars,
    ref,
  );
  verifier = await startVerifier({
    reference: parseReference(readFileSync(ref)),
    deviceCa: parseCertificate(readFileSync(join(f.pki, 'device-ca.pem'))),
    secrets: new Map([['join-token', SECRET]]),
    listen: `127.0.0.1:${port}`,
    onDecision: (d) => decisions.push(d),
  });
}

/**
 * Boots the machine until the boot completes (and web printed the secret's digest) or ends; with
 * `reboots`, through the reboots an ended boot asks for.
 */
async function boot(reboots = false): Promise<string> {
  // Whole lines only: the console arrives in pieces, and "ends: re" is not yet a reboot.
  const ended = reboots ? /seal: the boot ends: (?!reboot\r?\n)[^\n]*\n/ : /seal: the boot ends/;
  for (let attempt = 1; ; attempt++) {
    const result = await machine.start({
      timeoutMs: reboots ? 600_000 : 300_000,
      noReboot: !reboots,
      stopOn: new RegExp(
        `secret: [0-9a-f]{64}[^\\n]*\\n[\\s\\S]*seal: boot complete.*\\n|seal: boot complete.*\\n[\\s\\S]*secret: [0-9a-f]{64}.*\\n|${ended.source}|Access Denied`,
      ),
    });
    const done = new RegExp(`seal: boot complete|${ended.source}|Access Denied`).test(result.output);
    if (done || attempt === 3 || (!CRASH.test(result.output) && !result.timedOut)) return result.output;
    retries++;
    console.error(`the device VM crashed or hung; booting it again (attempt ${attempt + 1})`);
  }
}

before(async () => {
  f = buildFixture(join(work, 'fixture'));
  kit = buildBootKit(f);
  port = await freePort();
  const cmdline = (extra: string) =>
    [
      'console=ttyS0 quiet loglevel=3 panic=-1',
      'seal.net=10.0.2.15/24,gw=10.0.2.2',
      `seal.attest=http://10.0.2.101:${port}/ seal.attest-secret=join-token`,
      extra,
    ].join(' ');
  uki = buildUki(f, kit, join(work, 'seal.efi'), { cmdline: cmdline('test.uki=good') });
  otherUki = buildUki(f, kit, join(work, 'other.efi'), {
    cmdline: cmdline('test.uki=other'),
    initrd: join(work, 'seal.initrd'),
  });
  // web reads the secret where every service sees it, and prints its digest, never the secret.
  const web = [
    'echo "secret: $(/bin/busybox sha256sum /run/secrets/join-token | /bin/busybox cut -c1-64)' +
      ' mode $(/bin/busybox stat -c %a:%u /run/secrets/join-token)' +
      ' $( (echo x > /run/secrets/join-token) 2>/dev/null && echo writable || echo read-only)"',
    'exec httpd -f -p 8080 -h /srv',
  ].join('; ');
  const system = buildSystem(f, 3, { web: { command: ['/bin/sh', '-c', web] } });
  const vars = join(work, 'vars.fd');
  copyFileSync(kit.vars, vars);
  machine = await Machine.create({
    root: join(work, 'machines'),
    name: 'attesting',
    uki,
    install: { manifest: system, ca: f.ca, bootManager: kit.bootManager },
    vars: { path: vars, inPlace: true },
    diskSize: 2 * 2 ** 30,
    provision: {
      policyKey: f.policyPub,
      identity: { pki: f.pki, product: PRODUCT, serial: SERIAL },
    },
    attest: port,
    memory: 2048,
  });
});

after(async () => {
  if (retries) console.error(`attest-boot VM test: ${retries} crashed guest(s) booted again`);
  await verifier?.close();
  await machine?.remove({ force: true }).catch(() => {});
  await rm(work, { recursive: true, force: true });
});

test('the device attests before PCR 7 is locked, the verifier releases the secret, the service reads it', async () => {
  await serve(uki);
  const output = await boot();
  assert.match(output, /seal: boot complete/, output.slice(-4000));
  const steps = [...output.matchAll(/seal: \[ ok \] ([^(\n]+?) \(\d+ ms\)/g)].map((m) => m[1]);
  const at = (step: string) => steps.indexOf(step);
  const attestStep = `attest to http://10.0.2.101:${port}/`;
  assert.ok(at('configure the network') >= 0 && at('configure the network') < at('unlock the TPM'));
  assert.ok(at('unlock the TPM') < at(attestStep), steps.join(' | '));
  assert.ok(at(attestStep) < at('lock PCR 7') && at('lock PCR 7') < at('open the config partition'));
  assert.match(
    output,
    new RegExp(
      `\\[ ok \\] attest to http://10\\.0\\.2\\.101:${port}/ \\(\\d+ ms\\): released join-token \\(${SECRET.length} bytes\\) into /run/seal/secrets`,
    ),
  );
  const seen = /\[web\] secret: ([0-9a-f]{64}) mode (\S+) (\S+)/.exec(output);
  assert.ok(seen, output.slice(-3000));
  assert.equal(seen[1], createHash('sha256').update(SECRET).digest('hex'), 'the service read the secret');
  assert.equal(seen[2], '400:0', "root's, 0400");
  assert.equal(seen[3], 'read-only');
  assert.ok(!output.includes(SECRET.toString().trim()), 'the secret itself is never printed');
  const released = decisions.filter((d) => d.released);
  assert.deepEqual(
    decisions.map((x) => (x.released ? 'released' : x.code)),
    ['released'],
  );
  const d = released[0] as Extract<Decision, { released: true }>;
  assert.equal(d.secret, 'join-token');
  assert.equal(d.verdict.serial, SERIAL);
  assert.equal(d.verdict.product, PRODUCT);
  assert.equal(d.verdict.system, 'seal.efi');
});

test('a boot the reference does not accept is refused at the attest step: nothing released, no service', async () => {
  decisions.length = 0;
  await serve(otherUki);
  const output = await boot();
  const failed = /seal: \[FAIL\] (attest to \S+): (.*)\n/.exec(output);
  assert.ok(failed, output.slice(-4000));
  assert.equal(failed[1], `attest to http://10.0.2.101:${port}/`);
  assert.match(
    failed[2]!,
    /refused with ATTEST_REFERENCE_MISMATCH: .*differs from the reference: system "other\.efi" expects .* \[ATTEST_REFUSED\]$/,
    'the verifier’s code and message',
  );
  assert.match(output, /seal: the boot ends: poweroff/);
  assert.doesNotMatch(
    output,
    /\[ ok \] attest to|lock PCR 7|open the config partition|service \w+: started|\[web\]/,
  );
  assert.deepEqual(
    decisions.map((x) => (x.released ? 'released' : x.code)),
    ['ATTEST_REFERENCE_MISMATCH'],
  );
});

/** Runs an mtools command on the machine's ESP (the first partition of its disk). */
function onEsp(command: string, args: string[]): string {
  const disk = join(machine.dir, 'disk.img');
  const esp = readTable(disk, statSync(disk).size).partitions[0]!;
  return execFileSync(command, ['-i', `${disk}@@${esp.firstLba * 512}`, ...args], {
    encoding: 'utf8',
    env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
  });
}

test('a new UKI on trial that fails attestation is counted by systemd-boot; the good UKI then boots', async () => {
  decisions.length = 0;
  await serve(uki);
  // As an update stages it: version 4's UKI beside version 3's, counted with one try.
  onEsp('mcopy', [otherUki, '::/EFI/Linux/seal-4+1.efi']);
  const output = await boot(true);
  const failed = /seal: \[FAIL\] attest to \S+: (.*)\n/.exec(output);
  assert.ok(failed, output.slice(-4000));
  assert.match(failed[1]!, /ATTEST_REFERENCE_MISMATCH/);
  assert.match(
    output,
    /seal: version 4's UKI is being tried \(0 more boots\): systemd-boot counts this failed boot\n[\s\S]*seal: the boot ends: reboot/,
  );
  const after = output.slice(output.indexOf('seal: the boot ends: reboot'));
  // systemd-boot marked the try spent and started the good entry.
  assert.match(
    after,
    /read the boot entries \(\d+ ms\): systemd-boot [^,]+, started seal-3\.efi; entries: seal-4\+0-1\.efi, seal-3\.efi/,
  );
  assert.match(after, /seal: boot complete/, after.slice(-3000));
  assert.match(after, /\[web\] secret: [0-9a-f]{64}/);
  assert.deepEqual(
    decisions.map((x) => (x.released ? 'released' : x.code)),
    ['ATTEST_REFERENCE_MISMATCH', 'released'],
  );
  // Its confirmation leaves the good entry alone on the ESP.
  assert.match(after, /boot entries: seal-3 kept, seal-4\+0-1\.efi removed/);
  assert.equal(onEsp('mdir', ['-b', '::/EFI/Linux']).trim(), '::/EFI/Linux/seal-3.efi');
});
