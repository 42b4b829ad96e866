/**
 * `seal machine`'s library without booting anything: where machines live, names, what `create`
 * makes (and refuses, leaving nothing behind), the qemu command line of a machine (Secure Boot
 * firmware, its varstore and disks in boot order, TPM, console log, QMP, pid file; the network
 * only when asked, restricted, forwards to and from 127.0.0.1 only), the state read from pid
 * files checked against /proc (stand-in processes play qemu: a stale or foreign pid never looks
 * running), `start`/`rm` refusing a running machine, `stop` through QMP, list and rm, and the
 * configuration file fuzzed.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readTable } from '../../src/gpt/index.ts';
import {
  checkName,
  Machine,
  MachineError,
  machinesRoot,
  OVMF_CODE_SECURE_BOOT,
  parseMachineConfig,
  qemuArguments,
  removeMachine,
  Swtpm,
} from '../../src/machine/index.ts';
import { deviceIdOf, initPki, x509 } from '../../src/pki/index.ts';
import { identityPublic, readAcceptedVersion, Tpm } from '../../src/tpm/index.ts';
import { prng } from '../helpers/trees.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-machines-'));
const root = join(work, 'machines');
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

/** Secure Boot enrolled (PK, KEK, db): Debian's snakeoil varstore. */
const VARS = '/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd';
/** A PE image to boot (unsigned: the firmware would refuse it, which is not tested here). */
const UKI = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';

const PRODUCT = '0b6e3f1a-2c4d-4e5f-8a9b-0c1d2e3f4a5b';
/** The product's policy-signing public key for the factory step. */
const POLICY_PUB = join(work, 'policy.pub');
writeFileSync(
  POLICY_PUB,
  generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }),
);

const refused = (code: string, pattern: RegExp) => (e: unknown) =>
  e instanceof MachineError && e.code === code && pattern.test(e.message);

test('machines live in $SEAL_MACHINES, else under $XDG_DATA_HOME, else ~/.local/share', () => {
  assert.equal(machinesRoot({ SEAL_MACHINES: '/srv/vms' }), '/srv/vms');
  assert.equal(machinesRoot({ XDG_DATA_HOME: '/data' }), '/data/seal/machines');
  assert.match(machinesRoot({ XDG_DATA_HOME: 'relative' }), /\/\.local\/share\/seal\/machines$/);
  assert.match(machinesRoot({}), /\/\.local\/share\/seal\/machines$/);
});

test('names are plain words: no paths, dot names, options, spaces or controls', () => {
  for (const good of ['dev1', 'A', 'edge-01.test_2', 'x'.repeat(63)]) assert.equal(checkName(good), good);
  for (const bad of [
    '',
    '.',
    '..',
    '../x',
    'a/b',
    '/abs',
    '-rf',
    '.hidden',
    'a b',
    'x\n',
    'é',
    'x'.repeat(64),
  ])
    assert.throws(
      () => checkName(bad),
      refused('MACHINE_NAME', /is not a machine name/),
      JSON.stringify(bad),
    );
  assert.throws(() => Machine.open('../etc', root), refused('MACHINE_NAME', /not a machine name/));
});

