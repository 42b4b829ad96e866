/**
 * Kernel signatures of sealed images, through the real `seal` executable:
 * - `fsverity sign` and Seal make identical fs-verity signatures (RSA: same bytes; ECDSA: same
 *   bytes around the randomised signature value), each verifies the other's;
 * - composefs images signed at sealing carry the composefs signature artifact as the sealing
 *   specification lays it out, whose merged signature is exactly `fsverity sign` of the merged
 *   EROFS Seal writes; squashfs/EROFS images carry a root-hash signature per layer that OpenSSL
 *   verifies over the root hash;
 * - several signers coexist, `seal image verify --cert` needs one of them; unsigned images, a
 *   stranger's certificate, another image's signatures and wrong digests are refused;
 * - `seal copy --referrers` and `seal sync` carry the signatures through docker-registry (which
 *   has no referrers API: the tag fallback) and they verify at the other end.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parsePkcs7 } from '../../src/pki/index.ts';
import {
  COMPOSEFS_METADATA_ARTIFACT_TYPE,
  signFsverityDigest,
  VERITY_SIGNATURES_ARTIFACT_TYPE,
  verifyFsveritySignature,
} from '../../src/seal/index.ts';
import { composefsSignatureArtifact, putSignatureArtifact } from '../../src/seal/signature-artifacts.ts';
import { openDestination } from '../../src/store/index.ts';
import { fsverityDigestFile } from '../../src/verity/index.ts';
import { runSeal, runSealAsync } from '../helpers/cli.ts';
import { opensslSelfSigned } from '../helpers/keys.ts';
import { fileEntry, tarOf, writeLayout, writeThreeLayerImage } from '../helpers/layout.ts';
import { prng, randomBytes } from '../helpers/trees.ts';
import { startRegistry, type TestRegistry } from '../registry/harness.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-signatures-'));
let registry: TestRegistry;
before(async () => {
  registry = await startRegistry('none');
});
after(async () => {
  await registry?.stop();
  await rm(work, { recursive: true, force: true });
});

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function refused(args: string[], code: string, message?: RegExp): string {
  const r = runSeal(args);
  assert.notEqual(r.status, 0, `seal ${args.join(' ')} succeeded:\n${r.stdout}`);
  assert.match(r.stderr, new RegExp(`\\[${code}\\]`), r.stderr);
  if (message) assert.match(r.stderr, message);
  return r.stderr;
}

const blob = (layout: string, digest: string) => join(layout, 'blobs/sha256', digest.slice(7));
const json = (layout: string, digest: string) => JSON.parse(readFileSync(blob(layout, digest), 'utf8'));

const rsa = opensslSelfSigned(work, 'rsa-signer', 'rsa:2048');
const ecdsa = opensslSelfSigned(work, 'ec-signer', 'ec:P-256');
const stranger = opensslSelfSigned(work, 'stranger', 'ec:P-256');
const source = join(work, 'source');
await writeThreeLayerImage(source);

test('fs-verity signatures: identical to fsverity sign (RSA, ECDSA; SHA-256, SHA-512, 1 KiB blocks), and each verifies the other', () => {
  const file = join(work, 'payload');
  writeFileSync(file, randomBytes(prng(1), 70_000));
  const cases = [
    { who: rsa, args: [] as string[] },
    { who: rsa, args: ['--hash-alg=sha512'] },
    { who: rsa, args: ['--block-size=1024'] },
    { who: opensslSelfSigned(work, 'rsa4096', 'rsa:4096'), args: [] },
    { who: ecdsa, args: [] },
    { who: opensslSelfSigned(work, 'p384', 'ec:P-384'), args: ['--hash-alg=sha512'] },
  ];
  for (const { who, args } of cases) {
    const theirs = join(work, 'theirs.sig');
    const ours = join(work, 'ours.sig');
    execFileSync('fsverity', ['sign', file, theirs, `--key=${who.key}`, `--cert=${who.cert}`, ...args], {
      stdio: 'ignore',
    });
    seal('fsverity', 'sign', file, ours, '--key', who.key, '--cert', who.cert, ...args);
    const label = `${who.cert} ${args.join(' ')}`;
    const algorithm = args.includes('--hash-alg=sha512') ? 'sha512' : 'sha256';
    const digest = execFileSync('fsverity', ['digest', file, ...args], { encoding: 'utf8' }).split(
      /[: ]/,
    )[1]!;
    if (who.cert.includes('rsa')) assert.ok(readFileSync(ours).equals(readFileSync(theirs)), label);
    else {
      const value = parsePkcs7(readFileSync(theirs)).signers[0]!.signature;
      const rebuilt = signFsverityDigest(
        Buffer.from(digest, 'hex'),
        { certificate: readFileSync(who.cert), signature: () => value },
        algorithm,
      );
      assert.ok(rebuilt.equals(readFileSync(theirs)), label);
    }
    for (const sig of [ours, theirs])
      verifyFsveritySignature(
        readFileSync(sig),
        Buffer.from(digest, 'hex'),
        [readFileSync(who.cert)],
        algorithm,
      );
    assert.throws(() =>
      verifyFsveritySignature(
        readFileSync(theirs),
        Buffer.alloc(digest.length / 2),
        [readFileSync(who.cert)],
        algorithm,
      ),
    );
  }
});

test('composefs: signed at sealing, the composefs signature artifact, fsverity sign of the merged EROFS', async () => {
  const layout = join(work, 'cfs');
  const out = JSON.parse(
    seal(
      'image',
      'seal',
      `oci:${source}:test`,
      `oci:${layout}:s`,
      '--format',
      'composefs',
      '--sign-key',
      rsa.key,
      '--sign-cert',
      rsa.cert,
      '--json',
    ),
  );
  const artifact = json(layout, out.signature.artifact.digest);
  assert.equal(artifact.artifactType, COMPOSEFS_METADATA_ARTIFACT_TYPE);
  assert.equal(artifact.config.mediaType, 'application/vnd.oci.empty.v1+json');
  assert.equal(artifact.subject.digest, out.digest);
  const keys = artifact.layers.map((l: { annotations: Record<string, string> }) =>
    Object.keys(l.annotations),
  );
  assert.deepEqual(keys, [
    ['composefs.manifest.fsverity-sha256-12'],
    ['composefs.config.fsverity-sha256-12'],
    ['composefs.layer.erofs.v1.fsverity-sha256-12'],
    ['composefs.layer.erofs.v1.fsverity-sha256-12'],
    ['composefs.layer.erofs.v1.fsverity-sha256-12'],
    ['composefs.merged.erofs.v1.fsverity-sha256-12'],
  ]);
  for (const l of artifact.layers) assert.equal(l.mediaType, 'application/vnd.composefs.signature.v1+pkcs7');
  const image = json(layout, out.digest);
  const merged = artifact.layers[5];
  assert.equal(
    merged.annotations['composefs.merged.erofs.v1.fsverity-sha256-12'],
    image.annotations['composefs.merged.erofs.v1.fsverity-sha256-12'],
  );
  // The manifest entry is the fs-verity digest of the image manifest's bytes.
  assert.equal(
    artifact.layers[0].annotations['composefs.manifest.fsverity-sha256-12'],
    (await fsverityDigestFile(blob(layout, out.digest))).toString('hex'),
  );
  // What the kernel is given for the merged EROFS is what fsverity sign makes for that file.
  const cfs = join(work, 'merged.cfs');
  seal('composefs', 'create', `oci:${layout}:s`, cfs);
  const theirs = join(work, 'merged.sig');
  execFileSync('fsverity', ['sign', cfs, theirs, `--key=${rsa.key}`, `--cert=${rsa.cert}`], {
    stdio: 'ignore',
  });
  assert.ok(readFileSync(blob(layout, merged.digest)).equals(readFileSync(theirs)));
  // Verified offline with the signer's certificate; refused with a stranger's.
  assert.match(
    seal('image', 'verify', `oci:${layout}:s`, '--cert', rsa.cert),
    /accepted, signed by CN=rsa-signer/,
  );
  refused(
    ['image', 'verify', `oci:${layout}:s`, '--cert', stranger.cert],
    'IMAGE_SIGNATURE_INVALID',
    /not a trusted certificate/,
  );
});

test('several signers coexist; one accepted signature is enough', () => {
  const layout = join(work, 'cfs');
  seal('image', 'sign-verity', `oci:${layout}:s`, '--key', ecdsa.key, '--cert', ecdsa.cert);
  const referrers = seal('referrers', `oci:${layout}:s`);
  assert.equal(referrers.trim().split('\n').length, 2, referrers);
  const both = seal('image', 'verify', `oci:${layout}:s`, '--cert', ecdsa.cert);
  assert.match(
    both,
    /not accepted: its manifest signature: its signer \(serial [0-9a-f]+ of "CN=rsa-signer"\)/,
  );
  assert.match(both, /accepted, signed by CN=ec-signer/);
  seal('image', 'verify', `oci:${layout}:s`, '--cert', stranger.cert, '--cert', rsa.cert);
  // Signing again with the same RSA key makes the same artifact: nothing new is attached.
  seal('image', 'sign-verity', `oci:${layout}:s`, '--key', rsa.key, '--cert', rsa.cert);
  assert.equal(seal('referrers', `oci:${layout}:s`).trim().split('\n').length, 2);
});

for (const format of ['squashfs', 'erofs']) {
  test(`${format} + dm-verity: a root-hash signature per layer, as veritysetup takes it`, () => {
    const layout = join(work, format);
    const sealed = JSON.parse(
      seal('image', 'seal', `oci:${source}:test`, `oci:${layout}:s`, '--format', format, '--json'),
    );
    refused(['image', 'verify', `oci:${layout}:s`, '--cert', ecdsa.cert], 'IMAGE_UNSIGNED');
    const signed = JSON.parse(
      seal('image', 'sign-verity', `oci:${layout}:s`, '--key', ecdsa.key, '--cert', ecdsa.cert, '--json'),
    );
    assert.equal(signed.artifactType, VERITY_SIGNATURES_ARTIFACT_TYPE);
    const artifact = json(layout, signed.artifact.digest);
    assert.equal(artifact.layers.length, 3);
    for (const [i, layer] of artifact.layers.entries()) {
      assert.equal(layer.mediaType, 'application/vnd.seal.verity.signature.v1+pkcs7');
      assert.equal(layer.annotations['seal.verity.layer'], sealed.layers[i].digest);
      assert.equal(layer.annotations['seal.verity.root-hash'], sealed.layers[i].rootHash);
      // OpenSSL checks it over the root hash as the device-mapper table spells it.
      const content = join(work, 'root.txt');
      writeFileSync(content, sealed.layers[i].rootHash);
      execFileSync(
        'openssl',
        [
          'smime',
          '-verify',
          '-binary',
          '-inform',
          'DER',
          '-in',
          blob(layout, layer.digest),
          '-content',
          content,
          '-certfile',
          ecdsa.cert,
          '-nointern',
          '-CAfile',
          ecdsa.cert,
        ],
        { stdio: 'ignore' },
      );
    }
    assert.match(seal('image', 'verify', `oci:${layout}:s`, '--cert', ecdsa.cert), /verified, signed/);
    refused(['image', 'verify', `oci:${layout}:s`, '--cert', rsa.cert], 'IMAGE_SIGNATURE_INVALID');
  });
}

test('refused: signatures of another image, signatures of the wrong digest, a damaged signature', async () => {
  const layout = join(work, 'cfs');
  const image = JSON.parse(seal('image', 'inspect', `oci:${layout}:s`, '--json')).descriptor;
  // Another image, sealed and signed by the same trusted key.
  const other = join(work, 'other');
  writeLayout(other, [await tarOf([fileEntry('other', 'another image')])]);
  const otherSealed = join(work, 'other-sealed');
  const otherOut = JSON.parse(
    seal(
      'image',
      'seal',
      `oci:${other}:test`,
      `oci:${otherSealed}:s`,
      '--format',
      'composefs',
      '--sign-key',
      rsa.key,
      '--sign-cert',
      rsa.cert,
      '--json',
    ),
  );
  const otherArtifact = json(otherSealed, otherOut.signature.artifact.digest);
  const key = createPrivateKey(readFileSync(rsa.key));
  const cert = readFileSync(rsa.cert);
  const sign = (hex: string) => signFsverityDigest(Buffer.from(hex, 'hex'), { key, certificate: cert });
  const stale = join(work, 'stale');
  const trusted = join(work, 'trusted-only.pem');
  writeFileSync(trusted, cert);
  // A fresh copy of the signed image with no signatures, to attach forged artifacts to.
  seal('copy', `oci:${layout}:s`, `oci:${stale}:s`);
  refused(['image', 'verify', `oci:${stale}:s`, '--cert', trusted], 'IMAGE_UNSIGNED');
  const dst = await openDestination(`oci:${stale}:s`);
  try {
    // The other image's signatures, attached to this one.
    const borrowed = composefsSignatureArtifact(
      image,
      otherArtifact.layers.map((l: { digest: string; annotations: Record<string, string> }) => {
        const [key, digest] = Object.entries(l.annotations)[0]!;
        const role = /^composefs\.([a-z]+)\./.exec(key)![1] as 'manifest' | 'config' | 'layer' | 'merged';
        return { role, digest, algorithm: 'sha256-12', signature: readFileSync(blob(otherSealed, l.digest)) };
      }),
    );
    await putSignatureArtifact(dst, borrowed);
    // The right merged digest, the signature of another.
    const merged = json(layout, image.digest).annotations['composefs.merged.erofs.v1.fsverity-sha256-12'];
    const swapped = composefsSignatureArtifact(image, [
      { role: 'merged', digest: merged, algorithm: 'sha256-12', signature: sign('cd'.repeat(32)) },
    ]);
    await putSignatureArtifact(dst, swapped);
    // The right digest, a damaged signature.
    const damaged = Buffer.from(sign(merged));
    damaged[damaged.length - 5]! ^= 1;
    await putSignatureArtifact(
      dst,
      composefsSignatureArtifact(image, [
        { role: 'merged', digest: merged, algorithm: 'sha256-12', signature: damaged },
      ]),
    );
    // Signs the layers but not the merged image.
    const layers = json(layout, image.digest).layers.map(
      (l: { annotations: Record<string, string> }) =>
        l.annotations['composefs.layer.erofs.v1.fsverity-sha256-12'],
    );
    await putSignatureArtifact(
      dst,
      composefsSignatureArtifact(
        image,
        layers.map((d: string) => ({
          role: 'layer' as const,
          digest: d,
          algorithm: 'sha256-12',
          signature: sign(d),
        })),
      ),
    );
    await dst.commit();
  } finally {
    await dst.close();
  }
  const stderr = refused(['image', 'verify', `oci:${stale}:s`, '--cert', trusted], 'IMAGE_SIGNATURE_INVALID');
  assert.match(stderr, /its manifest entry \([0-9a-f]{64}\) is not this image's/);
  assert.match(stderr, /signature value does not verify/);
  assert.match(stderr, /does not sign the merged composefs image/);
  assert.equal(stderr.match(/signature value does not verify/g)?.length, 2, stderr);
  // An artifact signing only the merged image (as composefs-rs's own signing makes them) is enough.
  const mergedOnly = join(work, 'merged-only');
  seal('copy', `oci:${layout}:s`, `oci:${mergedOnly}:s`);
  const only = await openDestination(`oci:${mergedOnly}:s`);
  try {
    const merged = json(layout, image.digest).annotations['composefs.merged.erofs.v1.fsverity-sha256-12'];
    await putSignatureArtifact(
      only,
      composefsSignatureArtifact(image, [
        { role: 'merged', digest: merged, algorithm: 'sha256-12', signature: sign(merged) },
      ]),
    );
    await only.commit();
  } finally {
    await only.close();
  }
  assert.match(
    seal('image', 'verify', `oci:${mergedOnly}:s`, '--cert', trusted),
    /accepted, signed by CN=rsa-signer: signs merged/,
  );
  // The genuine signature alongside them is enough.
  seal('copy', '--referrers', `oci:${layout}:s`, `oci:${stale}:s`);
  assert.match(
    seal('image', 'verify', `oci:${stale}:s`, '--cert', trusted),
    /accepted, signed by CN=rsa-signer/,
  );
});

test('seal copy --referrers and seal sync carry the signatures through docker-registry', async () => {
  for (const format of ['cfs', 'squashfs']) {
    const layout = join(work, format);
    const cert = format === 'cfs' ? rsa.cert : ecdsa.cert;
    const remote = `docker://${registry.host}/signed/${format}:v1`;
    const r = await runSealAsync(['copy', '--referrers', `oci:${layout}:s`, remote]);
    assert.equal(r.status, 0, r.stderr);
    const verified = await runSealAsync(['image', 'verify', remote, '--cert', cert]);
    assert.equal(verified.status, 0, verified.stderr);
    assert.match(verified.stdout, /accepted, signed by/);
    // docker-registry 2.8 has no referrers API: the signatures are listed through the tag fallback.
    const tags = await runSealAsync(['ls-tags', `docker://${registry.host}/signed/${format}`]);
    assert.match(tags.stdout, /sha256-[0-9a-f]{64}/);
    const mirror = join(work, `mirror-${format}`);
    const synced = await runSealAsync(['sync', remote, `oci:${mirror}:v1`]);
    assert.equal(synced.status, 0, synced.stderr);
    assert.match(seal('image', 'verify', `oci:${mirror}:v1`, '--cert', cert), /verified, signed/);
  }
});
