/**
 * The registry commands through the real `seal` executable: login, copy, ls-tags, referrers, sync,
 * logout, and the transport options of each side of a copy (--src-* and --dest-*).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { RegistryOptions } from '../../src/registry/index.ts';
import { type RunResult, runSeal } from '../helpers/cli.ts';
import { opensslKeyPair } from '../helpers/keys.ts';
import { makeTestPki, startRegistry, type TestRegistry } from './harness.ts';
import { MemoryImages, makeImage, makeReferrer, pushImages } from './images.ts';

let registry: TestRegistry;
/** Basic auth too, but another user: what the first registry's credentials open, this one refuses. */
let other: TestRegistry;
/** Two registries over TLS with a throwaway CA (no auth), to tell the sides of a copy apart. */
let tlsSrc: TestRegistry;
let tlsDst: TestRegistry;
/** `ca.crt` of the throwaway CA. */
let caDir: string;
let dir: string;
let env: NodeJS.ProcessEnv;
const source = new MemoryImages();
const image = makeImage(source, 7, [20_000, 30_000]);
const signature = makeReferrer(source, image, 'application/vnd.example.signature', 'sig');

before(async () => {
  registry = await startRegistry('basic');
  dir = mkdtempSync(join(tmpdir(), 'seal-registry-cli-'));
  env = { DOCKER_CONFIG: dir, REGISTRY_AUTH_FILE: '' };
  await pushImages(
    source,
    `docker://${registry.host}/cli/src:v1`,
    { credentials: { username: registry.username, password: registry.password } },
    { tag: 'v1', referrers: true },
  );

  other = await startRegistry('basic', { user: { username: 'other', password: 'another secret' } });
  mkdirSync(join(dir, 'pki'));
  const pki = makeTestPki(join(dir, 'pki'));
  caDir = join(dir, 'certs');
  mkdirSync(caDir);
  copyFileSync(pki.caCert, join(caDir, 'ca.crt'));
  const tls = { tls: { certificate: pki.serverCert, key: pki.serverKey } };
  tlsSrc = await startRegistry('none', tls);
  tlsDst = await startRegistry('none', tls);
  await push(`docker://${tlsSrc.host}/tls/img:v1`, { certDir: caDir });
});
after(async () => {
  await registry?.stop();
  await other?.stop();
  await tlsSrc?.stop();
  await tlsDst?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const push = (ref: string, options: RegistryOptions) => pushImages(source, ref, options);
test('login refuses wrong credentials, stores good ones; the other commands use them', () => {
  const bad = runSeal(['login', registry.host, '-u', registry.username, '--password-stdin'], {
    env,
    input: 'nope\n',
  });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /401/);
  const good = runSeal(['login', registry.host, '-u', registry.username, '--password-stdin'], {
    env,
    input: `${registry.password}\n`,
  });
  assert.equal(good.status, 0, good.stderr);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.equal(
    Buffer.from(config.auths[registry.host].auth, 'base64').toString(),
    `${registry.username}:${registry.password}`,
  );

  const copy = runSeal(
    [
      'copy',
      '--referrers',
      `docker://${registry.host}/cli/src:v1`,
      `docker://${registry.host}/cli/copy:v2`,
      '--json',
    ],
    { env },
  );
  assert.equal(copy.status, 0, copy.stderr);
  const result = JSON.parse(copy.stdout);
  assert.equal(result.root.digest, image.digest);
  assert.equal(result.manifests.copied, 2);

  const tags = runSeal(['ls-tags', `docker://${registry.host}/cli/copy`, '--json'], { env });
  assert.equal(tags.status, 0, tags.stderr);
  assert.deepEqual(JSON.parse(tags.stdout).tags, [`sha256-${image.digest.slice(7)}`, 'v2']);

  const refs = runSeal(['referrers', `docker://${registry.host}/cli/copy:v2`], { env });
  assert.equal(refs.status, 0, refs.stderr);
  assert.match(refs.stdout, new RegExp(`^${signature.digest} application/vnd.example.signature `));

  const sync1 = runSeal(
    ['sync', `docker://${registry.host}/cli/src:v1`, `docker://${registry.host}/cli/mirror:v1`, '--json'],
    { env },
  );
  assert.equal(sync1.status, 0, sync1.stderr);
  assert.equal(JSON.parse(sync1.stdout).manifests.copied, 2);
  const sync2 = runSeal(
    ['sync', `docker://${registry.host}/cli/src:v1`, `docker://${registry.host}/cli/mirror:v1`, '--json'],
    { env },
  );
  assert.equal(sync2.status, 0, sync2.stderr);
  assert.equal(JSON.parse(sync2.stdout).blobs.copied, 0);

  const logout = runSeal(['logout', registry.host], { env });
  assert.equal(logout.status, 0, logout.stderr);
  const denied = runSeal(['ls-tags', `docker://${registry.host}/cli/copy`], { env });
  assert.equal(denied.status, 1);
  assert.match(denied.stderr, /401/);
  assert.equal(runSeal(['logout', registry.host], { env }).status, 1);
});

test('a missing image is a one-line NOT_FOUND error', () => {
  const r = runSeal(
    [
      'copy',
      `docker://${registry.host}/cli/none:v1`,
      `docker://${registry.host}/cli/x:v1`,
      '--creds',
      `${registry.username}:${registry.password}`,
    ],
    { env },
  );
  assert.equal(r.status, 1);
  assert.match(r.stderr, /404/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
});

/** No stored credentials: only the flags give any. */
const bare = (): NodeJS.ProcessEnv => ({ DOCKER_CONFIG: join(dir, 'no-login'), REGISTRY_AUTH_FILE: '' });
const credsOf = (r: TestRegistry) => `${r.username}:${r.password}`;
const untrusted = /TLS: the certificate of 127\.0\.0\.1:\d+ is not trusted .*\[TLS\]$/m;
const unauthorized = /: 401\b.*\[UNAUTHORIZED\]$/m;

/** `seal copy --json FLAGS SRC DEST` with no stored credentials. */
const copy = (src: string, dest: string, ...flags: string[]) =>
  runSeal(['copy', '--json', ...flags, src, dest], { env: bare() });

function assertCopied(r: RunResult): void {
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).root.digest, image.digest);
}

