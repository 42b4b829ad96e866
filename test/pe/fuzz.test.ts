/**
 * Mutated and truncated PE images — unsigned stubs, and images signed by sbsign and by Seal (one
 * and two signatures, RSA and ECDSA) — give typed errors from the reader, the digest, the
 * checksum and Authenticode verification; never a crash or a hang.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isSealError } from '../../src/errors.ts';
import { authenticodeDigest, imageChecksum, PeImage } from '../../src/pe/index.ts';
import { signPe, verifyImage } from '../../src/uki/sign.ts';
import { opensslCertificate, STUB_254, stub252 } from '../helpers/efi.ts';
import { prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-pe-fuzz-'));
after(() => rm(work, { recursive: true, force: true }));

test('mutated PE images give typed errors, never a crash or a hang', async (t) => {
  const rsa = opensslCertificate(work, 'rsa');
  const ec = opensslCertificate(work, 'ec', 'ecdsa-p256');
  const sbsigned = join(work, 'sbsigned.efi');
  execFileSync('sbsign', ['--key', rsa.key, '--cert', rsa.cert, '--output', sbsigned, STUB_254], {
    stdio: 'ignore',
  });
  const twice = join(work, 'twice.efi');
  const keyOf = (k: { key: string; cert: string }) => ({
    key: createPrivateKey(readFileSync(k.key)),
    certificates: [new X509Certificate(readFileSync(k.cert))],
  });
  await signPe(stub252(), twice, keyOf(rsa));
  await signPe(twice, twice, { ...keyOf(ec), append: true });
  const anchors = [new X509Certificate(readFileSync(rsa.cert)), new X509Certificate(readFileSync(ec.cert))];
  const bases = [STUB_254, stub252(), sbsigned, twice].map((f) => readFileSync(f));
  const random = prng(14);
  const mutant = join(work, 'mutant.efi');
  let refused = 0;
  let verified = 0;
  for (let i = 0; i < 3000; i++) {
    const base = bases[i % bases.length]!;
    let data = Buffer.from(base);
    const kind = random();
    if (kind < 0.1) {
      data = data.subarray(0, Math.floor(random() * data.length));
    } else {
      // Headers and section table, the certificate table at the end, or anywhere.
      for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++) {
        const region = random();
        const at =
          region < 0.5
            ? Math.floor(random() * 0x400)
            : region < 0.8
              ? data.length - 1 - Math.floor(random() * Math.min(data.length, 2048))
              : Math.floor(random() * data.length);
        data[at] = random() < 0.5 ? Math.floor(random() * 256) : data[at]! ^ (1 << Math.floor(random() * 8));
      }
    }
    writeFileSync(mutant, data);
    try {
      const image = PeImage.open(mutant);
      try {
        for (const s of image.sections) if (s.virtualSize < 1 << 20) image.sectionData(s);
        imageChecksum(image);
        authenticodeDigest(image);
        if (image.certificateTable) {
          verifyImage(image, { anchors });
          verified++;
        }
      } finally {
        image.close();
      }
    } catch (error) {
      assert.ok(isSealError(error), `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  t.diagnostic(`${refused} refused, ${verified} signed mutants verified`);
  assert.ok(refused > 1000, `only ${refused} mutants were refused`);
  // Mutations of signed images that still verify can only have hit the bytes nothing signs.
  assert.ok(verified < 300, `${verified} mutated signed images verified`);
});
