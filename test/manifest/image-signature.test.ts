/**
 * cosign-compatible image signatures: the bundle's layout checked field by field and its DSSE
 * signature checked by openssl (independently of the Sigstore libraries Seal uses), then every
 * way `seal verify-signature` must refuse, locally and through a registry without referrers API.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { bundleToJSON } from '@sigstore/bundle';
import { DSSEBundleBuilder } from '@sigstore/sign';
import { putArtifact } from '../../src/manifest/artifact.ts';
import {
  COSIGN_SIGN_PREDICATE,
  ManifestError,
  SIGSTORE_BUNDLE_TYPE,
  signImage,
  verifyImageSignature,
} from '../../src/manifest/index.ts';
import { KeySigner, loadPrivateKey } from '../../src/pki/index.ts';
import { openSource } from '../../src/store/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { opensslKeyPair } from '../helpers/keys.ts';
import { writeThreeLayerImage } from '../helpers/layout.ts';
import { startRegistry } from '../registry/harness.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-cosign-'));
after(() => rm(work, { recursive: true, force: true }));

const p256 = opensslKeyPair(join(work, 'p256.key'));
const ed25519 = opensslKeyPair(join(work, 'ed25519.key'), ['-algorithm', 'ED25519']);
const other = opensslKeyPair(join(work, 'other.key'));

let images = 0;
async function image(): Promise<string> {
  const dir = join(work, `image-${images++}`);
  await writeThreeLayerImage(dir);
  return `oci:${dir}:test`;
}

async function read(ref: string) {
  const src = await openSource(ref);
  try {
    const target = await src.resolve();
    const referrers = await src.referrers!(target);
    const out = [];
    for (const r of referrers) {
      const manifest = JSON.parse(Buffer.from(await src.getManifest(r)).toString());
      const parts: Uint8Array[] = [];
      for await (const c of src.getBlob(manifest.layers[0])) parts.push(c);
      out.push({ descriptor: r, manifest, bundle: JSON.parse(Buffer.concat(parts).toString()) });
    }
    return { target, referrers: out };
  } finally {
    await src.close();
  }
}

/** The DSSE pre-authentication encoding the signature covers. */
const pae = (type: string, payload: Buffer) =>
  Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${payload.length} `), payload]);

async function refused(ref: string, pub: string, code: string, message: RegExp): Promise<void> {
  const r = runSeal(['verify-signature', ref, '--key', pub]);
  assert.notEqual(r.status, 0, r.stdout);
  assert.match(r.stderr, message);
  assert.match(r.stderr, new RegExp(code));
}

for (const [name, pair] of [
  ['ECDSA P-256', p256],
  ['Ed25519', ed25519],
] as const) {
  test(`${name}: the bundle is cosign's layout and openssl verifies its DSSE signature`, async () => {
    const ref = await image();
    const r = runSeal(['sign', ref, '--key', pair.key]);
    assert.equal(r.status, 0, r.stderr);
    const { target, referrers } = await read(ref);
    assert.equal(referrers.length, 1);
    const [{ descriptor, manifest, bundle }] = referrers as [(typeof referrers)[0]];
    assert.equal(descriptor.artifactType, SIGSTORE_BUNDLE_TYPE);
    assert.equal(manifest.artifactType, SIGSTORE_BUNDLE_TYPE);
    assert.equal(manifest.config.mediaType, 'application/vnd.oci.empty.v1+json');
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0].mediaType, SIGSTORE_BUNDLE_TYPE);
    assert.deepEqual(manifest.subject, {
      mediaType: target.mediaType,
      digest: target.digest,
      size: target.size,
    });
    assert.equal(manifest.annotations['dev.sigstore.bundle.content'], 'dsse-envelope');
    assert.equal(manifest.annotations['dev.sigstore.bundle.predicateType'], COSIGN_SIGN_PREDICATE);
    assert.ok(!Number.isNaN(Date.parse(manifest.annotations['org.opencontainers.image.created'])));

    assert.equal(bundle.mediaType, SIGSTORE_BUNDLE_TYPE);
    const spki = execFileSync('openssl', ['pkey', '-pubin', '-in', pair.pub, '-outform', 'DER']);
    assert.equal(
      bundle.verificationMaterial.publicKey.hint,
      createHash('sha256').update(spki).digest('base64'),
    );
    assert.equal(bundle.verificationMaterial.tlogEntries ?? undefined, undefined);
    const envelope = bundle.dsseEnvelope;
    assert.equal(envelope.payloadType, 'application/vnd.in-toto+json');
    const payload = Buffer.from(envelope.payload, 'base64');
    const statement = JSON.parse(payload.toString());
    assert.equal(statement._type, 'https://in-toto.io/Statement/v1');
    assert.equal(statement.predicateType, COSIGN_SIGN_PREDICATE);
    assert.deepEqual(statement.subject[0].digest, { sha256: target.digest.slice(7) });
    assert.equal(envelope.signatures.length, 1);

    const signed = join(work, `${name}.pae`);
    const signature = join(work, `${name}.sig`);
    writeFileSync(signed, pae(envelope.payloadType, payload));
    writeFileSync(signature, Buffer.from(envelope.signatures[0].sig, 'base64'));
    const check =
      pair === p256
        ? ['dgst', '-sha256', '-verify', pair.pub, '-signature', signature, signed]
        : [
            'pkeyutl',
            '-verify',
            '-pubin',
            '-inkey',
            pair.pub,
            '-rawin',
            '-in',
            signed,
            '-sigfile',
            signature,
          ];
    assert.match(
      execFileSync('openssl', check, { encoding: 'utf8' }),
      /Verified OK|Signature Verified Successfully/,
    );

    const v = runSeal(['verify-signature', ref, '--key', pair.pub, '--json']);
    assert.equal(v.status, 0, v.stderr);
    assert.deepEqual(
      JSON.parse(v.stdout).signatures.map((s: { ok: boolean }) => s.ok),
      [true],
    );
    await refused(ref, other.pub, 'MANIFEST_SIGNATURE_INVALID', /does not verify with the key/);
  });
}

