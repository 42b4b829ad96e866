/**
 * Registries over TLS with a throwaway CA: an unknown CA is refused clearly and nothing is
 * written; `--cert-dir` (or containers' `certs.d/HOST`) and `--tls-verify=false` make copies
 * work, byte for byte; a client certificate is presented when the registry demands one; skopeo
 * and Seal exchange images over TLS.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import type { Descriptor } from '../../src/oci/types.ts';
import {
  mirror,
  openRegistrySource,
  RegistryClient,
  type RegistryOptions,
} from '../../src/registry/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { opensslKeyPair } from '../helpers/keys.ts';
import { makeTestPki, startRegistry, type TestPki, type TestRegistry } from './harness.ts';
import { MemoryImages, makeImage, pushImages, readLayout, writeLayout } from './images.ts';

let dir: string;
let pki: TestPki;
/** htpasswd Basic auth over TLS. */
let registry: TestRegistry;
/** No auth, but a client certificate issued by the test CA is required. */
let mtls: TestRegistry;
/** `ca.crt` only. */
let caDir: string;
/** `ca.crt` and `client.cert` + `client.key`. */
let clientDir: string;
const source = new MemoryImages();
const image = makeImage(source, 31, [150_000, 0, 60_000]);
let creds: string;
const auth = (): RegistryOptions => ({
  credentials: { username: registry.username, password: registry.password },
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'seal-tls-'));
  mkdirSync(join(dir, 'pki'));
  pki = makeTestPki(join(dir, 'pki'));
  caDir = join(dir, 'certs-ca');
  clientDir = join(dir, 'certs-client');
  for (const d of [caDir, clientDir]) {
    mkdirSync(d);
    copyFileSync(pki.caCert, join(d, 'ca.crt'));
  }
  copyFileSync(pki.clientCert, join(clientDir, 'client.cert'));
  copyFileSync(pki.clientKey, join(clientDir, 'client.key'));
  const tls = { certificate: pki.serverCert, key: pki.serverKey };
  registry = await startRegistry('basic', { tls });
  mtls = await startRegistry('none', { tls: { ...tls, clientCa: pki.caCert } });
  creds = `${registry.username}:${registry.password}`;
  await push(`docker://${registry.host}/tls/img:v1`, { ...auth(), certDir: caDir });
});
after(async () => {
  await registry?.stop();
  await mtls?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function pull(ref: string, options: RegistryOptions): Promise<MemoryImages> {
  const src = await openRegistrySource(ref, options);
  const into = new MemoryImages();
  try {
    await mirror(src, into, {});
  } finally {
    await src.close();
  }
  return into;
}

const push = (ref: string, options: RegistryOptions) => pushImages(source, ref, options);

function assertSameImage(pulled: MemoryImages, root?: Descriptor): void {
  if (root) assert.equal(root.digest, image.digest);
  assert.deepEqual([...pulled.blobs.keys()].sort(), [...source.blobs.keys()].sort());
  for (const [digest, bytes] of source.blobs) assert.ok(pulled.blobs.get(digest)?.equals(bytes), digest);
}

function assertLayoutMatches(layout: string): void {
  const pulled = new MemoryImages();
  assertSameImage(pulled, readLayout(layout, pulled));
}

/** Blobs in a layout the CLI may have created before failing. */
function blobsIn(layout: string): string[] {
  const blobs = join(layout, 'blobs', 'sha256');
  return existsSync(blobs) ? readdirSync(blobs) : [];
}

const isTlsError = (pattern: RegExp) => (e: Error & { code?: string }) => {
  assert.equal(e.code, 'TLS', e.message);
  assert.match(e.message, pattern);
  return true;
};

function assertOneLineTlsFailure(r: { status: number; stderr: string }, pattern: RegExp): void {
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
  assert.match(r.stderr, /\[TLS\]$/m);
}

test('an unknown CA is refused with a TLS error naming the problem, and nothing is written', async () => {
  const untrusted = /TLS: the certificate of 127\.0\.0\.1:\d+ is not trusted .*--cert-dir/;
  await assert.rejects(push(`docker://${registry.host}/tls/refused:v1`, auth()), isTlsError(untrusted));
  await assert.rejects(pull(`docker://${registry.host}/tls/img:v1`, auth()), isTlsError(untrusted));
  const trusted = new RegistryClient(registry.host, { ...auth(), certDir: caDir });
  try {
    assert.equal(await trusted.headManifest('tls/refused', 'v1'), undefined);
    for (const digest of source.blobs.keys())
      assert.equal(await trusted.hasBlob('tls/refused', digest), false);
  } finally {
    trusted.close();
  }

  const out = join(dir, 'refused-pull');
  const r = runSeal(['copy', '--creds', creds, `docker://${registry.host}/tls/img:v1`, `oci:${out}:v1`]);
  assertOneLineTlsFailure(r, untrusted);
  assert.deepEqual(blobsIn(out), []);
});

test('--cert-dir with the CA: copy, ls-tags and login work, round trips byte-identical', async () => {
  assertSameImage(await pull(`docker://${registry.host}/tls/img:v1`, { ...auth(), certDir: caDir }));

  const out = join(dir, 'cert-dir-pull');
  const down = runSeal([
    'copy',
    '--cert-dir',
    caDir,
    '--creds',
    creds,
    `docker://${registry.host}/tls/img:v1`,
    `oci:${out}:v1`,
  ]);
  assert.equal(down.status, 0, down.stderr);
  assertLayoutMatches(out);

  const up = runSeal([
    'copy',
    '--cert-dir',
    caDir,
    '--creds',
    creds,
    `oci:${out}:v1`,
    `docker://${registry.host}/tls/back:v2`,
  ]);
  assert.equal(up.status, 0, up.stderr);
  assertSameImage(await pull(`docker://${registry.host}/tls/back:v2`, { ...auth(), certDir: caDir }));

  const env = { DOCKER_CONFIG: join(dir, 'docker-login'), REGISTRY_AUTH_FILE: '' };
  const login = runSeal(
    ['login', '--cert-dir', caDir, registry.host, '-u', registry.username, '--password-stdin'],
    { env, input: `${registry.password}\n` },
  );
  assert.equal(login.status, 0, login.stderr);
  const tags = runSeal(['ls-tags', '--cert-dir', caDir, `docker://${registry.host}/tls/back`, '--json'], {
    env,
  });
  assert.equal(tags.status, 0, tags.stderr);
  assert.deepEqual(JSON.parse(tags.stdout).tags, ['v2']);
  const refs = runSeal(
    ['referrers', '--cert-dir', caDir, `docker://${registry.host}/tls/back:v2`, '--json'],
    {
      env,
    },
  );
  assert.equal(refs.status, 0, refs.stderr);
  assert.deepEqual(JSON.parse(refs.stdout).referrers, []);
});

test('--tls-verify=false works without the CA', async () => {
  await push(`docker://${registry.host}/tls/unverified:v1`, { ...auth(), tlsVerify: false });
  const out = join(dir, 'unverified-pull');
  const r = runSeal([
    'copy',
    '--tls-verify=false',
    '--creds',
    creds,
    `docker://${registry.host}/tls/unverified:v1`,
    `oci:${out}:v1`,
  ]);
  assert.equal(r.status, 0, r.stderr);
  assertLayoutMatches(out);
});

test('a loopback server that closes plain HTTP connections is asked once in the clear, then spoken to in TLS', async () => {
  const authorizations: (string | undefined)[] = [];
  let plainAttempts = 0;
  const server = https.createServer(
    { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) },
    (req, res) => {
      authorizations.push(req.headers.authorization);
      res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0' }).end('{}');
    },
  );
  // What Node's HTTPS server does with plain HTTP: no answer, the connection is closed.
  server.on('tlsClientError', () => plainAttempts++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = new RegistryClient(`127.0.0.1:${(server.address() as AddressInfo).port}`, {
    ...auth(),
    certDir: caDir,
  });
  try {
    await client.ping();
    await client.ping();
  } finally {
    client.close();
    await new Promise((r) => server.close(r));
  }
  assert.equal(plainAttempts, 1, 'asked once in plain HTTP');
  assert.equal(authorizations.length, 2, 'both pings went over TLS');
});

test('a client certificate from the cert dir is presented when required; without one the failure is clear', async () => {
  const wanted = /TLS: 127\.0\.0\.1:\d+ refused the connection .*client certificate/;
  await assert.rejects(push(`docker://${mtls.host}/mtls/img:v1`, { certDir: caDir }), isTlsError(wanted));
  await assert.rejects(push(`docker://${mtls.host}/mtls/img:v1`, { tlsVerify: false }), isTlsError(wanted));

  await push(`docker://${mtls.host}/mtls/img:v1`, { certDir: clientDir });
  assertSameImage(await pull(`docker://${mtls.host}/mtls/img:v1`, { certDir: clientDir }));

  const out = join(dir, 'mtls-pull');
  const refused = runSeal([
    'copy',
    '--cert-dir',
    caDir,
    `docker://${mtls.host}/mtls/img:v1`,
    `oci:${out}:v1`,
  ]);
  assertOneLineTlsFailure(refused, wanted);
  assert.deepEqual(blobsIn(out), []);
  const r = runSeal(['copy', '--cert-dir', clientDir, `docker://${mtls.host}/mtls/img:v1`, `oci:${out}:v1`]);
  assert.equal(r.status, 0, r.stderr);
  assertLayoutMatches(out);
});

test('the certificate directory is checked: a key without its certificate is a TLS error', async () => {
  const broken = join(dir, 'certs-broken');
  mkdirSync(broken);
  copyFileSync(pki.caCert, join(broken, 'ca.crt'));
  copyFileSync(pki.clientKey, join(broken, 'client.key'));
  await assert.rejects(
    pull(`docker://${registry.host}/tls/img:v1`, { ...auth(), certDir: broken }),
    isTlsError(/client\.key has no matching client\.cert/),
  );
});

/** Asynchronous: the registries answering skopeo are children of this process, but keep the loop free anyway. */
async function skopeo(...args: string[]): Promise<void> {
  await promisify(execFile)('skopeo', ['--insecure-policy', 'copy', '--quiet', ...args], {
    timeout: 120_000,
  });
}

test('skopeo pulls what Seal pushed over TLS and Seal pulls what skopeo pushed', async () => {
  const layout = join(dir, 'skopeo-pulled');
  await skopeo(
    '--preserve-digests',
    '--src-cert-dir',
    caDir,
    '--src-creds',
    creds,
    `docker://${registry.host}/tls/img:v1`,
    `oci:${layout}:v1`,
  );
  assertLayoutMatches(layout);

  const pushed = join(dir, 'skopeo-push');
  writeLayout(source, pushed, image, 'v1');
  // Through the registry that demands a client certificate: skopeo reads the same directory layout.
  await skopeo(
    '--preserve-digests',
    '--dest-cert-dir',
    clientDir,
    `oci:${pushed}:v1`,
    `docker://${mtls.host}/mtls/from-skopeo:v1`,
  );
  assertSameImage(await pull(`docker://${mtls.host}/mtls/from-skopeo:v1`, { certDir: clientDir }));
  await skopeo(
    '--preserve-digests',
    '--dest-tls-verify=false',
    '--dest-creds',
    creds,
    `oci:${pushed}:v1`,
    `docker://${registry.host}/tls/from-skopeo:v1`,
  );
  assertSameImage(
    await pull(`docker://${registry.host}/tls/from-skopeo:v1`, { ...auth(), tlsVerify: false }),
  );
});

test('without --cert-dir, containers certs.d/HOST is used: login, ls-tags, sign and verify-signature', () => {
  const config = join(dir, 'xdg');
  const hostDir = join(config, 'containers', 'certs.d', registry.host);
  mkdirSync(hostDir, { recursive: true });
  copyFileSync(pki.caCert, join(hostDir, 'ca.crt'));
  const env = { XDG_CONFIG_HOME: config, DOCKER_CONFIG: join(dir, 'docker-certs-d'), REGISTRY_AUTH_FILE: '' };
  const login = runSeal(['login', registry.host, '-u', registry.username, '--password-stdin'], {
    env,
    input: `${registry.password}\n`,
  });
  assert.equal(login.status, 0, login.stderr);
  const tags = runSeal(['ls-tags', `docker://${registry.host}/tls/img`, '--json'], { env });
  assert.equal(tags.status, 0, tags.stderr);
  assert.deepEqual(JSON.parse(tags.stdout).tags, ['v1']);

  const { key } = opensslKeyPair(join(dir, 'sign.key'));
  const ref = `docker://${registry.host}/tls/img:v1`;
  const sign = runSeal(['sign', '--key', key, ref], { env });
  assert.equal(sign.status, 0, sign.stderr);
  const verify = runSeal(['verify-signature', '--key', key, ref, '--json'], { env });
  assert.equal(verify.status, 0, verify.stderr);
  assert.equal(JSON.parse(verify.stdout).target.digest, image.digest);

  // The same commands without the directory are refused.
  const bare = runSeal(['ls-tags', `docker://${registry.host}/tls/img`], {
    env: { ...env, XDG_CONFIG_HOME: join(dir, 'nowhere') },
  });
  assertOneLineTlsFailure(bare, /not trusted/);
});
