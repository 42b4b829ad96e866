/**
 * `seal machine`, end to end through the CLI, on a real Seal device (qemu TCG, OVMF Secure Boot,
 * swtpm): `create` installs a signed system onto the machine's disk and provisions its own TPM
 * as the factory does; `start --detach` boots it; `console --follow` shows the agent's steps
 * until both services run (the counter read the web service's page), and ends by itself when
 * `stop` stops the machine; `list` says running, then stopped; `rm` refuses the running
 * machine and deletes the stopped one. The network asked for is qemu's user network with
 * restrict=on, its host forward bound to 127.0.0.1 only. A second machine boots an unsigned
 * image from a boot disk of its own: the firmware refuses it, and `rm --force` removes it while
 * it runs.
 *
 * Run under `flock /tmp/seal-vm.lock` (one VM at a time on the shared host).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runSeal, SEAL_BIN } from '../helpers/cli.ts';
import {
  type BootKit,
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  type DeviceFixture,
} from '../helpers/device.ts';
import { freePort } from '../helpers/net.ts';
import { CRASH } from '../helpers/uki-vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-machine-vm-'));
const machines = join(work, 'machines');
const env = { SEAL_MACHINES: machines };
let retries = 0;

after(async () => {
  // Whatever a failed test left running is stopped.
  for (const name of existsSync(machines) ? readdirSync(machines) : [])
    if (!name.startsWith('.')) runSeal(['machine', 'rm', '--force', name], { env });
  if (retries) console.error(`machine VM test: ${retries} crashed guest(s) booted again`);
  await rm(work, { recursive: true, force: true });
});

function seal(...args: string[]): string {
  const r = runSeal(args, { env });
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

interface Listed {
  name: string;
  state: string;
  disk?: string;
  uki?: string | null;
  qemuPid?: number;
  swtpmPid?: number;
}

function listed(name: string): Listed | undefined {
  return (JSON.parse(seal('machine', 'list', '--json')) as Listed[]).find((m) => m.name === name);
}

/**
 * `seal machine console NAME --follow`, read until the console matches `until` (then it is left
 * running and returned), or until it ends by itself.
 */
function follow(
  name: string,
  until: RegExp,
): Promise<{ text: string; matched: boolean; ended: Promise<number | null> }> {
  const child = spawn(SEAL_BIN, ['machine', 'console', name, '--follow'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ended = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let text = '';
  return new Promise((resolve) => {
    // A guard against a hang of the whole test, not a timed assertion.
    const guard = setTimeout(() => child.kill('SIGTERM'), 400_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      text += d;
      if (until.test(text) || CRASH.test(text)) {
        clearTimeout(guard);
        resolve({ text, matched: until.test(text), ended });
      }
    });
    void ended.then(() => {
      clearTimeout(guard);
      resolve({ text, matched: until.test(text), ended });
    });
  });
}

/** The processes whose command line names `dir` (the machine's qemu and swtpm). */
function processesOf(dir: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')) continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (args.includes(dir)) out.push(args.split('\0')[0]!);
    } catch {}
  }
  return out;
}

