/**
 * The product PKI and the signed system manifest: certificates checked by openssl, and every
 * way a device must refuse a system — each refused with its reason, the state file unchanged —
 * plus a good system accepted with one bad signature beside the good one.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  buildSystem,
  canonicalJson,
  ManifestError,
  type ManifestErrorCode,
  parseSystemSpec,
  signSystem,
  verifySystem,
} from '../../src/manifest/index.ts';
import { targetTransport } from '../../src/manifest/verify.ts';
import { digestOf } from '../../src/oci/index.ts';
import {
  CODE_SIGNING_OID,
  generateKeyPair,
  initPki,
  issueCertificate,
  KeySigner,
  loadPrivateKey,
  newProduct,
  parseCertificate,
  productIdOf,
} from '../../src/pki/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { writeThreeLayerImage } from '../helpers/layout.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-manifest-'));
after(() => rm(work, { recursive: true, force: true }));

const PRODUCT = '6f1c0c1e-2a49-4a7e-9d1b-8a3c2f0e5d11';
const pki = join(work, 'pki');
await initPki(pki);
const product = await newProduct(pki, { name: 'Demo appliance', id: PRODUCT });
const ca = parseCertificate(readFileSync(join(pki, 'manifest-ca.pem'), 'utf8'));
const caKey = loadPrivateKey(readFileSync(join(pki, 'manifest-ca.key')));
const productCert = parseCertificate(readFileSync(product.certificate, 'utf8'));
const goodSigner = new KeySigner(loadPrivateKey(readFileSync(product.key)), [productCert, ca]);

// A sealed image for the system to pin.
const layout = join(work, 'layout');
await writeThreeLayerImage(layout);
{
  const r = runSeal(['image', 'seal', `oci:${layout}:test`, `oci:${layout}:sealed`, '--format', 'erofs']);
  assert.equal(r.status, 0, r.stderr);
}

let systems = 0;
// Each system differs (its storage volume's name), so no two tags share one manifest digest.
const yaml = (version: number, image = `oci:${layout}:sealed`) => `product: ${PRODUCT}
version: ${version}
update_type: complete
storage:
  - name: data-${systems}
    size: 1G
    mount: /var/lib/data
targets:
  - name: hostfs
    image: ${image}
    role: host
  - name: web
    image: ${image}
    role: service
    service: { command: ["/usr/bin/web", "--port", "8080"], env: { MODE: prod }, restart: always }
`;

/** Builds (and by default signs) a system at a fresh tag; returns its reference. */
async function system(version = 7, signer: KeySigner | null = goodSigner): Promise<string> {
  const ref = `oci:${layout}:system-${systems}`;
  await buildSystem(parseSystemSpec(yaml(version)), ref);
  systems++;
  if (signer) await signSystem(ref, signer);
  return ref;
}

/** A product signer whose certificate the test shapes. */
async function signerWith(options: {
  id?: string;
  notBefore?: Date;
  days?: number;
  codeSigning?: boolean;
  issuer?: { key: typeof caKey; certificate: typeof ca };
}): Promise<KeySigner> {
  const pair = await generateKeyPair('ecdsa-p256');
  const issuer = options.issuer ?? { key: caKey, certificate: ca };
  const cert = await issueCertificate({
    subject: [
      ['CN', `manifest PRODUCT:${options.id ?? PRODUCT}`],
      ['2.5.4.5', `PRODUCT:${options.id ?? PRODUCT}`],
    ],
    publicKey: pair.publicKey,
    issuer,
    ca: false,
    ...(options.codeSigning === false ? {} : { extendedKeyUsage: [CODE_SIGNING_OID] }),
    ...(options.notBefore ? { notBefore: options.notBefore } : {}),
    days: options.days ?? 30,
  });
  return new KeySigner(pair.privateKey, [cert, issuer.certificate]);
}

const state = join(work, 'state.json');
writeFileSync(
  state,
  `${JSON.stringify({ product: PRODUCT, version: 7, manifest: 'sha256:x', acceptedAt: 'then' })}\n`,
);

