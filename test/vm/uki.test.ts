/**
 * Seal's boot image under real firmware: qemu (TCG) with OVMF's Secure Boot code, a varstore Seal
 * enrolled and swtpm. Everything is made with the `seal` CLI: keys, varstores, the UKI (Debian's
 * 6.12 kernel with a status initrd), signatures, .auth updates, predictions, replays.
 *  1. A signed UKI boots in Secure Boot mode; PCRs 4, 7 and 11 (SHA-256 and SHA-384) read from the
 *     TPM equal `seal pcr predict`; `seal eventlog replay` of the log the guest printed equals
 *     every PCR of every bank; a db append signed by KEK is accepted by the firmware, one signed
 *     by another key refused.
 *  2. The firmware refuses, in one boot, the UKI unsigned, signed by a key not in db, changed by
 *     one byte after signing, and signed by a key also in dbx — then boots the good one;
 *     `seal uki verify --db` gives the same verdicts.
 *  3. systemd-boot (signed with the db key) starting a UKI on Debian 12's systemd 252 stub, signed
 *     by a kernel-signing certificate from `seal pki kernel new` whose CA is the second db entry:
 *     boots, and the prediction (both images in PCR 4, both db entries as PCR 7 authorities, the
 *     252 stub's section list) holds.
 *  4. Without Secure Boot (Debian's empty varstore), on both stubs: boots, the prediction (which
 *     then includes the kernel the stub hands to the firmware) holds, and `seal pcr predict` says
 *     it is not a Secure Boot varstore.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';
import { BOOT_MANAGER_254, opensslCertificate, stub252, testKernel } from '../helpers/efi.ts';
import { bootUki, espWith, retries, statusInitrd, type UkiBoot } from '../helpers/uki-vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-uki-vm-'));
after(async () => {
  if (retries.count) console.error(`uki VM tests: ${retries.count} crashed guest(s) booted again`);
  await rm(work, { recursive: true, force: true });
});

const EMPTY_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const f = (name: string) => join(work, name);

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function sealJson<T>(...args: string[]): T {
  return JSON.parse(seal(...args, '--json')) as T;
}

type Values = Record<string, Record<string, string>>;

/** Asserts that `boot`'s PCRs equal `seal pcr predict` for the given PCRs and banks. */
function assertPredicted(
  boot: UkiBoot,
  uki: string,
  vars: string,
  pcrs = [4, 7, 11],
  bootManager?: string,
): void {
  const prediction = sealJson<{ values: Values }>(
    'pcr',
    'predict',
    '--uki',
    uki,
    ...(bootManager ? ['--boot-manager', bootManager] : []),
    '--vars',
    vars,
    '--banks',
    'sha256,sha384',
    '--pcrs',
    pcrs.join(','),
  );
  for (const bank of ['sha256', 'sha384'])
    for (const pcr of pcrs)
      assert.equal(
        prediction.values[bank]![pcr],
        boot.pcrs[bank]?.[pcr],
        `${bank} PCR ${pcr} of ${uki}\n${boot.output.slice(-3000)}`,
      );
}

/**
 * Asserts that the event log the guest printed replays to the live value of every PCR it extends,
 * in every bank (PCR 10 is extended by IMA after boot, outside this log).
 */
function assertReplays(boot: UkiBoot, name: string): void {
  assert.ok(boot.eventLog, 'the guest printed its event log');
  const log = f(`${name}.log`);
  writeFileSync(log, boot.eventLog);
  const replay = sealJson<{ values: Values }>('eventlog', 'replay', log, '--quiet');
  const lines: string[] = [];
  for (const [bank, pcrs] of Object.entries(boot.pcrs))
    for (const [n, live] of Object.entries(pcrs))
      if (replay.values[bank]?.[n] !== undefined) lines.push(`${bank} ${n} ${live}`);
  for (const bank of ['sha1', 'sha256', 'sha384', 'sha512'])
    for (const pcr of [0, 1, 2, 3, 4, 5, 6, 7, 9, 11])
      assert.ok(lines.includes(`${bank} ${pcr} ${boot.pcrs[bank]![pcr]}`), `${bank} ${pcr} replayed`);
  const expected = f(`${name}.pcrs`);
  writeFileSync(expected, `${lines.join('\n')}\n`);
  const r = runSeal(['eventlog', 'replay', log, '--expect', expected, '--quiet']);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.equal([...r.stdout.matchAll(/^match /gm)].length, lines.length);
}