/** The loopback listeners on TCP `port` from /proc/net/tcp: their local addresses. */
function listeners(port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hex}`) && f[3] === '0A')
    .map((f) => f[1]!.split(':')[0]!);
}

let f: DeviceFixture;
let kit: BootKit;
let uki: string;
let system: string;

before(async () => {
  f = buildFixture(join(work, 'fixture'));
  kit = buildBootKit(f);
  uki = buildUki(f, kit, join(work, 'seal.efi'));
  system = buildSystem(f, 3);
});

test('create, start --detach, console --follow to both services, stop, list, rm: a device through seal machine', async () => {
  const webPort = await freePort();
  const registryPort = await freePort();
  seal(
    'machine',
    'create',
    'dev1',
    '--uki',
    uki,
    '--vars',
    kit.vars,
    '--manifest',
    system,
    '--ca',
    f.ca,
    '--disk-size',
    '2G',
    '--provision-policy-key',
    f.policyPub,
    '--device-cert',
    f.deviceCert,
    '--device-key',
    f.deviceKey,
    '--forward',
    `${webPort}:8080`,
    '--registry',
    `127.0.0.1:${registryPort}`,
  );
  const dir = join(machines, 'dev1');
  assert.deepEqual(
    { ...listed('dev1'), dir: undefined },
    {
      name: 'dev1',
      state: 'stopped',
      dir: undefined,
      disk: join(dir, 'disk.img'),
      uki,
      memory: 2048,
      cpus: 1,
      tpm: true,
      network: {
        registry: `10.0.2.100:${registryPort} -> 127.0.0.1:${registryPort}`,
        attest: null,
        forwards: [`127.0.0.1:${webPort} -> guest:8080`],
      },
      media: null,
    },
  );

  let boot = { text: '', matched: false, ended: Promise.resolve<number | null>(0) };
  for (let attempt = 1; attempt <= 3; attempt++) {
    assert.match(seal('machine', 'start', 'dev1', '--detach'), /Started dev1 \(qemu \d+\)/);
    const running = listed('dev1');
    assert.equal(running?.state, 'running');
    assert.ok(running?.qemuPid && running.swtpmPid, 'qemu and its swtpm run');
    // Only qemu's user network, restricted; its forward listens on the loopback address only.
    const cmdline = readFileSync(`/proc/${running.qemuPid}/cmdline`, 'utf8').split('\0');
    const netdev = cmdline[cmdline.indexOf('-netdev') + 1]!;
    assert.match(
      netdev,
      /^user,id=net0,restrict=on,hostfwd=tcp:127\.0\.0\.1:\d+-:8080,guestfwd=tcp:10\.0\.2\.100:/,
    );
    assert.deepEqual(listeners(webPort), ['0100007F']);
    // Until the agent says the boot is complete and the counter has spoken (in either order).
    boot = await follow(
      'dev1',
      /^(?=[\s\S]*counter: boot \d+.*\n)[\s\S]*seal: boot complete.*\n|seal: the boot ends|Access Denied/,
    );
    if (!CRASH.test(boot.text) || attempt === 3) break;
    retries++;
    console.error(`the machine's guest crashed; booting it again (attempt ${attempt + 1})`);
    seal('machine', 'stop', 'dev1', '--timeout', '0');
    await boot.ended;
  }
  assert.ok(boot.matched, boot.text.slice(-3000));
  for (const step of [
    'unlock the TPM and lock PCR 7',
    'open the data partition \\(\\d+ ms\\): created',
    'verify the system manifest \\(\\d+ ms\\): version 3',
    'start the services \\(\\d+ ms\\): 2 running',
  ])
    assert.match(boot.text, new RegExp(`seal: \\[ ok \\] ${step}`), step);
  assert.match(boot.text, /seal: boot complete/);
  assert.match(boot.text, /counter: boot 1, web says: <p>boot 1<\/p>/);
  assert.doesNotMatch(boot.text, /\x1b/, 'the console is made safe for a terminal');

  // A running machine is not removed without --force.
  const refused = runSeal(['machine', 'rm', 'dev1'], { env });
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /machine dev1 is running.*\[MACHINE_RUNNING\]/);
  assert.ok(existsSync(join(dir, 'machine.json')));

  // stop: the follower ends by itself once the machine is gone.
  // The ACPI power button: the agent stops the services and powers the device off itself.
  const stopped = JSON.parse(seal('machine', 'stop', 'dev1', '--timeout', '90s', '--json'));
  assert.equal(stopped.wasRunning, true);
  assert.equal(stopped.how, 'powered off');
  assert.match(seal('machine', 'console', 'dev1'), /seal: the power button: stopping the services/);
  assert.equal(await boot.ended, 0, 'console --follow ends with the machine');
  assert.equal(listed('dev1')?.state, 'stopped');
  assert.deepEqual(processesOf(dir), [], 'no qemu or swtpm left');
  assert.deepEqual(listeners(webPort), []);
  assert.match(seal('machine', 'stop', 'dev1'), /dev1 is not running/);
  // The whole log stays readable after the run.
  assert.match(seal('machine', 'console', 'dev1'), /counter: boot 1/);

  assert.match(seal('machine', 'rm', 'dev1'), /Removed dev1/);
  assert.equal(existsSync(dir), false);
  assert.equal(listed('dev1'), undefined);
});

test('a UKI on a boot disk of its own is tried first, and an unsigned one is refused by the firmware; rm --force removes a running machine', async () => {
  seal(
    'machine',
    'create',
    'unsigned',
    '--uki',
    '/usr/lib/systemd/boot/efi/systemd-bootx64.efi',
    '--vars',
    kit.vars,
    '--disk-size',
    '64M',
    '--tpm',
    'none',
  );
  const dir = join(machines, 'unsigned');
  seal('machine', 'start', 'unsigned', '--detach');
  const seen = await follow('unsigned', /Access Denied/);
  assert.match(
    seen.text,
    /failed to load Boot0001 "UEFI Misc Device" .*: Access Denied/,
    seen.text.slice(-2000),
  );
  assert.equal(listed('unsigned')?.state, 'running');
  seal('machine', 'rm', '--force', 'unsigned');
  assert.equal(await seen.ended, 0);
  assert.equal(existsSync(dir), false);
  assert.deepEqual(processesOf(dir), []);
});
