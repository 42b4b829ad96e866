/**
 * `seal manifest verify --deep` — the device's check of a whole system before it accepts it —
 * within the device memory budget: a signed system pinning the real Debian image, sealed as
 * EROFS, for two targets; every layer verified; the peak resident set of the whole process,
 * measured from outside.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildSystem, parseSystemSpec, signSystem } from '../../src/manifest/index.ts';
import { initPki, KeySigner, loadPrivateKey, newProduct, parseCertificate } from '../../src/pki/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { writeDebianLayout } from '../helpers/corpus.ts';
import { DEVICE_MEMORY_BUDGET, megabytes, runSealMeasured } from '../helpers/memory.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-manifest-memory-'));
after(() => rm(work, { recursive: true, force: true }));

const PRODUCT = '0b7e4c55-5f0e-4a53-8f43-6f0c1b9d2e77';

test('manifest verify --deep of a system pinning the Debian image stays within the device budget', async (t) => {
  const pki = join(work, 'pki');
  await initPki(pki);
  const product = await newProduct(pki, { name: 'Memory budget', id: PRODUCT });
  const ca = parseCertificate(readFileSync(join(pki, 'manifest-ca.pem'), 'utf8'));
  const signer = new KeySigner(loadPrivateKey(readFileSync(product.key)), [
    parseCertificate(readFileSync(product.certificate, 'utf8')),
    ca,
  ]);
  const layout = join(work, 'layout');
  writeDebianLayout(layout, 'debian');
  const sealed = runSeal([
    'image',
    'seal',
    `oci:${layout}:debian`,
    `oci:${layout}:sealed`,
    '--format',
    'erofs',
  ]);
  assert.equal(sealed.status, 0, sealed.stderr);
  const ref = `oci:${layout}:system`;
  await buildSystem(
    parseSystemSpec(`product: ${PRODUCT}
version: 3
update_type: complete
targets:
  - name: hostfs
    image: oci:${layout}:sealed
    role: host
  - name: shell
    image: oci:${layout}:sealed
    role: service
    service: { command: ["/bin/sh"] }
`),
    ref,
  );
  await signSystem(ref, signer);
  const args = [
    'manifest',
    'verify',
    ref,
    '--ca',
    join(pki, 'manifest-ca.pem'),
    '--product',
    PRODUCT,
    '--deep',
  ];
  const r = runSealMeasured([...args, '--state', join(work, 'state.json')], { warmup: args });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /every layer verified/);
  t.diagnostic(`manifest verify --deep: ${megabytes(r.peakBytes)}`);
  assert.ok(
    r.peakBytes <= DEVICE_MEMORY_BUDGET,
    `manifest verify --deep peaked at ${megabytes(r.peakBytes)}, over ${megabytes(DEVICE_MEMORY_BUDGET)}`,
  );
});
