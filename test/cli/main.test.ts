import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));

test('--version prints the package version', () => {
  const r = runSeal(['--version']);
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), `seal ${pkg.version}`);
  assert.deepEqual(JSON.parse(runSeal(['--version', '--json']).stdout), { version: pkg.version });
});

test('--help lists commands and exits 0', () => {
  const r = runSeal(['--help']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^Usage: seal COMMAND/);
});

test('an unknown command fails with one line and exit 2', () => {
  const r = runSeal(['frobnicate']);
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});

test('the CLI runs on the pinned Node.js', () => {
  const r = runSeal(['--version']);
  assert.equal(r.status, 0);
  assert.equal(pkg.devDependencies.node, process.versions.node);
});
