/**
 * `seal machine …` from the command line, without booting: create (with a network and a boot
 * disk), list in both forms, console of a machine that has not run, stop of a stopped one, rm;
 * and the command lines it refuses with one line — addresses other than 127.0.0.1, malformed
 * forwards, names with path tricks, incomplete factory steps, options that do not go together;
 * the factory step with the identity key made in the machine's TPM (--identity-in-tpm).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-machine-cli-'));
const machines = join(work, 'machines');
const env = { SEAL_MACHINES: machines };
after(() => rmSync(work, { recursive: true, force: true }));

const VARS = '/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd';
const UKI = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
const seal = (...args: string[]) => runSeal(args, { env });

test('create, list, console, stop and rm of a machine that never ran', () => {
  const created = seal(
    'machine',
    'create',
    'edge-1',
    '--uki',
    UKI,
    '--vars',
    VARS,
    '--disk-size',
    '16M',
    '--memory',
    '1G',
    '--cpus',
    '2',
    '--tpm',
    'none',
    '--registry',
    '127.0.0.1:5000',
    '--attest',
    'localhost:7443',
    '--forward',
    '8080:80',
    '--forward',
    '2222:22',
  );
  assert.equal(created.status, 0, created.stderr);
  assert.match(created.stdout, new RegExp(`Created machine edge-1 in ${machines}/edge-1`));
  assert.match(created.stdout, /registry 10\.0\.2\.100:5000 -> 127\.0\.0\.1:5000/);
  assert.match(created.stdout, /verifier 10\.0\.2\.101:7443 -> 127\.0\.0\.1:7443/);
  assert.match(created.stdout, /forward 127\.0\.0\.1:2222 -> guest:22/);

  const list = seal('machine', 'list');
  assert.equal(
    list.stdout,
    `NAME\tSTATE\tDISK\tUKI\tNETWORK\tMEDIA\nedge-1\tstopped\t${machines}/edge-1/disk.img\t${UKI}\t` +
      'registry=10.0.2.100:5000,verifier=10.0.2.101:7443,forward=8080:80,forward=2222:22\t-\n',
  );
  const json = JSON.parse(seal('machine', 'list', '--json').stdout);
  assert.deepEqual(
    json.map((m: { name: string; state: string; memory: number; cpus: number; tpm: boolean }) => [
      m.name,
      m.state,
      m.memory,
      m.cpus,
      m.tpm,
    ]),
    [['edge-1', 'stopped', 1024, 2, false]],
  );
  assert.deepEqual(json[0].network, {
    registry: '10.0.2.100:5000 -> 127.0.0.1:5000',
    attest: '10.0.2.101:7443 -> 127.0.0.1:7443',
    forwards: ['127.0.0.1:8080 -> guest:80', '127.0.0.1:2222 -> guest:22'],
  });

  const consoleOut = seal('machine', 'console', 'edge-1');
  assert.deepEqual([consoleOut.status, consoleOut.stdout], [0, '']);
  assert.match(seal('machine', 'stop', 'edge-1').stdout, /edge-1 is not running/);
  assert.equal(seal('machine', 'create', 'edge-1', '--uki', UKI, '--vars', VARS).status, 1);
  assert.match(seal('machine', 'rm', 'edge-1').stdout, /Removed edge-1/);
  assert.deepEqual(readdirSync(machines), []);
  assert.equal(seal('machine', 'list').stdout, '');
  assert.deepEqual(JSON.parse(seal('machine', 'list', '--json').stdout), []);
});

test('refused command lines, each with one line naming what is wrong', () => {
  const base = ['machine', 'create', 'm', '--uki', UKI, '--vars', VARS, '--tpm', 'none', '--disk-size', '1M'];
  const key = join(work, 'k.pem');
  writeFileSync(key, 'not a key');
  const cases: [string[], number, RegExp][] = [
    [['machine', 'create', 'm', '--uki', UKI], 2, /--vars is required/],
    [[...base, '--registry', '10.0.0.1:5000'], 2, /only reach a registry on 127\.0\.0\.1/],
    [[...base, '--registry', '0.0.0.0:5000'], 2, /only reach a registry on 127\.0\.0\.1/],
    [[...base, '--registry', '127.0.0.1:99999'], 2, /is not a TCP port/],
    [[...base, '--attest', '10.0.2.2:7443'], 2, /only reach a verifier on 127\.0\.0\.1/],
    [[...base, '--attest', '127.0.0.1:0'], 2, /--attest: "0" is not a TCP port/],
    [
      [...base, '--identity-in-tpm', '--pki', work],
      2,
      /--identity-in-tpm takes --provision-policy-key, --pki, --product and --serial/,
    ],
    [
      [
        ...base,
        '--identity-in-tpm',
        '--pki',
        work,
        '--product',
        'p',
        '--serial',
        's',
        '--provision-policy-key',
        key,
        '--device-key',
        key,
      ],
      2,
      /no --device-cert or --device-key/,
    ],
    [[...base, '--serial', 'SN1'], 2, /go with --identity-in-tpm/],
    [[...base, '--forward', '0.0.0.0:80:80'], 2, /--forward takes HOSTPORT:GUESTPORT/],
    [[...base, '--forward', '80'], 2, /--forward takes HOSTPORT:GUESTPORT/],
    [[...base, '--memory', 'lots'], 2, /--memory takes MiB/],
    [[...base, '--cpus', 'two'], 2, /--cpus takes a number/],
    [[...base, '--accel', 'xen'], 2, /--accel takes tcg or kvm/],
    [[...base, '--disk-in-place'], 2, /--disk-in-place goes with --disk/],
    [[...base, '--ca', key], 2, /--ca verifies the system of --manifest/],
    [
      [...base, '--device-cert', key],
      2,
      /factory step takes --provision-policy-key, --device-cert and --device-key/,
    ],
    [
      ['machine', 'create', '../escape', '--uki', UKI, '--vars', VARS],
      1,
      /"\.\.\/escape" is not a machine name.*\[MACHINE_NAME\]/,
    ],
    [
      ['machine', 'create', 'm', '--uki', UKI, '--vars', '/usr/share/OVMF/OVMF_VARS_4M.fd'],
      1,
      /has no PK.*\[MACHINE_INVALID_OPTION\]/,
    ],
    [['machine', 'start', 'nothing'], 1, /no machine nothing in .*\[MACHINE_NOT_FOUND\]/],
    [['machine', 'start', 'nothing', '--detach', '--timeout', '10s'], 1, /no machine nothing/],
    [['machine', 'stop', '/etc'], 1, /not a machine name/],
    [['machine', 'rm', 'nothing'], 1, /no machine nothing.*\[MACHINE_NOT_FOUND\]/],
    [['machine', 'console', 'nothing'], 1, /no machine nothing/],
  ];
  for (const [args, status, pattern] of cases) {
    const r = seal(...args);
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  assert.ok(!existsSync(join(machines, 'm')));
  // Options that need a machine to exist are checked with it.
  assert.equal(seal(...base).status, 0);
  for (const [args, pattern] of [
    [
      ['machine', 'start', 'm', '--detach', '--timeout', '10s'],
      /--timeout is for a machine in the foreground/,
    ],
    [['machine', 'console', 'm', '--json'], /the console is text: no --json/],
  ] as const) {
    const r = seal(...args);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, pattern);
  }
  assert.equal(seal('machine', 'rm', 'm').status, 0);
});

test('the factory step with --identity-in-tpm: the identity made in the TPM and its certificate written to the PKI', () => {
  const pki = join(work, 'pki');
  const product = '6d1c3b2a-9e8f-4a7b-8c6d-5e4f3a2b1c0d';
  assert.equal(seal('pki', 'init', pki).status, 0);
  const policy = join(work, 'policy.pub');
  writeFileSync(
    policy,
    generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }),
  );
  const created = seal(
    'machine',
    'create',
    'attesting',
    '--uki',
    UKI,
    '--vars',
    VARS,
    '--disk-size',
    '16M',
    '--provision-policy-key',
    policy,
    '--identity-in-tpm',
    '--pki',
    pki,
    '--product',
    product,
    '--serial',
    'SN-CLI1',
    '--attest',
    '7443',
  );
  assert.equal(created.status, 0, created.stderr);
  assert.match(created.stdout, /TPM {2}swtpm, provisioned/);
  assert.ok(created.stdout.includes(`identity key in the TPM, certified: ${pki}/devices/SN-CLI1.pem`));
  assert.match(created.stdout, /verifier 10\.0\.2\.101:7443 -> 127\.0\.0\.1:7443/);
  // openssl: issued by the device CA, for this product and serial.
  const cert = join(pki, 'devices/SN-CLI1.pem');
  execFileSync('openssl', ['verify', '-CAfile', join(pki, 'device-ca.pem'), cert], { stdio: 'pipe' });
  const subject = execFileSync('openssl', ['x509', '-in', cert, '-noout', '-subject'], { encoding: 'utf8' });
  assert.ok(subject.includes(`PID:${product} SN:SN-CLI1`), subject);
  assert.ok(!existsSync(join(pki, 'devices/SN-CLI1.key')), 'no key file: the key stays in the TPM');
  assert.equal(seal('machine', 'rm', 'attesting').status, 0);
});

test('seal machine create --media and seal machine media: attached, listed, swapped, ejected; refused in one line', () => {
  const stick = join(work, 'stick.img');
  writeFileSync(stick, Buffer.alloc(1 << 20));
  const created = seal(
    'machine',
    'create',
    'edge-m',
    '--uki',
    UKI,
    '--vars',
    VARS,
    '--disk-size',
    '16M',
    '--tpm',
    'none',
    '--media',
    stick,
  );
  assert.equal(created.status, 0, created.stderr);
  assert.match(created.stdout, new RegExp(`media ${stick} \\(read-only\\)`));
  assert.match(
    seal('machine', 'list').stdout,
    new RegExp(`\nedge-m\tstopped\t\\S+/disk\\.img\t${UKI}\t-\t${stick}\n`),
  );
  const ejected = seal('machine', 'media', 'edge-m', '--eject', '--json');
  assert.deepEqual(JSON.parse(ejected.stdout), { name: 'edge-m', media: null });
  assert.match(seal('machine', 'list').stdout, /\nedge-m\tstopped\t\S+\t\S+\t-\t-\n/);
  assert.match(
    seal('machine', 'media', 'edge-m', stick).stdout,
    new RegExp(`edge-m: media ${stick} \\(read-only\\)`),
  );
  for (const [args, message] of [
    [['edge-m'], /give the image FILE, or --eject/],
    [['edge-m', stick, '--eject'], /give the image FILE, or --eject/],
    [['edge-m', join(work, 'absent.img')], /no media image at/],
    [['nobody', stick], /no machine nobody/],
  ] as const) {
    const r = seal('machine', 'media', ...args);
    assert.equal(r.status === 0, false, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, message);
  }
  assert.match(seal('machine', 'rm', 'edge-m').stdout, /Removed edge-m/);
  assert.ok(existsSync(stick));
});