let kernel: string;
const osRelease = () => f('os-release');

before(async () => {
  kernel = testKernel();
  writeFileSync(
    osRelease(),
    'NAME="Seal test"\nID=seal-test\nPRETTY_NAME="Seal test system"\nVERSION_ID=1\n',
  );
  seal('secureboot', 'keys', f('keys'));
  seal('pki', 'kernel', 'new', f('pki'));
  const foreign = opensslCertificate(work, 'foreign');
  const revoked = opensslCertificate(work, 'revoked');
  seal(
    'secureboot',
    'enroll',
    EMPTY_VARS,
    f('varsA.fd'),
    '--pk',
    f('keys/PK.crt'),
    '--kek',
    f('keys/KEK.crt'),
    '--db',
    f('keys/db.crt'),
    '--db',
    f('pki/kernel-ca.pem'),
  );
  seal(
    'secureboot',
    'enroll',
    EMPTY_VARS,
    f('varsB.fd'),
    '--pk',
    f('keys/PK.crt'),
    '--kek',
    f('keys/KEK.crt'),
    '--db',
    f('keys/db.crt'),
    '--db',
    revoked.cert,
    '--dbx',
    revoked.cert,
  );
  // db updates for the running system: one signed by KEK, one by a key the firmware does not know.
  seal(
    'secureboot',
    'auth',
    'db',
    f('add.auth'),
    '--append',
    '--add',
    foreign.cert,
    '--time',
    '2025-01-01T00:00:00Z',
    '--key',
    f('keys/KEK.key'),
    '--cert',
    f('keys/KEK.crt'),
  );
  seal(
    'secureboot',
    'auth',
    'db',
    f('bad.auth'),
    '--append',
    '--add',
    foreign.cert,
    '--time',
    '2025-01-01T00:00:00Z',
    '--key',
    foreign.key,
    '--cert',
    foreign.cert,
  );
  await statusInitrd(f('initrd.cpio'), {
    files: { 'add.auth': f('add.auth'), 'bad.auth': f('bad.auth') },
    script: `
db=/sys/firmware/efi/efivars/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f
before=$(wc -c < $db)
for name in bad add; do
  printf '\\147\\000\\000\\000' > /tmp/$name
  cat $name.auth >> /tmp/$name
  chattr -i $db 2>/dev/null
  if dd if=/tmp/$name of=$db bs=1M conv=notrunc 2>/dev/null; then echo "SEAL-AUTH $name accepted"; else echo "SEAL-AUTH $name refused"; fi
done
echo "SEAL-DB $before $(wc -c < $db)"
`,
  });
  const build = (out: string, stub?: string) =>
    seal(
      'uki',
      'build',
      '--linux',
      kernel,
      '--initrd',
      f('initrd.cpio'),
      '--cmdline',
      'console=ttyS0 quiet panic=-1',
      '--os-release',
      osRelease(),
      ...(stub ? ['--stub', stub] : []),
      out,
    );
  build(f('unsigned.efi'));
  seal(
    'uki',
    'sign',
    f('unsigned.efi'),
    f('good.efi'),
    '--key',
    f('keys/db.key'),
    '--cert',
    f('keys/db.crt'),
  );
  seal('uki', 'sign', f('unsigned.efi'), f('foreign.efi'), '--key', foreign.key, '--cert', foreign.cert);
  seal('uki', 'sign', f('unsigned.efi'), f('revoked.efi'), '--key', revoked.key, '--cert', revoked.cert);
  // One byte of the signed image's .osrel changed.
  const inspection = sealJson<{ sections: { name: string; fileOffset: number }[] }>(
    'uki',
    'inspect',
    f('good.efi'),
  );
  const osrel = inspection.sections.find((s) => s.name === '.osrel')!;
  const tampered = readFileSync(f('good.efi'));
  tampered[osrel.fileOffset + 6]! ^= 0x20;
  writeFileSync(f('tampered.efi'), tampered);
  build(f('unsigned252.efi'), stub252());
  seal(
    'uki',
    'sign',
    BOOT_MANAGER_254,
    f('systemd-boot.efi'),
    '--key',
    f('keys/db.key'),
    '--cert',
    f('keys/db.crt'),
  );
  seal(
    'uki',
    'sign',
    f('unsigned252.efi'),
    f('good252.efi'),
    '--key',
    f('pki/kernel/uki.key'),
    '--cert',
    f('pki/kernel/uki.pem'),
    '--chain',
    f('pki/kernel-ca.pem'),
  );
});

