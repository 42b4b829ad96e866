/**
 * PCR prediction on the host (the VM tests compare it with real firmware): the events it
 * predicts with and without Secure Boot, with a boot manager, and the refusals — a UKI the
 * firmware would not start, an unknown boot phase — as typed errors naming the reason.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CALLING_EFI_APPLICATION, MeasureError, predictPcrs } from '../../src/measure/index.ts';
import { authenticodeDigest, withPeImage } from '../../src/pe/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { BOOT_MANAGER_254, stub252, testKernel } from '../helpers/efi.ts';
import { opensslKeyPair } from '../helpers/keys.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-pcr-'));
after(() => rm(work, { recursive: true, force: true }));
const f = (name: string) => join(work, name);

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

before(() => {
  seal('secureboot', 'keys', f('keys'));
  seal(
    'secureboot',
    'enroll',
    '/usr/share/OVMF/OVMF_VARS_4M.fd',
    f('vars.fd'),
    '--pk',
    f('keys/PK.crt'),
    '--kek',
    f('keys/KEK.crt'),
    '--db',
    f('keys/db.crt'),
  );
  seal(
    'uki',
    'build',
    '--linux',
    testKernel(),
    '--cmdline',
    'quiet',
    f('uki.efi'),
    '--key',
    f('keys/db.key'),
    '--cert',
    f('keys/db.crt'),
  );
  seal('uki', 'build', '--linux', testKernel(), '--cmdline', 'quiet', f('unsigned.efi'));
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
});

const kinds = (p: Awaited<ReturnType<typeof predictPcrs>>, pcr: number) =>
  p.events.filter((e) => e.pcr === pcr).map((e) => e.type);

test('with Secure Boot: the policy, the separator, the db authority, the UKI; PCR 11 from the stub', async () => {
  const p = await predictPcrs({ uki: f('uki.efi'), varstore: f('vars.fd'), banks: ['sha256', 'sha384'] });
  assert.equal(p.secureBoot, true);
  assert.deepEqual(p.warnings, []);
  assert.equal(p.stubVersion, 254);
  assert.deepEqual(kinds(p, 7), [
    ...Array(5).fill('EV_EFI_VARIABLE_DRIVER_CONFIG'),
    'EV_SEPARATOR',
    'EV_EFI_VARIABLE_AUTHORITY',
  ]);
  assert.deepEqual(kinds(p, 4), ['EV_EFI_ACTION', 'EV_SEPARATOR', 'EV_EFI_BOOT_SERVICES_APPLICATION']);
  assert.equal(p.events.find((e) => e.type === 'EV_EFI_ACTION')!.description, CALLING_EFI_APPLICATION);
  const app = p.events.find((e) => e.type === 'EV_EFI_BOOT_SERVICES_APPLICATION')!;
  assert.deepEqual(
    app.digests.sha256,
    withPeImage(f('uki.efi'), (i) => authenticodeDigest(i, 'sha256', { pad: false })),
  );
  assert.deepEqual(
    p.events.filter((e) => e.pcr === 11).map((e) => e.description.split(' ')[0]),
    ['.linux', '.linux', '.cmdline', '.cmdline', '.uname', '.uname', '.sbat', '.sbat'],
  );
  assert.equal(p.values.sha384![11]!.length, 48);
});

test('without Secure Boot: no authority, the kernel measured after the UKI, and a warning', async () => {
  const p = await predictPcrs({ uki: f('uki.efi'), varstore: '/usr/share/OVMF/OVMF_VARS_4M.fd' });
  assert.equal(p.secureBoot, false);
  assert.match(p.warnings[0]!, /is not Secure Boot enabled \(no PK: setup mode\)/);
  assert.deepEqual(kinds(p, 7), [...Array(5).fill('EV_EFI_VARIABLE_DRIVER_CONFIG'), 'EV_SEPARATOR']);
  const apps = p.events.filter((e) => e.type === 'EV_EFI_BOOT_SERVICES_APPLICATION');
  assert.equal(apps.length, 2);
  assert.deepEqual(
    apps[1]!.digests.sha256,
    withPeImage(testKernel(), (i) => authenticodeDigest(i, 'sha256', { pad: false })),
  );
  // Without a varstore at all: the same, and it says so.
  const bare = await predictPcrs({ uki: f('uki.efi') });
  assert.match(bare.warnings[0]!, /no varstore given/);
  assert.deepEqual(bare.values, p.values);
});

test("Debian 12's 252 stub measures fewer sections (and, without Secure Boot, the kernel too)", async () => {
  seal('uki', 'build', '--linux', testKernel(), '--cmdline', 'quiet', '--stub', stub252(), f('uki252.efi'));
  const p = await predictPcrs({ uki: f('uki252.efi') });
  assert.equal(p.stubVersion, 252);
  assert.equal(p.events.filter((e) => e.type === 'EV_EFI_BOOT_SERVICES_APPLICATION').length, 2);
  assert.deepEqual(
    p.events.filter((e) => e.pcr === 11).map((e) => e.description.split(' ')[0]),
    ['.linux', '.linux', '.cmdline', '.cmdline'],
  );
});

test('with a boot manager: both images measured, the shared db authority once', async () => {
  const p = await predictPcrs({
    uki: f('uki.efi'),
    bootManager: f('systemd-boot.efi'),
    varstore: f('vars.fd'),
  });
  assert.equal(p.events.filter((e) => e.type === 'EV_EFI_BOOT_SERVICES_APPLICATION').length, 2);
  assert.equal(p.events.filter((e) => e.type === 'EV_EFI_VARIABLE_AUTHORITY').length, 1);
});

test('refusals: an image the firmware would not start, an unknown phase, a PE that is not a UKI', async () => {
  await assert.rejects(
    predictPcrs({ uki: f('unsigned.efi'), varstore: f('vars.fd') }),
    (e: unknown) =>
      e instanceof MeasureError &&
      /the firmware would refuse the UKI .*: the image is not signed/.test(e.message),
  );
  await assert.rejects(
    predictPcrs({ uki: f('uki.efi'), phases: ['enter-initrd', 'midnight'] }),
    /unknown boot phase "midnight"/,
  );
  await assert.rejects(predictPcrs({ uki: BOOT_MANAGER_254 }), /has no \.linux section: not a UKI/);
  const r = runSeal(['pcr', 'predict', '--uki', f('unsigned.efi'), '--vars', f('vars.fd')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /would refuse the UKI/);
});

test('seal tpm policy sign --uki --vars signs for the predicted PCR 7; a varstore without Secure Boot is refused', async () => {
  const { key } = opensslKeyPair(f('policy.key'));
  const predicted = (await predictPcrs({ uki: f('uki.efi'), varstore: f('vars.fd'), pcrs: [7] })).values
    .sha256![7]!;
  const byUki = JSON.parse(
    seal(
      'tpm',
      'policy',
      'sign',
      '--key',
      key,
      '--uki',
      f('uki.efi'),
      '--vars',
      f('vars.fd'),
      '--version',
      '1',
      f('by-uki.json'),
      '--json',
    ),
  );
  const byValue = JSON.parse(
    seal(
      'tpm',
      'policy',
      'sign',
      '--key',
      key,
      '--pcr7',
      predicted.toString('hex'),
      '--version',
      '1',
      f('by-value.json'),
      '--json',
    ),
  );
  assert.equal(byUki.approvedPolicy, byValue.approvedPolicy);
  const r = runSeal([
    'tpm',
    'policy',
    'sign',
    '--key',
    key,
    '--uki',
    f('uki.efi'),
    '--vars',
    '/usr/share/OVMF/OVMF_VARS_4M.fd',
    '--version',
    '1',
    f('x.json'),
  ]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /not a Secure Boot varstore/);
});
