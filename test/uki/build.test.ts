/**
 * UKI assembly on systemd's stubs (254 and Debian 12's 252): reproducible bytes, signed in the
 * same pass exactly as `seal uki sign` would sign it, a layout binutils reads back (sections,
 * alignment, SizeOfImage, checksum), section contents objcopy extracts, SBAT merging, PCR 11 equal
 * to systemd-measure's for every bank and boot phase, and bounded memory for a large initrd.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { imageChecksum, withPeImage } from '../../src/pe/index.ts';
import { buildUki, signPe, UkiError, verifyPe } from '../../src/uki/index.ts';
import { runSeal, SEAL_BIN } from '../helpers/cli.ts';
import { opensslCertificate, STUB_254, stub252, testKernel } from '../helpers/efi.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-uki-build-'));
after(() => rm(work, { recursive: true, force: true }));
const f = (name: string) => join(work, name);
let keys: { key: string; cert: string };
const MEASURE = '/usr/lib/systemd/systemd-measure';

before(() => {
  keys = opensslCertificate(work, 'signer');
  writeFileSync(f('initrd1'), Buffer.from('first initrd, 27 bytes long'));
  writeFileSync(f('initrd2'), Buffer.alloc(5000, 2));
  writeFileSync(f('os-release'), 'ID=seal-test\nPRETTY_NAME="Seal test"\n');
});

const inputs = () => ({
  linux: testKernel(),
  initrds: [f('initrd1'), f('initrd2')],
  cmdline: 'console=ttyS0 rw',
  osRelease: f('os-release'),
});

function section(image: string, name: string): Buffer {
  const out = f(`extract${name}`);
  execFileSync('objcopy', ['-O', 'binary', `--only-section=${name}`, image, out]);
  return readFileSync(out);
}

test('the same inputs give the same bytes; signing while building equals building then signing', async () => {
  const signer = {
    key: createPrivateKey(readFileSync(keys.key)),
    certificates: [new X509Certificate(readFileSync(keys.cert))],
  };
  await buildUki(f('a.efi'), inputs());
  await buildUki(f('b.efi'), inputs());
  assert.deepEqual(readFileSync(f('a.efi')), readFileSync(f('b.efi')));
  const built = await buildUki(f('signed-in-pass.efi'), { ...inputs(), sign: signer });
  await signPe(f('a.efi'), f('signed-after.efi'), signer);
  assert.deepEqual(readFileSync(f('signed-in-pass.efi')), readFileSync(f('signed-after.efi')));
  assert.equal(built.signedDigest, verifyPe(f('signed-in-pass.efi')).signatures[0]!.digest);
  assert.equal(spawnSync('sbverify', ['--cert', keys.cert, f('signed-in-pass.efi')]).status, 0);
});

for (const [name, stub] of [
  ['254', () => STUB_254],
  ['252', stub252],
] as const) {
  test(`on the systemd ${name} stub: binutils reads the layout back, sections hold the inputs, the checksum is right`, async () => {
    const out = f(`layout${name}.efi`);
    const result = await buildUki(out, { ...inputs(), stub: stub() });
    const objdump = execFileSync('objdump', ['-h', '-p', out], { encoding: 'utf8' });
    const sections = [
      ...objdump.matchAll(/^\s+\d+ (\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)/gm),
    ].map((m) => ({
      name: m[1]!,
      size: Number.parseInt(m[2]!, 16),
      offset: Number.parseInt(m[4]!, 16),
    }));
    const added = ['.osrel', '.cmdline', '.uname', '.initrd', '.linux'];
    assert.deepEqual(
      sections.slice(-5).map((s) => s.name),
      added,
    );
    withPeImage(out, (image) => {
      const { sectionAlignment, fileAlignment, sizeOfImage, checkSum } = image.headers;
      assert.equal(checkSum, imageChecksum(image));
      let previousEnd = 0;
      for (const s of image.sections) {
        assert.ok(s.virtualAddress >= previousEnd, `${s.name} overlaps the section before it`);
        previousEnd = s.virtualAddress + s.virtualSize;
        assert.equal(s.pointerToRawData % fileAlignment, 0);
      }
      for (const s of image.sections.slice(-5)) assert.equal(s.virtualAddress % 4096, 0, s.name);
      assert.equal(sizeOfImage, Math.ceil(previousEnd / sectionAlignment) * sectionAlignment);
      assert.equal(image.size % fileAlignment, 0);
    });
    assert.equal(result.uname, '6.12.95+deb12-cloud-amd64');
    assert.deepEqual(section(out, '.cmdline'), Buffer.from('console=ttyS0 rw'));
    assert.deepEqual(section(out, '.osrel'), readFileSync(f('os-release')));
    assert.deepEqual(section(out, '.uname'), Buffer.from(result.uname!));
    // Several initrds are concatenated, each padded to 4 bytes.
    assert.deepEqual(
      section(out, '.initrd'),
      Buffer.concat([readFileSync(f('initrd1')), Buffer.alloc(1), readFileSync(f('initrd2'))]),
    );
    assert.deepEqual(section(out, '.linux'), readFileSync(testKernel()));
    // The stub's own sections are untouched (its .sbat aside).
    withPeImage(stub(), (original) => {
      for (const s of original.sections.filter((s) => s.name !== '.sbat'))
        assert.deepEqual(section(out, s.name), original.sectionData(s, { raw: true }), s.name);
    });
  });
}

test("SBAT: the stub's lines, then the default UKI line or the given ones; what does not fit is refused or kept", async () => {
  await buildUki(f('sbat-default.efi'), inputs());
  assert.equal(
    section(f('sbat-default.efi'), '.sbat').toString(),
    `${section(STUB_254, '.sbat').toString().replace(/\0+$/, '')}uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n\0`,
  );
  await buildUki(f('sbat-custom.efi'), {
    ...inputs(),
    sbat: 'seal-demo,2,Seal,demo,1,https://example.org/\n',
  });
  assert.match(
    section(f('sbat-custom.efi'), '.sbat').toString(),
    /systemd,1,The systemd Developers.*\nseal-demo,2,Seal,demo,1,https:\/\/example.org\/\n\0$/s,
  );
  await assert.rejects(buildUki(f('sbat-bad.efi'), { ...inputs(), sbat: 'not sbat' }), /is not an SBAT line/);
  await assert.rejects(
    buildUki(f('sbat-long.efi'), { ...inputs(), sbat: `long,1,${'x'.repeat(400)},a,1,https://example.org/` }),
    (e: unknown) => e instanceof UkiError && e.code === 'UKI_BAD_SECTION' && /does not fit/.test(e.message),
  );
  // Debian 12's stub has 256 bytes of room: the default line does not fit, the stub's SBAT stays.
  const r = await buildUki(f('sbat-252.efi'), { ...inputs(), stub: stub252() });
  assert.match(r.warnings.join('\n'), /kept as it is/);
  assert.deepEqual(section(f('sbat-252.efi'), '.sbat'), section(stub252(), '.sbat'));
});

test('PCR 11 of a UKI equals systemd-measure calculate, for every bank and every boot phase', async () => {
  const out = f('measure.efi');
  // Every section systemd-stub 254 measures: a splash (BMP header), a device tree, a PCR public key.
  writeFileSync(f('splash.bmp'), Buffer.concat([Buffer.from('BM'), Buffer.alloc(200, 3)]));
  writeFileSync(f('tree.dtb'), Buffer.from('d00dfeed00000100', 'hex'));
  writeFileSync(f('pcrpkey.pem'), execFileSync('openssl', ['pkey', '-in', keys.key, '-pubout']));
  await buildUki(out, {
    ...inputs(),
    sbat: 'seal-test,1,Seal,test,1,https://example.org/',
    splash: f('splash.bmp'),
    dtb: f('tree.dtb'),
    pcrpkey: f('pcrpkey.pem'),
  });
  const files = [
    '.linux',
    '.osrel',
    '.cmdline',
    '.initrd',
    '.splash',
    '.dtb',
    '.uname',
    '.sbat',
    '.pcrpkey',
  ].map((name) => {
    const path = f(`measure${name}`);
    writeFileSync(path, section(out, name));
    return `--${name.slice(1)}=${path}`;
  });
  const banks = ['sha1', 'sha256', 'sha384', 'sha512'];
  const measured = execFileSync(
    MEASURE,
    ['calculate', ...files, ...banks.map((b) => `--bank=${b}`), '--phase=:'],
    {
      encoding: 'utf8',
    },
  );
  const inspection = JSON.parse(
    runSeal(['uki', 'inspect', out, '--banks', banks.join(','), '--json']).stdout,
  ) as {
    pcr11: Record<string, string>;
    sections: { name: string; measured: boolean }[];
  };
  assert.deepEqual(
    inspection.sections.filter((s) => s.measured).map((s) => s.name),
    ['.sbat', '.osrel', '.cmdline', '.dtb', '.uname', '.splash', '.pcrpkey', '.initrd', '.linux'],
  );
  for (const bank of banks)
    assert.match(measured, new RegExp(`^11:${bank}=${inspection.pcr11[bank]}$`, 'm'), bank);
  // The boot phases systemd extends afterwards.
  const phases = execFileSync(MEASURE, ['calculate', ...files, '--bank=sha256'], { encoding: 'utf8' })
    .trim()
    .split('\n');
  const words = [
    'enter-initrd',
    'enter-initrd,leave-initrd',
    'enter-initrd,leave-initrd,sysinit',
    'enter-initrd,leave-initrd,sysinit,ready',
  ];
  assert.equal(phases.length, words.length);
  for (const [i, list] of words.entries()) {
    const r = runSeal(['pcr', 'predict', '--uki', out, '--pcrs', '11', '--phases', list]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim().replace('sha256:11=', '11:sha256='), phases[i]);
  }
});

test('a large initrd streams through: 256 MiB in, a few dozen MiB of memory', (t) => {
  const big = f('big-initrd');
  writeFileSync(big, '');
  truncateSync(big, 256 << 20);
  const r = spawnSync(
    '/usr/bin/time',
    [
      '-f',
      'maxrss %M',
      SEAL_BIN,
      'uki',
      'build',
      '--linux',
      testKernel(),
      '--initrd',
      big,
      f('big.efi'),
      '--key',
      keys.key,
      '--cert',
      keys.cert,
    ],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const kib = Number(/maxrss (\d+)/.exec(r.stderr)![1]);
  t.diagnostic(`${kib} KiB resident`);
  assert.ok(kib < 160 * 1024, `${kib} KiB resident`);
  assert.equal(spawnSync('sbverify', ['--cert', keys.cert, f('big.efi')]).status, 0);
});

test('stubs that cannot take the sections are refused', async () => {
  await signPe(STUB_254, f('signed-stub.efi'), {
    key: createPrivateKey(readFileSync(keys.key)),
    certificates: [new X509Certificate(readFileSync(keys.cert))],
  });
  await assert.rejects(
    buildUki(f('x.efi'), { ...inputs(), stub: f('signed-stub.efi') }),
    (e: unknown) =>
      e instanceof UkiError && e.code === 'UKI_BAD_STUB' && /the stub is signed/.test(e.message),
  );
  const r = runSeal(['uki', 'build', '--linux', testKernel(), '--stub', f('initrd2'), f('y.efi')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /initrd2 has no MZ signature \[PE_NOT_PE\]/);
});