/** One line, exit 1, naming the registry that failed and not the other. */
function assertFailedAt(r: RunResult, failed: TestRegistry, fine: TestRegistry, pattern: RegExp): void {
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
  assert.ok(r.stderr.includes(failed.host), r.stderr);
  assert.ok(!r.stderr.includes(fine.host), r.stderr);
}

test('--src-creds and --dest-creds go to their own side; swapped, the source refuses them', () => {
  const src = `docker://${registry.host}/cli/src:v1`;
  const to = (name: string) => `docker://${other.host}/sides/${name}`;

  assertCopied(copy(src, to('creds:v1'), '--src-creds', credsOf(registry), '--dest-creds', credsOf(other)));
  const tags = runSeal(['ls-tags', '--json', '--creds', credsOf(other), to('creds')], { env: bare() });
  assert.equal(tags.status, 0, tags.stderr);
  assert.deepEqual(JSON.parse(tags.stdout).tags, ['v1']);

  const swapped = copy(
    src,
    to('swapped:v1'),
    '--src-creds',
    credsOf(other),
    '--dest-creds',
    credsOf(registry),
  );
  assertFailedAt(swapped, registry, other, unauthorized);

  // The shared --creds serves the side without a --src-/--dest- of its own.
  assertCopied(copy(src, to('shared:v1'), '--creds', credsOf(registry), '--dest-creds', credsOf(other)));
  assertFailedAt(
    copy(src, to('shared-only:v1'), '--creds', credsOf(registry)),
    other,
    registry,
    unauthorized,
  );
});

test('--src-authfile and --dest-authfile each read their own credentials file', () => {
  const authfile = (name: string, r: TestRegistry) => {
    const path = join(dir, `${name}.json`);
    const auth = Buffer.from(credsOf(r)).toString('base64');
    writeFileSync(path, JSON.stringify({ auths: { [r.host]: { auth } } }));
    return path;
  };
  const a = authfile('auth-src', registry);
  const b = authfile('auth-dest', other);
  const src = `docker://${registry.host}/cli/src:v1`;
  const to = (name: string) => `docker://${other.host}/sides/${name}`;
  assertCopied(copy(src, to('authfile:v1'), '--src-authfile', a, '--dest-authfile', b));
  assertFailedAt(
    copy(src, to('authfile-swapped:v1'), '--src-authfile', b, '--dest-authfile', a),
    registry,
    other,
    unauthorized,
  );
  assertCopied(copy(src, to('authfile-shared:v1'), '--authfile', a, '--dest-authfile', b));
});

/** From tlsSrc to tlsDst, both presenting certificates of the throwaway CA. */
const tlsCopy = (dest: string, ...flags: string[]) =>
  copy(`docker://${tlsSrc.host}/tls/img:v1`, `docker://${tlsDst.host}/tls/${dest}`, ...flags);

