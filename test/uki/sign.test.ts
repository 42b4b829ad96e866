/**
 * Authenticode against the reference tools, on 30 images: systemd's stubs (254, 252), its boot
 * manager, and UKIs with and without an initrd, each signed by Seal with RSA-2048/3072/4096 and
 * ECDSA P-256/P-384 keys, and with two signatures. sbverify and osslsigncode accept what Seal
 * signs (osslsigncode reads only a single-entry certificate table: two-signature images are
 * checked with sbverify and Seal); Seal verifies what sbsign and osslsigncode sign; one changed
 * byte anywhere in a signed image is refused, naming what failed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isSealError } from '../../src/errors.ts';
import { PeImage } from '../../src/pe/index.ts';
import { buildUki, signPe, verifyPe } from '../../src/uki/index.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  BOOT_MANAGER_254,
  opensslCertificate,
  STUB_254,
  stub252,
  type TestKeyType,
  testKernel,
} from '../helpers/efi.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-sign-'));
after(() => rm(work, { recursive: true, force: true }));
const f = (name: string) => join(work, name);

const KEY_TYPES: TestKeyType[] = ['rsa-2048', 'rsa-3072', 'rsa-4096', 'ecdsa-p256', 'ecdsa-p384'];
const keys = {} as Record<TestKeyType, { key: string; cert: string }>;
const images: Record<string, string> = {};

function signer(type: TestKeyType) {
  return {
    key: createPrivateKey(readFileSync(keys[type].key)),
    certificates: [new X509Certificate(readFileSync(keys[type].cert))],
  };
}

const anchor = (type: TestKeyType) => new X509Certificate(readFileSync(keys[type].cert));

function sbverify(image: string, cert: string): boolean {
  return spawnSync('sbverify', ['--cert', cert, image], { encoding: 'utf8' }).status === 0;
}

function osslsigncode(image: string, cert: string): { ok: boolean; output: string } {
  const r = spawnSync('osslsigncode', ['verify', '-in', image, '-CAfile', cert], { encoding: 'utf8' });
  return { ok: r.status === 0 && /Signature verification: ok/.test(r.stdout), output: r.stdout + r.stderr };
}

before(async () => {
  for (const type of KEY_TYPES) keys[type] = opensslCertificate(work, type, type);
  writeFileSync(f('initrd'), Buffer.alloc(100_000, 7));
  images.stub254 = STUB_254;
  images.stub252 = stub252();
  images.bootManager = BOOT_MANAGER_254;
  await buildUki(f('uki-initrd.efi'), { linux: testKernel(), initrds: [f('initrd')], cmdline: 'quiet' });
  images.ukiWithInitrd = f('uki-initrd.efi');
  await buildUki(f('uki-bare.efi'), { linux: testKernel(), stub: stub252(), cmdline: 'quiet' });
  images.ukiWithoutInitrd = f('uki-bare.efi');
});

test('sbverify, osslsigncode and Seal accept what Seal signs: 5 images x 5 key types, and 5 with two signatures', async () => {
  let checked = 0;
  for (const [name, image] of Object.entries(images)) {
    for (const type of KEY_TYPES) {
      const out = f(`${name}-${type}.efi`);
      await signPe(image, out, signer(type));
      assert.ok(sbverify(out, keys[type].cert), `sbverify ${name} ${type}`);
      const ossl = osslsigncode(out, keys[type].cert);
      assert.ok(ossl.ok, `osslsigncode ${name} ${type}: ${ossl.output}`);
      const result = verifyPe(out, { anchors: [anchor(type)] });
      assert.equal(result.trusted, true);
      assert.equal(result.signatures.length, 1);
      // Another certificate does not vouch for it, for any of the three.
      const other = type === 'rsa-2048' ? 'rsa-3072' : 'rsa-2048';
      assert.ok(!sbverify(out, keys[other].cert), `sbverify ${name} ${type} with ${other}`);
      assert.throws(
        () => verifyPe(out, { anchors: [anchor(other)] }),
        /PKI_UNTRUSTED|no signature is vouched for/,
      );
      checked++;
    }
    // Two signatures: RSA then ECDSA, as a key rotation keeps both for a while.
    const twice = f(`${name}-twice.efi`);
    await signPe(image, twice, signer('rsa-2048'));
    await signPe(twice, twice, { ...signer('ecdsa-p256'), append: true });
    for (const type of ['rsa-2048', 'ecdsa-p256'] as const) {
      assert.ok(sbverify(twice, keys[type].cert), `sbverify ${name} twice ${type}`);
      const result = verifyPe(twice, { anchors: [anchor(type)] });
      assert.equal(result.signatures.length, 2);
      assert.equal(result.signatures.filter((s) => s.trustedBy).length, 1);
    }
    assert.ok(!sbverify(twice, keys['rsa-4096'].cert));
    // osslsigncode reads only the first WIN_CERTIFICATE when it fills the table.
    const ossl = osslsigncode(twice, keys['rsa-2048'].cert);
    assert.ok(!ossl.ok && /Corrupted attribute certificate table/.test(ossl.output), ossl.output);
    checked++;
  }
  assert.equal(checked, 30);
});

test('Seal verifies what sbsign and osslsigncode sign', () => {
  let checked = 0;
  for (const [name, image] of Object.entries(images)) {
    for (const type of ['rsa-2048', 'ecdsa-p256', 'rsa-4096'] as const) {
      const sb = f(`${name}-${type}.sbsign.efi`);
      execFileSync('sbsign', ['--key', keys[type].key, '--cert', keys[type].cert, '--output', sb, image], {
        stdio: 'ignore',
      });
      const ossl = f(`${name}-${type}.ossl.efi`);
      execFileSync(
        'osslsigncode',
        ['sign', '-certs', keys[type].cert, '-key', keys[type].key, '-in', image, '-out', ossl],
        {
          stdio: 'ignore',
        },
      );
      for (const signed of [sb, ossl]) {
        const result = verifyPe(signed, { anchors: [anchor(type)] });
        assert.equal(result.trusted, true, signed);
        assert.ok(result.signatures[0]!.signingTime, 'both tools add a signing time');
        checked++;
      }
    }
  }
  assert.equal(checked, 30);
});

test('re-signing replaces the signatures, --append adds one; the CLI signs, verifies and reports', async () => {
  const cli = (...args: string[]) => {
    const r = runSeal(args);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const out = f('cycle.efi');
  cli('uki', 'sign', STUB_254, out, '--key', keys['rsa-2048'].key, '--cert', keys['rsa-2048'].cert);
  cli('uki', 'sign', out, out, '--key', keys['ecdsa-p384'].key, '--cert', keys['ecdsa-p384'].cert);
  let result = verifyPe(out, { anchors: [anchor('ecdsa-p384')] });
  assert.deepEqual(
    result.signatures.map((s) => s.signer),
    ['CN=Seal test ecdsa-p384'],
  );
  assert.throws(() => verifyPe(out, { anchors: [anchor('rsa-2048')] }), /PKI_UNTRUSTED|vouched/);
  cli('uki', 'sign', out, out, '--append', '--key', keys['rsa-3072'].key, '--cert', keys['rsa-3072'].cert);
  result = verifyPe(out);
  assert.deepEqual(
    result.signatures.map((s) => s.signer),
    ['CN=Seal test ecdsa-p384', 'CN=Seal test rsa-3072'],
  );
  const report = JSON.parse(cli('uki', 'verify', out, '--cert', keys['rsa-3072'].cert, '--json')) as {
    signatures: { trustedBy?: string }[];
  };
  assert.equal(report.signatures[1]!.trustedBy, 'CN=Seal test rsa-3072');
  assert.match(cli('uki', 'verify', out), /signature 2: CN=Seal test rsa-3072, sha256 [0-9a-f]{64}\n.*: OK/);
  cli('uki', 'sign', out, out, '--key', keys['rsa-2048'].key, '--cert', keys['rsa-2048'].cert);
  assert.equal(verifyPe(out).signatures.length, 1);
  // Signatures are reproducible without a signing time (RSA PKCS#1 v1.5 is deterministic).
  cli(
    'uki',
    'sign',
    STUB_254,
    f('again1.efi'),
    '--key',
    keys['rsa-2048'].key,
    '--cert',
    keys['rsa-2048'].cert,
  );
  cli(
    'uki',
    'sign',
    STUB_254,
    f('again2.efi'),
    '--key',
    keys['rsa-2048'].key,
    '--cert',
    keys['rsa-2048'].cert,
  );
  assert.deepEqual(readFileSync(f('again1.efi')), readFileSync(f('again2.efi')));
  const unsigned = runSeal(['uki', 'verify', STUB_254]);
  assert.equal(unsigned.status, 1);
  assert.match(unsigned.stderr, /is not signed \[PKI_NOT_SIGNED\]/);
});

test('one changed byte anywhere in a signed image is refused, naming what failed', async () => {
  const signed = f('tamper.efi');
  await buildUki(f('tamper-src.efi'), { linux: STUB_254, initrds: [f('initrd')], cmdline: 'quiet' });
  await signPe(f('tamper-src.efi'), signed, signer('rsa-2048'));
  const original = readFileSync(signed);
  const image = PeImage.open(signed);
  const { sizeOfHeaders, offsets } = image.headers;
  const table = image.certificateTable!;
  image.close();
  // Every byte of the headers and of the certificate table, and every 211th byte in between.
  const positions = new Set<number>();
  for (let i = 0; i < sizeOfHeaders; i++) positions.add(i);
  for (let i = table.offset; i < original.length; i++) positions.add(i);
  for (let i = sizeOfHeaders; i < table.offset; i += 211) positions.add(i);
  const mutant = f('mutant.efi');
  const reasons = new Map<string, number>();
  for (const at of positions) {
    const data = Buffer.from(original);
    data[at]! ^= 0x01;
    writeFileSync(mutant, data);
    let error: unknown;
    try {
      verifyPe(mutant, { anchors: [anchor('rsa-2048')] });
    } catch (e) {
      error = e;
    }
    assert.ok(
      isSealError(error),
      `byte ${at} changed, yet the image verified (or failed untyped: ${(error as Error)?.stack})`,
    );
    const reason =
      at >= offsets.checkSum && at < offsets.checkSum + 4
        ? 'checksum'
        : at >= table.offset
          ? 'signature'
          : at >= sizeOfHeaders
            ? 'section'
            : 'header';
    if (reason === 'checksum') assert.match(error.message, /CheckSum .* is not the file's/);
    if (reason === 'section')
      assert.match(error.message, /digest .* is not the signed .* \(the image changed after signing\)/);
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  assert.ok(positions.size > 2000, `${positions.size} positions`);
  assert.deepEqual([...reasons.keys()].sort(), ['checksum', 'header', 'section', 'signature']);
});