/** Verification fails with `code` and a message matching `reason`; the state file is untouched. */
async function refused(
  ref: string,
  code: ManifestErrorCode,
  reason: RegExp,
  extra: { product?: string } = {},
) {
  const before = readFileSync(state, 'utf8');
  await assert.rejects(verifySystem(ref, { ca, state, ...extra }), (e: unknown) => {
    assert.ok(e instanceof ManifestError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, reason);
    return true;
  });
  assert.equal(readFileSync(state, 'utf8'), before, 'the state file must not change');
}

test('the PKI: openssl accepts the chains; subjects, usages and key types are as specified', async () => {
  for (const name of ['manifest-ca', 'device-ca']) {
    execFileSync('openssl', ['verify', '-CAfile', join(pki, `${name}.pem`), join(pki, `${name}.pem`)]);
  }
  execFileSync('openssl', [
    'verify',
    '-CAfile',
    join(pki, 'manifest-ca.pem'),
    '-purpose',
    'any',
    product.certificate,
  ]);
  const text = execFileSync('openssl', ['x509', '-in', product.certificate, '-noout', '-text'], {
    encoding: 'utf8',
  });
  assert.match(text, /Code Signing/);
  assert.match(text, /CA:FALSE/);
  assert.match(text, new RegExp(`CN = manifest PRODUCT:${PRODUCT}`));
  assert.equal(productIdOf(productCert), PRODUCT);
  // A device certificate in Project Machine's form, through the CLI, with an encrypted key.
  const pass = join(work, 'pass');
  writeFileSync(pass, 'correct horse\n');
  const r = runSeal([
    'pki',
    'device',
    'new',
    pki,
    '--product',
    PRODUCT,
    '--serial',
    'SN42',
    '--passphrase-file',
    pass,
  ]);
  assert.equal(r.status, 0, r.stderr);
  execFileSync('openssl', ['verify', '-CAfile', join(pki, 'device-ca.pem'), join(pki, 'devices/SN42.pem')]);
  assert.match(
    execFileSync('openssl', ['x509', '-in', join(pki, 'devices/SN42.pem'), '-noout', '-subject'], {
      encoding: 'utf8',
    }),
    new RegExp(`serialNumber = PID:${PRODUCT} SN:SN42`),
  );
  const key = readFileSync(join(pki, 'devices/SN42.key'), 'utf8');
  assert.match(key, /ENCRYPTED PRIVATE KEY/);
  execFileSync('openssl', [
    'pkey',
    '-in',
    join(pki, 'devices/SN42.key'),
    '-passin',
    'pass:correct horse',
    '-noout',
  ]);
  // Every key type makes a CA openssl accepts.
  for (const type of ['ecdsa-p384', 'rsa-2048', 'ed25519']) {
    const dir = join(work, `pki-${type}`);
    const init = runSeal(['pki', 'init', dir, '--key-type', type]);
    assert.equal(init.status, 0, init.stderr);
    const made = runSeal(['pki', 'product', 'new', dir, '--name', 'x', '--key-type', type]);
    assert.equal(made.status, 0, made.stderr);
    const cert = execFileSync('sh', ['-c', `ls ${dir}/products/*.pem | grep -v chain`], {
      encoding: 'utf8',
    }).trim();
    execFileSync('openssl', ['verify', '-CAfile', join(dir, 'manifest-ca.pem'), '-purpose', 'any', cert]);
  }
  // Keys are never overwritten.
  assert.notEqual(runSeal(['pki', 'init', pki]).status, 0);
});

test('a good system is accepted through the CLI, checks reported and the state advanced', async () => {
  const ref = await system(8);
  const local = join(work, 'state-cli.json');
  const r = runSeal([
    'manifest',
    'verify',
    ref,
    '--ca',
    join(pki, 'manifest-ca.pem'),
    '--product',
    PRODUCT,
    '--state',
    local,
    '--deep',
  ]);
  assert.equal(r.status, 0, r.stderr);
  for (const check of ['signature', 'chain', 'product', 'version', 'targets'])
    assert.match(r.stdout, new RegExp(`ok  ${check}`));
  assert.match(r.stdout, /every layer verified/);
  assert.equal(JSON.parse(readFileSync(local, 'utf8')).version, 8);
  // The CLI signs too, with the key and certificate files of `seal pki product new`.
  const unsigned = await system(9, null);
  const s = runSeal([
    'manifest',
    'sign',
    unsigned,
    '--key',
    product.key,
    '--cert',
    product.certificate,
    '--chain',
    join(pki, 'manifest-ca.pem'),
  ]);
  assert.equal(s.status, 0, s.stderr);
  await verifySystem(unsigned, { ca, state: local });
  assert.equal(JSON.parse(readFileSync(local, 'utf8')).version, 9);
});

