/** The registry commands through the real `seal` executable: login, copy, ls-tags, referrers, sync, logout. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { mirror, openRegistryDestination } from '../../src/registry/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { startRegistry, type TestRegistry } from './harness.ts';
import { MemoryImages, makeImage, makeReferrer } from './images.ts';

let registry: TestRegistry;
let dir: string;
let env: NodeJS.ProcessEnv;
const source = new MemoryImages();
const image = makeImage(source, 7, [20_000, 30_000]);
const signature = makeReferrer(source, image, 'application/vnd.example.signature', 'sig');

before(async () => {
  registry = await startRegistry('basic');
  dir = mkdtempSync(join(tmpdir(), 'seal-registry-cli-'));
  env = { DOCKER_CONFIG: dir, REGISTRY_AUTH_FILE: '' };
  const dst = await openRegistryDestination(`docker://${registry.host}/cli/src:v1`, {
    credentials: { username: registry.username, password: registry.password },
  });
  await mirror(source, dst, { tag: 'v1', referrers: true });
  await dst.close();
});
after(async () => {
  await registry.stop();
  rmSync(dir, { recursive: true, force: true });
});

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