test('create: a machine with a blank disk, its own varstore and TPM, the UKI on a boot disk tried first', async () => {
  const m = await Machine.create({ name: 'blank', root, uki: UKI, vars: { path: VARS }, diskSize: 64 << 20 });
  assert.equal(m.dir, join(root, 'blank'));
  assert.equal(statSync(m.dir).mode & 0o777, 0o700);
  assert.deepEqual(readdirSync(m.dir).sort(), ['disk.img', 'esp.img', 'machine.json', 'tpm', 'vars.fd']);
  assert.deepEqual(readFileSync(join(m.dir, 'vars.fd')), readFileSync(VARS));
  const disk = statSync(join(m.dir, 'disk.img'));
  assert.equal(disk.size, 64 << 20);
  assert.ok(disk.blocks * 512 < 1 << 20, 'a new disk is sparse');
  const esp = readTable(join(m.dir, 'esp.img'));
  assert.deepEqual(
    esp.partitions.map((p) => [p.name, p.type]),
    [['esp', 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b']],
  );
  assert.deepEqual(JSON.parse(readFileSync(join(m.dir, 'machine.json'), 'utf8')), {
    format: 1,
    name: 'blank',
    uki: UKI,
    bootDisk: true,
    disk: { path: 'disk.img', owned: true },
    vars: { path: 'vars.fd', owned: true },
    tpm: { path: 'tpm', owned: true },
    memory: 2048,
    cpus: 1,
    accel: 'tcg',
    registry: null,
    attest: null,
    forwards: [],
    media: null,
  });
  // The same UKI gives the same partition table.
  const again = await Machine.create({ name: 'blank2', root, uki: UKI, vars: { path: VARS }, tpm: 'none' });
  assert.equal(readTable(join(again.dir, 'esp.img')).diskGuid, esp.diskGuid);
  assert.equal(again.config.tpm, null);
  assert.equal(statSync(join(again.dir, 'disk.img')).size, 4 * 2 ** 30, 'default 4 GiB');

  const status = Machine.open('blank', root).status();
  assert.equal(status.state, 'stopped');
  assert.equal(status.disk, join(m.dir, 'disk.img'));
  assert.equal(status.uki, UKI);
});

test("qemu's command line: Secure Boot firmware, boot disk first, TPM, console log, QMP and pid file; no network", () => {
  const m = Machine.open('blank', root);
  const fg = m.qemuOptions();
  fg.tpm = { controlSocket: join(m.dir, 'swtpm.ctrl') } as never;
  const line = qemuArguments(fg).join(' ');
  const d = m.dir;
  for (const part of [
    '-accel tcg -m 2048 -smp 1 ',
    `-chardev stdio,id=console0,logfile=${d}/console.log -serial chardev:console0 -nodefaults`,
    `-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on`,
    `-drive if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE_SECURE_BOOT}`,
    `-drive if=pflash,format=raw,unit=1,file=${d}/vars.fd`,
    `-drive if=none,id=disk0,format=raw,file=${d}/esp.img,readonly=on -device virtio-blk-pci,drive=disk0,bootindex=1`,
    `-drive if=none,id=disk1,format=raw,file=${d}/disk.img -device virtio-blk-pci,drive=disk1,bootindex=2`,
    `-chardev socket,id=chrtpm,path=${d}/swtpm.ctrl -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0`,
    `-qmp unix:${d}/qmp.sock,server=on,wait=off -pidfile ${d}/qemu.pid`,
  ])
    assert.ok(line.includes(part), `${part}\nin\n${line}`);
  for (const absent of ['-netdev', '-nic', '-daemonize', '-no-reboot', 'kvm'])
    assert.ok(!line.includes(absent), absent);
  const detached = qemuArguments(m.qemuOptions({ detach: true, noReboot: true })).join(' ');
  assert.ok(detached.includes(`-chardev file,id=console0,path=${d}/console.log -serial chardev:console0`));
  assert.ok(detached.includes('-daemonize') && detached.includes('-no-reboot'));
});

test('the network when asked: user networking with restrict=on, forwards only between the guest and 127.0.0.1', async () => {
  const m = await Machine.create({
    name: 'net',
    root,
    uki: UKI,
    vars: { path: VARS },
    tpm: 'none',
    diskSize: 1 << 20,
    registry: 5000,
    attest: 7443,
    forwards: [
      { hostPort: 8080, guestPort: 80 },
      { hostPort: 2222, guestPort: 22 },
    ],
  });
  const args = qemuArguments(m.qemuOptions());
  const netdev = args[args.indexOf('-netdev') + 1];
  assert.equal(
    netdev,
    'user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22,' +
      'guestfwd=tcp:10.0.2.100:5000-cmd:/usr/bin/socat STDIO TCP:127.0.0.1:5000,' +
      'guestfwd=tcp:10.0.2.101:7443-cmd:/usr/bin/socat STDIO TCP:127.0.0.1:7443',
  );
  // No option ROM on the NIC: the firmware never boots from the network.
  assert.equal(args[args.indexOf('-netdev') + 3], 'virtio-net-pci,netdev=net0,romfile=');
  assert.equal(args.filter((a) => a === '-netdev').length, 1);
  assert.deepEqual(m.status().network, {
    registry: '10.0.2.100:5000 -> 127.0.0.1:5000',
    attest: '10.0.2.101:7443 -> 127.0.0.1:7443',
    forwards: ['127.0.0.1:8080 -> guest:80', '127.0.0.1:2222 -> guest:22'],
  });
  // A verifier alone: the guest reaches it and nothing else.
  const v = await Machine.create({
    name: 'verifier-only',
    root,
    uki: UKI,
    vars: { path: VARS },
    tpm: 'none',
    diskSize: 1 << 20,
    attest: 7443,
  });
  const vargs = qemuArguments(v.qemuOptions());
  assert.equal(
    vargs[vargs.indexOf('-netdev') + 1],
    'user,id=net0,restrict=on,guestfwd=tcp:10.0.2.101:7443-cmd:/usr/bin/socat STDIO TCP:127.0.0.1:7443',
  );
  assert.deepEqual(v.status().network, {
    registry: null,
    attest: '10.0.2.101:7443 -> 127.0.0.1:7443',
    forwards: [],
  });
  // A machine.json written before verifiers could be forwarded reads as none.
  const old = JSON.parse(readFileSync(join(v.dir, 'machine.json'), 'utf8'));
  delete old.attest;
  assert.equal(parseMachineConfig(JSON.stringify(old), v.dir, 'verifier-only').attest, null);
  await v.remove();
});

test('create refuses, and a refused or failed creation leaves nothing behind', async () => {
  const base = { root, uki: UKI, vars: { path: VARS }, tpm: 'none' as const, diskSize: 1 << 20 };
  const cases: [Parameters<typeof Machine.create>[0], string, RegExp][] = [
    [{ ...base, name: 'blank' }, 'MACHINE_EXISTS', /machine blank exists/],
    [{ ...base, name: 'bad/name' }, 'MACHINE_NAME', /not a machine name/],
    [
      { ...base, name: 'x', vars: { path: '/usr/share/OVMF/OVMF_VARS_4M.fd' } },
      'MACHINE_INVALID_OPTION',
      /has no PK: Secure Boot would not be enforced/,
    ],
    [{ ...base, name: 'x', vars: { path: UKI } }, 'MACHINE_INVALID_OPTION', /no firmware volume/],
    [{ ...base, name: 'x', uki: join(work, 'missing.efi') }, 'MACHINE_INVALID_OPTION', /no UKI at/],
    [{ ...base, name: 'x', uki: undefined }, 'MACHINE_INVALID_OPTION', /needs a UKI to boot, or a disk/],
    [
      { ...base, name: 'x', install: { manifest: 'oci:/nowhere:x' }, disk: { path: UKI } },
      'MACHINE_INVALID_OPTION',
      /not both/,
    ],
    [{ ...base, name: 'x', disk: { path: UKI } }, 'MACHINE_INVALID_OPTION', /keeps its size/],
    [{ ...base, name: 'x', diskSize: 3 << 30 }, 'MACHINE_INVALID_OPTION', /a disk of -1073741824 bytes/],
    [{ ...base, name: 'x', diskSize: 4096 }, 'MACHINE_INVALID_OPTION', /give 1 MiB or more/],
    [{ ...base, name: 'x', registry: 0 }, 'MACHINE_INVALID_OPTION', /registry port 0 is not a TCP port/],
    [
      { ...base, name: 'x', attest: 65536 },
      'MACHINE_INVALID_OPTION',
      /verifier port 65536 is not a TCP port/,
    ],
    [
      { ...base, name: 'x', forwards: [{ hostPort: 70000, guestPort: 1 }] },
      'MACHINE_INVALID_OPTION',
      /host port 70000/,
    ],
    [
      {
        ...base,
        name: 'x',
        forwards: [
          { hostPort: 80, guestPort: 1 },
          { hostPort: 80, guestPort: 2 },
        ],
      },
      'MACHINE_INVALID_OPTION',
      /forwarded twice/,
    ],
    [{ ...base, name: 'x', memory: 16 }, 'MACHINE_INVALID_OPTION', /memory 16 MiB/],
    [{ ...base, name: 'x', cpus: 0 }, 'MACHINE_INVALID_OPTION', /0 CPUs/],
    [
      { ...base, name: 'x', provision: { policyKey: 'k', deviceCert: 'c', deviceKey: 'k' } },
      'MACHINE_INVALID_OPTION',
      /TPM of the machine/,
    ],
    [
      { ...base, name: 'x'.repeat(60), root: join(work, 'a'.repeat(40)) },
      'MACHINE_INVALID_OPTION',
      /too long for a Unix socket/,
    ],
    [
      { ...base, name: 'x', root: join(work, 'a,b') },
      'MACHINE_INVALID_OPTION',
      /qemu cannot take a path with a comma/,
    ],
    // Fails half-way: the system to install does not exist.
    [{ ...base, name: 'x', install: { manifest: `oci:${join(work, 'no-layout')}:sys` } }, '', /./],
    // Fails half-way: the factory step with files that are not keys.
    [
      { ...base, name: 'x', tpm: 'swtpm', provision: { policyKey: UKI, deviceCert: UKI, deviceKey: UKI } },
      'MACHINE_INVALID_OPTION',
      /is not a public key or certificate/,
    ],
    [
      {
        ...base,
        name: 'x',
        tpm: 'swtpm',
        provision: { policyKey: POLICY_PUB, identity: { pki: work, product: PRODUCT, serial: 'SN1' } },
      },
      'MACHINE_INVALID_OPTION',
      /is not a PKI directory with a device CA/,
    ],
  ];
  for (const [options, code, pattern] of cases) {
    await assert.rejects(
      Machine.create(options),
      (e: unknown) =>
        (code ? e instanceof MachineError && e.code === code : e instanceof Error) &&
        pattern.test((e as Error).message),
      `${options.name}: ${pattern}`,
    );
  }
  assert.deepEqual(
    readdirSync(root).sort(),
    ['blank', 'blank2', 'net'],
    'no half-made machine, no staging directory',
  );
  assert.deepEqual(readdirSync(join(work, 'a,b')), [], 'nor there');
});

test('the factory step with a TPM-resident identity: the key made in the machine’s TPM, certified by the device CA, provisioned', async () => {
  const pki = join(work, 'pki');
  await initPki(pki);
  const m = await Machine.create({
    name: 'factory',
    root,
    uki: UKI,
    vars: { path: VARS },
    diskSize: 1 << 20,
    provision: { policyKey: POLICY_PUB, identity: { pki, product: PRODUCT, serial: 'SN-M1' } },
  });
  const pem = readFileSync(join(pki, 'devices/SN-M1.pem'));
  assert.ok(!existsSync(join(pki, 'devices/SN-M1.key')), 'no key file: the key never left the TPM');
  const cert = new X509Certificate(pem);
  assert.ok(cert.verify(new X509Certificate(readFileSync(join(pki, 'device-ca.pem'))).publicKey));
  assert.deepEqual(deviceIdOf(new x509.X509Certificate(pem)), { product: PRODUCT, serial: 'SN-M1' });
  const swtpm = await Swtpm.start({ stateDir: join(m.dir, 'tpm'), mode: 'tcp' });
  try {
    const tpm = await Tpm.open(swtpm.address);
    try {
      const id = await identityPublic(tpm);
      assert.ok(id, 'the TPM holds the identity key');
      assert.equal(id.pem, cert.publicKey.export({ type: 'spki', format: 'pem' }));
      assert.equal(await readAcceptedVersion(tpm), 0, 'provisioned: the accepted version is 0');
    } finally {
      await tpm.close();
    }
  } finally {
    await swtpm.stop();
  }
  // The same serial again is refused before anything is made.
  await assert.rejects(
    Machine.create({
      name: 'factory2',
      root,
      uki: UKI,
      vars: { path: VARS },
      diskSize: 1 << 20,
      provision: { policyKey: POLICY_PUB, identity: { pki, product: PRODUCT, serial: 'SN-M1' } },
    }),
    refused('MACHINE_INVALID_OPTION', /SN-M1\.pem exists: device SN-M1 has a certificate already/),
  );
  assert.ok(!existsSync(join(root, 'factory2')));
  await m.remove();
});

test('an existing disk: copied (sparse) by default, or used in place and left by rm', async () => {
  const source = join(work, 'source.img');
  writeFileSync(source, Buffer.alloc(8 << 20));
  const fd = Buffer.from('data in the middle');
  const content = readFileSync(source);
  fd.copy(content, 5 << 20);
  writeFileSync(source, content);
  const copy = await Machine.create({ name: 'copied', root, disk: { path: source }, vars: { path: VARS } });
  const copied = join(copy.dir, 'disk.img');
  assert.deepEqual(readFileSync(copied), content);
  assert.ok(statSync(copied).blocks * 512 <= 2 << 20, 'zeros are holes in the copy');
  assert.equal(copy.config.uki, null);
  assert.equal(copy.config.bootDisk, false);
  assert.ok(!existsSync(join(copy.dir, 'esp.img')));

  const varsCopy = join(work, 'vars-in-place.fd');
  writeFileSync(varsCopy, readFileSync(VARS));
  const tpmDir = join(work, 'tpm-in-place');
  mkdirSync(tpmDir);
  const inPlace = await Machine.create({
    name: 'inplace',
    root,
    disk: { path: source, inPlace: true },
    vars: { path: varsCopy, inPlace: true },
    tpm: { stateDir: tpmDir, inPlace: true },
  });
  assert.deepEqual(readdirSync(inPlace.dir), ['machine.json']);
  const args = qemuArguments(inPlace.qemuOptions()).join(' ');
  assert.ok(args.includes(`format=raw,file=${source},if=virtio`), args);
  assert.ok(args.includes(`unit=1,file=${varsCopy}`));
  assert.equal(inPlace.status().disk, source);
  await inPlace.remove();
  assert.ok(existsSync(source) && existsSync(varsCopy) && existsSync(tpmDir), 'what was used in place stays');
  assert.ok(!existsSync(inPlace.dir));
});

/** A stand-in for a machine's qemu: a process named qemu-system-x86_64 whose arguments hold `pidFile`. */
function fakeQemu(pidFile: string, script = 'setInterval(() => {}, 1e6)'): ChildProcess {
  const child = spawn(process.execPath, ['-e', script, '--', '-pidfile', pidFile], {
    argv0: 'qemu-system-x86_64',
    stdio: 'ignore',
  });
  children.push(child);
  writeFileSync(pidFile, `${child.pid}\n`);
  return child;
}

const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => c.once('exit', () => r()));

test('state comes from pid files checked against /proc: stale, foreign and garbage pids are not running', async () => {
  const m = Machine.open('blank', root);
  const pidFile = join(m.dir, 'qemu.pid');
  for (const text of ['999999999\n', 'garbage', `${process.pid}\n`, '', '-1']) {
    writeFileSync(pidFile, text);
    assert.equal(m.status().state, 'stopped', JSON.stringify(text));
  }
  // A process named like qemu but started for another machine is not this one's.
  const other = fakeQemu(join(work, 'other.pid'));
  writeFileSync(pidFile, `${other.pid}\n`);
  assert.equal(m.status().state, 'stopped');
  other.kill();
  await exited(other);

  const qemu = fakeQemu(pidFile);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(m.status().state, 'running');
  assert.equal(m.status().qemuPid, qemu.pid);
  assert.deepEqual(
    Machine.list(root).map((s) => [s.name, s.state]),
    [
      ['blank', 'running'],
      ['blank2', 'stopped'],
      ['copied', 'stopped'],
      ['net', 'stopped'],
    ],
  );
  await assert.rejects(
    m.start({ detach: true }),
    refused('MACHINE_RUNNING', /machine blank is running \(qemu \d+\)/),
  );
  await assert.rejects(removeMachine('blank', { root }), refused('MACHINE_RUNNING', /stop it first/));
  assert.ok(existsSync(m.dir));
  // Without a QMP socket, stop falls back to SIGTERM.
  const result = await m.stop({ timeoutMs: 0 });
  assert.deepEqual(result, { wasRunning: true, how: 'quit' });
  await exited(qemu);
  assert.equal(m.status().state, 'stopped');
  assert.ok(!existsSync(pidFile), 'stale pid file removed');
  assert.deepEqual(await m.stop(), { wasRunning: false });
});

test('stop asks the guest to power off through QMP first; rm --force ends a running machine', async () => {
  const m = Machine.open('blank2', root);
  const qmp = join(m.dir, 'qmp.sock');
  // Answers QMP as qemu does and powers off (exits) on system_powerdown.
  const script = `
    const s = require('net').createServer((c) => {
      c.write('{"QMP": {"version": {}, "capabilities": []}}\\r\\n');
      c.on('data', (d) => {
        for (const line of d.toString().split('\\n').filter(Boolean)) {
          const { execute } = JSON.parse(line);
          c.write('{"return": {}}\\r\\n');
          if (execute === 'system_powerdown') setTimeout(() => process.exit(0), 50);
        }
      });
    });
    s.listen(${JSON.stringify(qmp)});`;
  const qemu = fakeQemu(join(m.dir, 'qemu.pid'), script);
  for (let i = 0; i < 100 && !existsSync(qmp); i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(await m.stop({ timeoutMs: 10_000 }), { wasRunning: true, how: 'powered off' });
  await exited(qemu);
  assert.ok(!existsSync(qmp));

  const again = fakeQemu(join(m.dir, 'qemu.pid'));
  await new Promise((r) => setTimeout(r, 100));
  await removeMachine('blank2', { root, force: true });
  await exited(again);
  assert.ok(!existsSync(m.dir));
  await assert.rejects(removeMachine('blank2', { root }), refused('MACHINE_NOT_FOUND', /no machine blank2/));
  assert.throws(() => Machine.open('blank2', root), refused('MACHINE_NOT_FOUND', /no machine blank2/));
});

test('a machine whose configuration is unreadable is listed as broken and can be removed', async () => {
  const dir = join(root, 'broken');
  mkdirSync(dir);
  writeFileSync(join(dir, 'machine.json'), '{"format": 2}');
  mkdirSync(join(root, '.hidden.creating-x'));
  const listed = Machine.list(root).find((s) => s.name === 'broken');
  assert.equal(listed?.state, 'broken');
  assert.match(listed?.problem ?? '', /format 2 is not 1/);
  assert.ok(!Machine.list(root).some((s) => s.name.startsWith('.')));
  assert.throws(() => Machine.open('broken', root), refused('MACHINE_CONFIG', /format 2 is not 1/));
  await removeMachine('broken', { root });
  assert.ok(!existsSync(dir));
});

test('fuzz: mutated configurations give MACHINE_CONFIG or a valid configuration, never anything else', () => {
  const good = readFileSync(join(root, 'net', 'machine.json'), 'utf8');
  const random = prng(0xc0f1);
  const pieces = [
    '"',
    '{',
    '}',
    '[',
    ']',
    ',',
    ':',
    '-1',
    '1e9',
    'null',
    'true',
    '"../x"',
    '"/abs"',
    '0',
    '\\u0000',
  ];
  let accepted = 0;
  for (let round = 0; round < 5000; round++) {
    let text = good;
    for (let k = 1 + Math.floor(random() * 3); k > 0; k--) {
      const at = Math.floor(random() * text.length);
      const cut = Math.floor(random() * 6);
      text =
        text.slice(0, at) +
        (random() < 0.7 ? pieces[Math.floor(random() * pieces.length)] : '') +
        text.slice(at + cut);
    }
    try {
      const c = parseMachineConfig(text, '/m/net', 'net');
      accepted++;
      assert.ok(c.disk.owned ? !c.disk.path.includes('/') : c.disk.path.startsWith('/'));
      assert.ok(c.forwards.every((f) => f.hostPort >= 1 && f.hostPort <= 65535));
    } catch (error) {
      assert.ok(error instanceof MachineError && error.code === 'MACHINE_CONFIG', String(error));
    }
  }
  assert.ok(accepted > 0 && accepted < 5000, `${accepted} accepted`);
});

test('media: a raw image attached read-only as the last virtio disk, changed or ejected only while stopped', async () => {
  const image = join(work, 'stick.img');
  writeFileSync(image, Buffer.alloc(1 << 20));
  const m = await Machine.create({
    name: 'media',
    root,
    uki: UKI,
    vars: { path: VARS },
    tpm: 'none',
    media: image,
  });
  assert.equal(m.status().media, image);
  const d = m.dir;
  const line = qemuArguments(m.qemuOptions()).join(' ');
  assert.ok(
    line.includes(
      `-drive if=none,id=disk1,format=raw,file=${d}/disk.img -device virtio-blk-pci,drive=disk1,bootindex=2 ` +
        `-drive if=none,id=disk2,format=raw,file=${image},readonly=on -device virtio-blk-pci,drive=disk2 `,
    ),
    line,
  );
  // A machine without a boot disk: its own disk first (vda in the guest), the medium after it.
  assert.deepEqual(
    qemuArguments({
      disks: [
        { path: '/d.img', virtio: true },
        { path: '/m.img', virtio: true, readonly: true },
      ],
    }).slice(-8),
    [
      '-drive',
      'if=none,id=disk0,format=raw,file=/d.img',
      '-device',
      'virtio-blk-pci,drive=disk0',
      '-drive',
      'if=none,id=disk1,format=raw,file=/m.img,readonly=on',
      '-device',
      'virtio-blk-pci,drive=disk1',
    ],
  );

  await m.setMedia(null);
  assert.equal(Machine.open('media', root).config.media, null);
  assert.ok(!qemuArguments(m.qemuOptions()).join(' ').includes('stick.img'));
  await m.setMedia(image);
  assert.equal(Machine.open('media', root).status().media, image);
  await assert.rejects(
    m.setMedia(join(work, 'absent.img')),
    refused('MACHINE_INVALID_OPTION', /no media image/),
  );
  await assert.rejects(m.setMedia(work), refused('MACHINE_INVALID_OPTION', /not a raw disk image file/));
  await assert.rejects(
    m.setMedia(join(work, 'a,b.img')),
    refused('MACHINE_INVALID_OPTION', /no media image/),
  );
  await assert.rejects(
    Machine.create({
      name: 'media2',
      root,
      uki: UKI,
      vars: { path: VARS },
      tpm: 'none',
      media: join(work, 'x'),
    }),
    refused('MACHINE_INVALID_OPTION', /no media image/),
  );
  assert.ok(!existsSync(join(root, 'media2')));

  const qemu = fakeQemu(join(d, 'qemu.pid'));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(m.status().state, 'running');
  await assert.rejects(m.setMedia(null), refused('MACHINE_RUNNING', /stop it to change its media/));
  assert.equal(Machine.open('media', root).config.media, image);
  qemu.kill();
  await exited(qemu);

  // machine.json of a machine made before media: none; a relative path is refused.
  const config = JSON.parse(readFileSync(join(d, 'machine.json'), 'utf8'));
  delete config.media;
  assert.equal(parseMachineConfig(JSON.stringify(config), d, 'media').media, null);
  assert.throws(
    () => parseMachineConfig(JSON.stringify({ ...config, media: 'stick.img' }), d, 'media'),
    refused('MACHINE_CONFIG', /media is not an absolute path or null/),
  );
  await removeMachine('media', { root });
  assert.ok(existsSync(image), 'the medium is used in place, never removed');
});