test('refused: unsigned, garbage, another image, an attestation, an edited statement; one good among bad accepted', async () => {
  const key = loadPrivateKey(readFileSync(p256.key));
  const ref = await image();
  const { target } = await read(ref);
  const hex = target.digest.slice('sha256:'.length);
  await refused(ref, p256.pub, 'MANIFEST_UNSIGNED', /no Sigstore bundle is attached/);

  const attach = (bundle: object | Buffer) =>
    putArtifact(ref, {
      artifactType: SIGSTORE_BUNDLE_TYPE,
      layerMediaType: SIGSTORE_BUNDLE_TYPE,
      layer: Buffer.isBuffer(bundle) ? bundle : Buffer.from(JSON.stringify(bundle)),
      subject: { mediaType: target.mediaType, digest: target.digest, size: target.size },
    });
  /** A bundle validly signed with the test key over a statement of the test's choosing. */
  const bundle = async (digest: string, predicateType: string) =>
    bundleToJSON(
      await new DSSEBundleBuilder({
        witnesses: [],
        signer: {
          sign: async (data) => ({
            signature: sign('sha256', data, key),
            key: { $case: 'publicKey', publicKey: readFileSync(p256.pub, 'utf8'), hint: 'test' },
          }),
        },
      }).create({
        type: 'application/vnd.in-toto+json',
        data: Buffer.from(
          JSON.stringify({
            _type: 'https://in-toto.io/Statement/v1',
            subject: [{ digest: { sha256: digest } }],
            predicateType,
            predicate: {},
          }),
        ),
      }),
    );

  await attach(Buffer.from(`{"mediaType": "${SIGSTORE_BUNDLE_TYPE}"`));
  await refused(ref, p256.pub, 'MANIFEST_SIGNATURE_INVALID', /its bundle is malformed/);
  await attach(await bundle('cd'.repeat(32), COSIGN_SIGN_PREDICATE));
  await refused(ref, p256.pub, 'MANIFEST_SIGNATURE_INVALID', /it signs another image/);
  await attach(await bundle(hex, 'https://slsa.dev/provenance/v1'));
  await refused(ref, p256.pub, 'MANIFEST_SIGNATURE_INVALID', /it is an attestation/);
  const edited = await bundle(hex, COSIGN_SIGN_PREDICATE);
  const statement = JSON.parse(Buffer.from(edited.dsseEnvelope!.payload, 'base64').toString());
  edited.dsseEnvelope!.payload = Buffer.from(
    JSON.stringify({ ...statement, predicate: { edited: true } }),
  ).toString('base64');
  await attach(edited);
  await refused(ref, p256.pub, 'MANIFEST_SIGNATURE_INVALID', /does not verify with the key/);

  // A good signature beside the four bad ones: accepted, the bad ones reported.
  await signImage(ref, new KeySigner(key, []));
  const report = await verifyImageSignature(ref, createPublicKey(readFileSync(p256.pub, 'utf8')));
  assert.equal(report.signatures.filter((x) => x.ok).length, 1);
  assert.equal(report.signatures.filter((x) => !x.ok).length, 4);
});

test('keys cosign cannot use for image signatures are refused before anything is written', async () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const ref = await image();
  await assert.rejects(signImage(ref, new KeySigner(privateKey, [])), (e: unknown) => {
    assert.ok(e instanceof ManifestError);
    assert.equal(e.code, 'MANIFEST_KEY_UNSUPPORTED');
    return true;
  });
  assert.equal((await read(ref)).referrers.length, 0);
});

test('through a registry without the referrers API: signed, listed by the tag schema, verified, synced', async () => {
  const registry = await startRegistry('none');
  try {
    const ref = `docker://${registry.host}/signed/app:1`;
    assert.equal(runSeal(['copy', await image(), ref]).status, 0);
    const s = runSeal(['sign', ref, '--key', p256.key]);
    assert.equal(s.status, 0, s.stderr);
    const v = runSeal(['verify-signature', ref, '--key', p256.pub]);
    assert.equal(v.status, 0, v.stderr);
    assert.match(v.stdout, /signature verified/);
    const listed = runSeal(['referrers', ref]);
    assert.match(listed.stdout, /application\/vnd\.dev\.sigstore\.bundle\.v0\.3\+json/);
    // The signature travels with the image.
    const mirror = `oci:${join(work, 'mirror')}:app`;
    const c = runSeal(['copy', '--referrers', ref, mirror]);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(runSeal(['verify-signature', mirror, '--key', p256.pub]).status, 0);
    await refused(ref, other.pub, 'MANIFEST_SIGNATURE_INVALID', /does not verify/);
  } finally {
    await registry.stop();
  }
});
