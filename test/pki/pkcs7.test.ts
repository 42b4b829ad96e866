/**
 * PKCS#7 in the kernel's form, against OpenSSL: `openssl smime -sign -noattr -nocerts -binary`
 * (detached: dm-verity root hashes; -nodetach: IPE policies) makes the same bytes as Seal for
 * RSA keys, the same structure around the signature value for ECDSA ones (whose signatures are
 * randomised); each verifies the other's; trust follows the kernel's rule (the signer itself, or
 * carried certificates up to a trusted one); tampering and foreign signers are refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { PkiError, parsePkcs7, signPkcs7, verifyPkcs7 } from '../../src/pki/index.ts';
import { opensslIssued, opensslSelfSigned } from '../helpers/keys.ts';
import { prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-pkcs7-'));
after(() => rm(work, { recursive: true, force: true }));

const read = (p: string) => readFileSync(p);
const keyOf = (p: string) => createPrivateKey(read(p));

function smime(args: string[], input: Buffer): Buffer {
  const file = join(work, 'smime-in');
  writeFileSync(file, input);
  return execFileSync('openssl', ['smime', '-sign', '-binary', '-in', file, '-outform', 'DER', ...args]);
}

const signers = ['rsa:2048', 'rsa:4096', 'ec:P-256', 'ec:P-384'].map((spec) => ({
  spec,
  ...opensslSelfSigned(work, `signer-${spec.replace(':', '-')}`, spec),
}));

for (const s of signers) {
  for (const attached of [false, true]) {
    test(`${s.spec}, ${attached ? 'embedded content (IPE policy form)' : 'detached (root-hash form)'}: as openssl smime -noattr -nocerts makes it`, () => {
      const data = Buffer.from(
        attached ? 'policy_name=p policy_version=0.0.1\nDEFAULT action=ALLOW\n' : 'ab'.repeat(32),
      );
      const theirs = smime(
        ['-signer', s.cert, '-inkey', s.key, '-noattr', '-nocerts', ...(attached ? ['-nodetach'] : [])],
        data,
      );
      const ours = signPkcs7(data, { key: keyOf(s.key), certificate: read(s.cert), attached });
      if (s.spec.startsWith('rsa'))
        assert.ok(ours.equals(theirs), 'RSA signatures are deterministic: same bytes');
      // The same structure around OpenSSL's own signature value (ECDSA's is randomised).
      const value = parsePkcs7(theirs).signers[0]!.signature;
      const same = signPkcs7(data, { certificate: read(s.cert), attached, signature: () => value });
      assert.ok(same.equals(theirs));
      // Each verifies the other's.
      assert.equal(
        verifyPkcs7(theirs, attached ? undefined : data, [read(s.cert)]).signer.subject,
        `CN=${s.cert.split('/').pop()!.slice(0, -4)}`,
      );
      const sig = join(work, 'ours.p7s');
      writeFileSync(sig, ours);
      const content = join(work, 'content');
      writeFileSync(content, data);
      execFileSync(
        'openssl',
        [
          'smime',
          '-verify',
          '-binary',
          '-inform',
          'DER',
          '-in',
          sig,
          ...(attached ? [] : ['-content', content]),
          '-certfile',
          s.cert,
          '-nointern',
          '-CAfile',
          s.cert,
          '-out',
          join(work, 'out'),
        ],
        { stdio: 'ignore' },
      );
      if (attached) assert.ok(readFileSync(join(work, 'out')).equals(data));
    });
  }
}

test('signed attributes (openssl smime without -noattr) are checked too', () => {
  const s = signers[0]!;
  const data = Buffer.from('with attributes');
  const theirs = smime(['-signer', s.cert, '-inkey', s.key, '-nocerts'], data);
  assert.ok(parsePkcs7(theirs).signers[0]!.signedAttributes);
  verifyPkcs7(theirs, data, [read(s.cert)]);
  assert.throws(
    () => verifyPkcs7(theirs, Buffer.from('with attributez'), [read(s.cert)]),
    (e: unknown) => {
      return e instanceof PkiError && e.code === 'PKI_BAD_SIGNATURE' && /message digest/.test(e.message);
    },
  );
});

test('trust: the signer itself, or carried certificates up to a trusted one; nothing else', () => {
  const ca = opensslSelfSigned(work, 'ca', 'ec:P-256');
  const leaf = opensslIssued(work, 'leaf', ca, 'ec:P-256');
  const other = opensslSelfSigned(work, 'other', 'ec:P-256');
  const data = Buffer.from('root hash');
  const bare = signPkcs7(data, { key: keyOf(leaf.key), certificate: read(leaf.cert) });
  const carrying = signPkcs7(data, {
    key: keyOf(leaf.key),
    certificate: read(leaf.cert),
    certificates: [read(leaf.cert)],
  });
  // The leaf trusted directly: with or without carrying it.
  assert.match(verifyPkcs7(bare, data, [read(leaf.cert)]).trustedBy.subject, /leaf/);
  assert.match(verifyPkcs7(carrying, data, [read(leaf.cert)]).trustedBy.subject, /leaf/);
  // The CA trusted: only a signature carrying the leaf reaches it.
  assert.match(verifyPkcs7(carrying, data, [read(ca.cert)]).trustedBy.subject, /CN=ca/);
  const untrusted = (e: unknown) => e instanceof PkiError && e.code === 'PKI_UNTRUSTED';
  assert.throws(() => verifyPkcs7(bare, data, [read(ca.cert)]), untrusted);
  assert.throws(() => verifyPkcs7(carrying, data, [read(other.cert)]), untrusted);
  // Another key claiming to be the trusted signer (same issuer and serial in its SignerInfo).
  const forged = signPkcs7(data, {
    certificate: read(leaf.cert),
    signature: (tbs) => execFileSync('openssl', ['dgst', '-sha256', '-sign', other.key], { input: tbs }),
  });
  assert.throws(
    () => verifyPkcs7(forged, data, [read(leaf.cert)]),
    (e: unknown) => e instanceof PkiError && e.code === 'PKI_BAD_SIGNATURE',
  );
  // The data changed.
  assert.throws(
    () => verifyPkcs7(bare, Buffer.from('root hasH'), [read(leaf.cert)]),
    (e: unknown) => e instanceof PkiError && e.code === 'PKI_BAD_SIGNATURE',
  );
  // A key that is not the certificate's.
  assert.throws(
    () => signPkcs7(data, { key: keyOf(other.key), certificate: read(leaf.cert) }),
    (e: unknown) => e instanceof PkiError && e.code === 'PKI_BAD_KEY',
  );
});

test('mutated signatures give PkiErrors only, never anything else', () => {
  const s = signers[2]!;
  const data = Buffer.from('fuzzed');
  const pristine = signPkcs7(data, {
    key: keyOf(s.key),
    certificate: read(s.cert),
    certificates: [read(s.cert)],
  });
  const value = parsePkcs7(pristine).signers[0]!.signature;
  const random = prng(7);
  let refused = 0;
  for (let i = 0; i < 2000; i++) {
    let bytes = Buffer.from(pristine);
    const n = 1 + Math.floor(random() * 3);
    for (let k = 0; k < n; k++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
    if (random() < 0.1) bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
    try {
      verifyPkcs7(bytes, data, [read(s.cert)]);
      // Accepted: the mutation fell in what the signature does not depend on (the carried
      // certificate, unused when the signer is trusted directly); the signature is the original.
      assert.ok(
        parsePkcs7(bytes).signers[0]!.signature.equals(value),
        `case ${i} accepted another signature`,
      );
    } catch (error) {
      assert.ok(error instanceof PkiError, `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  assert.ok(refused > 1000, `only ${refused} of 2000 mutants were refused`);
});