test('a Seal-signed UKI boots in Secure Boot mode from a Seal-enrolled varstore; PCRs equal the prediction and the replayed log', async () => {
  const boot = await bootUki({ esps: [espWith(f('esp-good'), f('good.efi'))], varstore: f('varsA.fd') });
  assert.ok(boot.booted, boot.output.slice(-3000));
  assert.equal(boot.secureBoot, 1);
  assertPredicted(boot, f('good.efi'), f('varsA.fd'));
  assertReplays(boot, 'secure');
  // The replay also equals the prediction, compared by the CLI itself.
  writeFileSync(
    f('prediction.json'),
    seal(
      'pcr',
      'predict',
      '--uki',
      f('good.efi'),
      '--vars',
      f('varsA.fd'),
      '--banks',
      'sha256,sha384',
      '--json',
    ),
  );
  const replay = runSeal([
    'eventlog',
    'replay',
    f('secure.log'),
    '--expect',
    f('prediction.json'),
    '--quiet',
  ]);
  assert.equal(replay.status, 0, replay.stdout + replay.stderr);
  const wrong = runSeal([
    'eventlog',
    'replay',
    f('secure.log'),
    '--pcr',
    `sha256:7=${'00'.repeat(32)}`,
    '--quiet',
  ]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /sha256 PCR 7 replays to [0-9a-f]{64}, not 0{64} \[MEASURE_PCR_MISMATCH\]/);
  // Signed variable updates: the firmware takes the KEK-signed one only.
  assert.match(boot.extra, /SEAL-AUTH bad refused/);
  assert.match(boot.extra, /SEAL-AUTH add accepted/);
  const [, sizeBefore, sizeAfter] = /SEAL-DB (\d+) (\d+)/.exec(boot.extra)!.map(Number);
  assert.ok(sizeAfter! > sizeBefore!, boot.extra);
});

test('the firmware refuses the UKI unsigned, foreign-signed, changed after signing and signed by a dbx key; seal uki verify agrees', async () => {
  const order = ['unsigned', 'foreign', 'tampered', 'revoked', 'good'];
  const boot = await bootUki({
    esps: order.map((n) => espWith(f(`esp-${n}`), f(`${n}.efi`))),
    varstore: f('varsB.fd'),
  });
  assert.deepEqual(
    boot.refused.map((r) => r.split(' ')[0]),
    ['Boot0001', 'Boot0002', 'Boot0003', 'Boot0004'],
    boot.output.slice(0, 5000),
  );
  // No kernel ran before the firmware started the fifth disk.
  const started = boot.output.indexOf('BdsDxe: starting Boot0005');
  assert.ok(started > 0, boot.output.slice(0, 5000));
  assert.doesNotMatch(boot.output.slice(0, started), /EFI stub|Linux version/);
  assert.ok(boot.booted, boot.output.slice(-3000));
  // Refused images are measured into PCR 4 too, but PCR 7 and 11 are those of the good UKI alone.
  assertPredicted(boot, f('good.efi'), f('varsB.fd'), [7, 11]);
  assertReplays(boot, 'refusals');
  const verdicts: [string, RegExp][] = [
    ['unsigned', /is not signed \[PKI_NOT_SIGNED\]/],
    ['foreign', /no signature is vouched for .* \[PKI_UNTRUSTED\]/],
    [
      'tampered',
      /signature 1: the image's sha256 digest .* \(the image changed after signing\) \[PKI_BAD_SIGNATURE\]/,
    ],
    ['revoked', /forbidden list \(dbx\) .* \[PKI_UNTRUSTED\]/],
  ];
  for (const [name, message] of verdicts) {
    const r = runSeal(['uki', 'verify', f(`${name}.efi`), '--db', f('varsB.fd')]);
    assert.equal(r.status, 1, `${name}: ${r.stdout}`);
    assert.match(r.stderr, message, name);
  }
  seal('uki', 'verify', f('good.efi'), '--db', f('varsB.fd'));
});