test('an edited manifest byte is refused', async () => {
  const ref = await system();
  const tag = ref.split(':').at(-1)!;
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const entry = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.['org.opencontainers.image.ref.name'] === tag,
  );
  const manifestPath = join(layout, 'blobs/sha256', entry.digest.slice(7));
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const docPath = join(layout, 'blobs/sha256', manifest.layers[0].digest.slice(7));
  const original = readFileSync(docPath);
  // In place: the stored bytes no longer match their digest.
  writeFileSync(docPath, Buffer.from(original.toString().replace('"version":7', '"version":70')));
  try {
    await assert.rejects(verifySystem(ref, { ca, state }), /blob sha256:[0-9a-f]+ .*(digest|declared)/);
  } finally {
    writeFileSync(docPath, original);
  }
  // Re-hashed and re-tagged, as an attacker with write access would: the signature is over another manifest.
  const edited = Buffer.from(original.toString().replace('"version":7', '"version":70'));
  writeFileSync(join(layout, 'blobs/sha256', digestOf(edited).slice(7)), edited);
  const newManifest = Buffer.from(
    canonicalJson({
      ...manifest,
      layers: [{ ...manifest.layers[0], digest: digestOf(edited), size: edited.length }],
    }),
  );
  writeFileSync(join(layout, 'blobs/sha256', digestOf(newManifest).slice(7)), newManifest);
  entry.digest = digestOf(newManifest);
  entry.size = newManifest.length;
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  await refused(ref, 'MANIFEST_UNSIGNED', /no signature/);
});

test('a signature over another manifest is refused', async () => {
  const a = await system(7);
  const b = await system(7, null);
  // Re-attach a's signature to b (an attacker copying a valid signature onto another system).
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const target = (tag: string) =>
    index.manifests.find(
      (m: { annotations?: Record<string, string> }) =>
        m.annotations?.['org.opencontainers.image.ref.name'] === tag,
    );
  const aDesc = target(a.split(':').at(-1)!);
  const bDesc = target(b.split(':').at(-1)!);
  const sig = index.manifests.find((m: { artifactType?: string; digest: string }) => {
    if (m.artifactType !== 'application/vnd.cncf.notary.signature') return false;
    return (
      JSON.parse(readFileSync(join(layout, 'blobs/sha256', m.digest.slice(7)), 'utf8')).subject.digest ===
      aDesc.digest
    );
  });
  const sigManifest = JSON.parse(readFileSync(join(layout, 'blobs/sha256', sig.digest.slice(7)), 'utf8'));
  const moved = Buffer.from(
    canonicalJson({
      ...sigManifest,
      subject: { mediaType: bDesc.mediaType, digest: bDesc.digest, size: bDesc.size },
    }),
  );
  writeFileSync(join(layout, 'blobs/sha256', digestOf(moved).slice(7)), moved);
  index.manifests.push({
    mediaType: sig.mediaType,
    digest: digestOf(moved),
    size: moved.length,
    artifactType: sig.artifactType,
  });
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  await refused(b, 'MANIFEST_SIGNATURE_INVALID', /signs another manifest/);
});

test('certificates from another CA, expired, not yet valid, without code signing, or for another product are refused', async () => {
  const otherPki = join(work, 'other-pki');
  await initPki(otherPki);
  const other = {
    key: loadPrivateKey(readFileSync(join(otherPki, 'manifest-ca.key'))),
    certificate: parseCertificate(readFileSync(join(otherPki, 'manifest-ca.pem'), 'utf8')),
  };
  const day = 86_400_000;
  await refused(
    await system(7, await signerWith({ issuer: other })),
    'MANIFEST_SIGNATURE_INVALID',
    /does not chain to the trusted CA/,
  );
  await refused(
    await system(7, await signerWith({ notBefore: new Date(Date.now() - 10 * day), days: 2 })),
    'MANIFEST_SIGNATURE_INVALID',
    /expired/,
  );
  await refused(
    await system(7, await signerWith({ notBefore: new Date(Date.now() + 10 * day) })),
    'MANIFEST_SIGNATURE_INVALID',
    /not valid before/,
  );
  await refused(
    await system(7, await signerWith({ codeSigning: false })),
    'MANIFEST_SIGNATURE_INVALID',
    /code-signing/,
  );
  await refused(
    await system(7, await signerWith({ id: randomUUID() })),
    'MANIFEST_SIGNATURE_INVALID',
    /certificate is for product/,
  );
  // The right certificate, but the device was provisioned for another product.
  await refused(await system(7), 'MANIFEST_WRONG_PRODUCT', /is for product/, { product: randomUUID() });
});