test('--src-tls-verify and --dest-cert-dir apply to their side only', () => {
  assertCopied(tlsCopy('a:v1', '--src-tls-verify=false', '--dest-cert-dir', caDir));
  const tags = runSeal(['ls-tags', '--json', '--cert-dir', caDir, `docker://${tlsDst.host}/tls/a`], {
    env: bare(),
  });
  assert.equal(tags.status, 0, tags.stderr);
  assert.deepEqual(JSON.parse(tags.stdout).tags, ['v1']);

  // Either alone leaves the other side verifying against the system's CAs, which refuse.
  assertFailedAt(tlsCopy('b:v1', '--src-tls-verify=false'), tlsDst, tlsSrc, untrusted);
  assertFailedAt(tlsCopy('b:v1', '--dest-cert-dir', caDir), tlsSrc, tlsDst, untrusted);
  assertFailedAt(
    tlsCopy('b:v1', '--dest-tls-verify=false', '--dest-cert-dir', caDir),
    tlsSrc,
    tlsDst,
    untrusted,
  );

  // The shared options, overridden on one side.
  assertCopied(tlsCopy('c:v1', '--cert-dir', caDir, '--src-tls-verify', 'false'));
  assertCopied(tlsCopy('d:v1', '--tls-verify=false', '--dest-cert-dir', caDir, '--dest-tls-verify=true'));
  assertFailedAt(tlsCopy('e:v1', '--tls-verify=false', '--dest-tls-verify=true'), tlsDst, tlsSrc, untrusted);
});

test('a bare --tls-verify means true, shared or per side; --tls-verify false still takes its value', () => {
  // Verification on, so without the CA the source refuses; the flag took no positional argument.
  assertFailedAt(tlsCopy('bare:v1', '--tls-verify'), tlsSrc, tlsDst, untrusted);
  assertCopied(tlsCopy('bare:v1', '--cert-dir', caDir, '--tls-verify'));
  const last = runSeal(
    [
      'copy',
      '--json',
      '--cert-dir',
      caDir,
      `docker://${tlsSrc.host}/tls/img:v1`,
      `docker://${tlsDst.host}/tls/last:v1`,
      '--tls-verify',
    ],
    { env: bare() },
  );
  assertCopied(last);
  // Bare per-side flags override a shared false.
  assertFailedAt(tlsCopy('bare:v2', '--tls-verify=false', '--dest-tls-verify'), tlsDst, tlsSrc, untrusted);
  assertFailedAt(tlsCopy('bare:v2', '--tls-verify', 'false', '--src-tls-verify'), tlsSrc, tlsDst, untrusted);
  // Space-separated values, as before.
  assertCopied(tlsCopy('spaced:v1', '--tls-verify', 'false'));
  assertCopied(tlsCopy('spaced:v2', '--tls-verify', 'true', '--cert-dir', caDir));
  const bad = tlsCopy('bad:v1', '--tls-verify=maybe');
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /^seal: --tls-verify takes true or false, not "maybe"$/m);
});

test('image inspect and import, sign and verify-signature take the same transport options', () => {
  const src = `docker://${registry.host}/cli/src:v1`;
  const inspect = runSeal(['image', 'inspect', '--json', '--creds', credsOf(registry), src], { env: bare() });
  assert.equal(inspect.status, 0, inspect.stderr);
  assert.equal(JSON.parse(inspect.stdout).descriptor.digest, image.digest);
  assertFailedAt(runSeal(['image', 'inspect', src], { env: bare() }), registry, other, unauthorized);

  const layout = join(dir, 'imported');
  const imported = runSeal(
    ['image', 'import', '--json', '--src-creds', credsOf(registry), src, `oci:${layout}:v1`],
    {
      env: bare(),
    },
  );
  assert.equal(imported.status, 0, imported.stderr);
  assert.equal(JSON.parse(imported.stdout).digest, image.digest);
  // And back out to the other registry, whose credentials only the destination side gets.
  const pushed = `docker://${other.host}/imported/img:v1`;
  const exported = runSeal(
    [
      'image',
      'import',
      '--json',
      '--creds',
      credsOf(registry),
      '--dest-creds',
      credsOf(other),
      `oci:${layout}:v1`,
      pushed,
    ],
    { env: bare() },
  );
  assert.equal(exported.status, 0, exported.stderr);
  assert.equal(JSON.parse(exported.stdout).digest, image.digest);
  assertFailedAt(
    runSeal(['image', 'import', '--creds', credsOf(registry), `oci:${layout}:v1`, pushed], { env: bare() }),
    other,
    registry,
    unauthorized,
  );

  const { key } = opensslKeyPair(join(dir, 'sign.key'));
  const signed = `docker://${tlsSrc.host}/tls/img:v1`;
  const refused = runSeal(['sign', '--key', key, signed], { env: bare() });
  assertFailedAt(refused, tlsSrc, tlsDst, untrusted);
  const sign = runSeal(['sign', '--key', key, '--cert-dir', caDir, signed], { env: bare() });
  assert.equal(sign.status, 0, sign.stderr);
  const verify = runSeal(['verify-signature', '--json', '--key', key, '--tls-verify', 'false', signed], {
    env: bare(),
  });
  assert.equal(verify.status, 0, verify.stderr);
  assert.equal(JSON.parse(verify.stdout).target.digest, image.digest);
});