test("systemd-boot starting a UKI on Debian 12's 252 stub, signed under the kernel-signing CA in db, with Secure Boot; PCRs equal the prediction", async () => {
  // The ESP of a device with a boot manager: systemd-boot (signed with the db key) finds the UKI
  // (signed with a kernel-signing certificate, whose CA is the second db entry) in EFI/Linux.
  const esp = f('esp-252');
  mkdirSync(join(esp, 'EFI/BOOT'), { recursive: true });
  mkdirSync(join(esp, 'EFI/Linux'), { recursive: true });
  mkdirSync(join(esp, 'loader'), { recursive: true });
  copyFileSync(f('systemd-boot.efi'), join(esp, 'EFI/BOOT/BOOTX64.EFI'));
  copyFileSync(f('good252.efi'), join(esp, 'EFI/Linux/seal.efi'));
  writeFileSync(join(esp, 'loader/loader.conf'), 'timeout 0\n');
  const boot = await bootUki({ esps: [esp], varstore: f('varsA.fd') });
  assert.ok(boot.booted, boot.output.slice(-3000));
  assert.equal(boot.secureBoot, 1);
  assert.doesNotMatch(boot.output, /Overlapping PE sections/);
  assertPredicted(boot, f('good252.efi'), f('varsA.fd'), [4, 7, 11], f('systemd-boot.efi'));
  const prediction = sealJson<{ events: { pcr: number; type: string; description: string }[] }>(
    'pcr',
    'predict',
    '--uki',
    f('good252.efi'),
    '--boot-manager',
    f('systemd-boot.efi'),
    '--vars',
    f('varsA.fd'),
    '--events',
  );
  const authorities = prediction.events.filter((e) => e.type === 'EV_EFI_VARIABLE_AUTHORITY');
  assert.equal(authorities.length, 2);
  assert.match(authorities[0]!.description, /the boot manager .*Seal Signature Database Key/);
  assert.match(authorities[1]!.description, /the UKI .*Seal kernel signing CA/);
  assertReplays(boot, 'stub252');
});

for (const [stub, uki] of [
  ['254', 'good.efi'],
  ['252', 'unsigned252.efi'],
] as const)
  test(`without Secure Boot (systemd ${stub} stub) the prediction still holds (the kernel is then measured too) and says Secure Boot is off`, async () => {
    const boot = await bootUki({ esps: [espWith(f(`esp-plain${stub}`), f(uki))], varstore: EMPTY_VARS });
    assert.ok(boot.booted, boot.output.slice(-3000));
    assert.equal(boot.secureBoot, 0);
    assertPredicted(boot, f(uki), EMPTY_VARS);
    assertReplays(boot, `plain${stub}`);
    const r = runSeal(['pcr', 'predict', '--uki', f(uki), '--vars', EMPTY_VARS]);
    assert.equal(r.status, 0);
    assert.match(r.stderr, /is not Secure Boot enabled \(no PK: setup mode\)/);
  });