test('an older version than the state file, a changed target, no signature or a garbage envelope are refused', async () => {
  await refused(await system(6), 'MANIFEST_ROLLBACK', /version 6 is older than version 7/);
  // A target whose pinned size is wrong (a bad build, signed anyway).
  const ref = `oci:${layout}:bad-target`;
  const built = await buildSystem(parseSystemSpec(yaml(7)), `oci:${layout}:scratch`);
  systems++;
  const doc = {
    ...built.document,
    targets: built.document.targets.map((t, i) =>
      i === 0 ? { ...t, image: { ...t.image, size: t.image.size + 1 } } : t,
    ),
  };
  const body = Buffer.from(canonicalJson(doc));
  const { openDestination } = await import('../../src/store/index.ts');
  const dst = await openDestination(ref);
  const once = (b: Uint8Array) =>
    (async function* () {
      yield b;
    })();
  await dst.putBlob(
    { mediaType: 'application/vnd.seal.system.manifest.v1+json', digest: digestOf(body), size: body.length },
    once(body),
  );
  const manifest = Buffer.from(
    canonicalJson({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.seal.system.v1',
      config: {
        mediaType: 'application/vnd.oci.empty.v1+json',
        digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
        size: 2,
      },
      layers: [
        {
          mediaType: 'application/vnd.seal.system.manifest.v1+json',
          digest: digestOf(body),
          size: body.length,
        },
      ],
    }),
  );
  await dst.putManifest(
    {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: digestOf(manifest),
      size: manifest.length,
    },
    manifest,
    'bad-target',
  );
  await dst.commit();
  await dst.close();
  await signSystem(ref, goodSigner);
  await refused(ref, 'MANIFEST_TARGET_MISMATCH', /target hostfs/);
  // What a device checks before it fetches the images: the signature, product and version only.
  const signedOnly = await verifySystem(ref, { ca, targets: false });
  assert.deepEqual(
    signedOnly.checks.map((c) => c.check),
    ['digest', 'signature', 'chain', 'product', 'version'],
  );
  await assert.rejects(
    verifySystem(ref, { ca, targets: false, minimumVersion: 8 }),
    (e: unknown) => e instanceof ManifestError && e.code === 'MANIFEST_ROLLBACK',
  );
  await assert.rejects(
    verifySystem(ref, { ca, targets: false, product: '0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c' }),
    (e: unknown) => e instanceof ManifestError && e.code === 'MANIFEST_WRONG_PRODUCT',
  );
  await refused(await system(7, null), 'MANIFEST_UNSIGNED', /no signature is attached/);
  // A garbage envelope in place of the signature.
  const garbage = await system(7, null);
  const garbageSigner = {
    algorithm: 'ES256' as const,
    certificates: [productCert],
    publicKey: goodSigner.publicKey,
    sign: async () => new Uint8Array(64),
  };
  await signSystem(garbage, garbageSigner);
  await refused(garbage, 'MANIFEST_SIGNATURE_INVALID', /does not verify/);
  assert.ok(existsSync(state));
});

test('one bad and one good signature: accepted, the bad one reported', async () => {
  const ref = await system(7);
  await signSystem(ref, await signerWith({ id: randomUUID() }));
  const local = join(work, 'state-mixed.json');
  const report = await verifySystem(ref, { ca, state: local, product: PRODUCT });
  assert.equal(report.signatures.length, 2);
  assert.equal(report.signatures.filter((s) => s.ok).length, 1);
  assert.match(report.signatures.find((s) => !s.ok)!.detail, /certificate is for product/);
  assert.equal(JSON.parse(readFileSync(local, 'utf8')).version, 7);
});

test('verify sends --creds only to the registry of the system, never to another host a target names', async () => {
  const transport = { credentials: { username: 'u', password: 'p' }, certDir: '/certs', tlsVerify: false };
  const withoutCredentials = { certDir: '/certs', tlsVerify: false };
  const system = 'docker://registry.example:5000/acme/system:7';
  for (const [target, expected] of [
    [`docker://registry.example:5000/acme/shell@sha256:${'0'.repeat(64)}`, transport],
    ['docker://REGISTRY.example:5000/acme/shell:1', transport],
    ['docker://elsewhere.example/acme/shell:1', withoutCredentials],
    ['docker://registry.example/acme/shell:1', withoutCredentials], // another port, another server
    ['docker://acme/shell:1', withoutCredentials], // Docker Hub
    ['oci:/var/lib/images:shell', withoutCredentials],
  ] as const) {
    assert.deepEqual(await targetTransport(system, target, transport), expected, target);
  }
  // Docker Hub short names and the explicit host are one registry.
  assert.deepEqual(
    await targetTransport('docker://docker.io/acme/system:7', 'docker://acme/shell:1', transport),
    transport,
  );
  // A system in a local layout shares its credentials with no registry.
  assert.deepEqual(
    await targetTransport('oci:/srv/layout:system', 'docker://registry.example:5000/a:1', transport),
    withoutCredentials,
  );
  assert.equal(await targetTransport(system, 'docker://elsewhere.example/a:1', undefined), undefined);
});

test('envelopes and system YAML from untrusted hands are fuzzed', async () => {
  const { createEnvelope, openEnvelope } = await import('../../src/manifest/index.ts');
  const { prng } = await import('../helpers/trees.ts');
  const random = prng(11);
  const envelope = await createEnvelope(
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: digestOf(Buffer.from('x')), size: 1 },
    goodSigner,
    'test',
  );
  assert.ok(openEnvelope(envelope).certificates.length === 2);
  let opened = 0;
  for (let i = 0; i < 2000; i++) {
    const data = Buffer.from(envelope);
    for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++)
      data[Math.floor(random() * data.length)] = Math.floor(random() * 256);
    try {
      openEnvelope(data);
      opened++;
    } catch (error) {
      assert.ok(error instanceof Error, `case ${i}: ${String(error)}`);
    }
  }
  // Almost every mutation breaks the signature, the JSON or the certificates.
  assert.ok(opened < 100, `${opened} mutated envelopes opened`);
  const text = yaml(3);
  for (let i = 0; i < 1000; i++) {
    const chars = [...text];
    for (let k = 0, n = 1 + Math.floor(random() * 3); k < n; k++)
      chars[Math.floor(random() * chars.length)] = ' :-[]{}"\n0a'[Math.floor(random() * 11)]!;
    try {
      parseSystemSpec(chars.join(''));
    } catch (error) {
      assert.ok(error instanceof ManifestError, `case ${i}: ${String(error)}`);
    }
  }
});

test('sync mirrors a signed system with its signatures and pinned images; gc keeps them; it verifies there; untagged, gc removes it all', async () => {
  const ref = await system(7);
  const fresh = join(work, 'fresh');
  const r = runSeal(['sync', ref, `oci:${fresh}:system`]);
  assert.equal(r.status, 0, r.stderr);
  const gc = runSeal(['store', 'gc'], { env: { SEAL_STORE: fresh } });
  assert.equal(gc.status, 0, gc.stderr);
  // The targets must be found beside the system in the fresh store: hide the original one.
  renameSync(layout, `${layout}.away`);
  try {
    const report = await verifySystem(`oci:${fresh}:system`, { ca, deep: true });
    assert.equal(report.document.targets.length, 2);
  } finally {
    renameSync(`${layout}.away`, layout);
  }
  const { LayoutStore } = await import('../../src/store/index.ts');
  const store = await LayoutStore.open(fresh);
  const entries = (await store.list()).filter((e) => e.name === undefined);
  assert.ok(entries.length > 0, 'the signatures are untagged entries of index.json');
  const kept = await store.gc();
  assert.deepEqual(kept.removed, [], 'nothing of a tagged system goes');
  assert.equal((await store.list()).length, entries.length + 1);
  // Its signatures go with the system: nothing else keeps them.
  const blobs = readdirSync(join(fresh, 'blobs/sha256')).length;
  await store.untag('system');
  const gone = await store.gc();
  assert.deepEqual(await store.list(), [], 'no orphaned signature stays in index.json');
  assert.equal(gone.removed.length, blobs);
  assert.deepEqual(readdirSync(join(fresh, 'blobs/sha256')), []);
});

test('Project Machine install manifests: openssl-signed install.json with its certificate is accepted; tampering is not', async () => {
  const { openDestination } = await import('../../src/store/index.ts');
  const mos = join(work, 'mos-pki');
  execFileSync('bin/seal', ['pki', 'init', mos, '--key-type', 'rsa-2048'], {
    cwd: new URL('../..', import.meta.url).pathname,
  });
  const issued = await newProduct(mos, { name: 'mos product', id: PRODUCT, keyType: 'rsa-2048' });
  const mosCa = parseCertificate(readFileSync(join(mos, 'manifest-ca.pem'), 'utf8'));
  const sealed = JSON.parse(
    runSeal(['image', 'inspect', `oci:${layout}:sealed`, '--json']).stdout,
  ).descriptor;
  const once = (b: Uint8Array) =>
    (async function* () {
      yield b;
    })();
  const empty = {
    mediaType: 'application/vnd.oci.empty.v1+json',
    digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
    size: 2,
  };
  /** Puts an artifact as `regctl artifact put` does: one layer, an empty config, maybe a subject. */
  const put = async (
    tag: string | undefined,
    artifactType: string,
    data: Buffer,
    subject?: { mediaType: string; digest: string; size: number },
  ) => {
    const dst = await openDestination(`oci:${layout}:${tag ?? 'unused'}`);
    const layer = { mediaType: 'application/octet-stream', digest: digestOf(data), size: data.length };
    await dst.putBlob(empty, once(Buffer.from('{}')));
    await dst.putBlob(layer, once(data));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        artifactType,
        config: empty,
        layers: [layer],
        ...(subject ? { subject } : {}),
      }),
    );
    const desc = {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: digestOf(manifest),
      size: manifest.length,
    };
    await dst.putManifest(desc, manifest, tag);
    await dst.commit();
    await dst.close();
    return desc;
  };
  const publish = async (tag: string, install: Buffer, signWith: string, cert: string) => {
    const file = join(work, `${tag}.json`);
    writeFileSync(file, install);
    // The signature exactly as mosb's tests make it.
    execFileSync('openssl', ['dgst', '-sha256', '-sign', signWith, '-out', `${file}.signed`, file]);
    const subject = await put(tag, 'application/vnd.machine.install', install);
    await put(undefined, 'application/vnd.machine.pubkeycrt', readFileSync(cert), subject);
    await put(undefined, 'application/vnd.machine.signature', readFileSync(`${file}.signed`), subject);
  };
  const install = (version: number) =>
    Buffer.from(
      `${JSON.stringify({ version, product: PRODUCT, update_type: 'complete', targets: [{ service_name: 'hostfs', version: '1.0.0', digest: sealed.digest, size: sealed.size, service_type: 'hostfs', nsgroup: '', network: { type: 'host' } }] }, null, 2)}\n`,
    );
  await publish('mos-good', install(1), issued.key, issued.certificate);
  const report = await verifySystem(`oci:${layout}:mos-good`, { ca: mosCa, product: PRODUCT, deep: true });
  assert.equal(report.document.version, 1);
  // Signed by a key whose certificate is attached but from another CA.
  await refused(`oci:${layout}:mos-good`, 'MANIFEST_SIGNATURE_INVALID', /does not chain/);
  // The certificate does not match the key that signed.
  const other = await newProduct(mos, { name: 'other', keyType: 'rsa-2048' });
  await publish('mos-wrong-key', install(2), other.key, issued.certificate);
  await assert.rejects(verifySystem(`oci:${layout}:mos-wrong-key`, { ca: mosCa }), /does not verify/);
  // An edited install.json is another artifact: the signatures stay with the original.
  await put('mos-edited', 'application/vnd.machine.install', install(4));
  await assert.rejects(
    verifySystem(`oci:${layout}:mos-edited`, { ca: mosCa }),
    /no signature and certificate/,
  );
});
