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

test('an option with an implicit value: bare, joined with =, or followed by one of its choices', () => {
  const help = runSeal(['copy', '--help']);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^ {2}--tls-verify\[=true\|false\] /m);
  assert.match(help.stdout, /^ {2}--dest-tls-verify\[=true\|false\] /m);

  // Parsed, the commands get as far as opening their (missing) source: exit 1, not a usage error.
  const missing = '/nonexistent/seal-cli-test';
  const opened = /^seal: no OCI image layout at \/nonexistent\/seal-cli-test \[STORE_NOT_A_LAYOUT\]$/;
  for (const args of [
    ['image', 'inspect', '--tls-verify', `oci:${missing}:v1`],
    ['copy', `oci:${missing}:v1`, `oci:${missing}-out:v1`, '--tls-verify'],
    ['copy', '--tls-verify', 'false', `oci:${missing}:v1`, `oci:${missing}-out:v1`],
    ['copy', '--src-tls-verify', '--dest-tls-verify=false', `oci:${missing}:v1`, `oci:${missing}-out:v1`],
    ['copy', '--tls-verify', '--', `oci:${missing}:v1`, `oci:${missing}-out:v1`],
  ]) {
    const r = runSeal(args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr.trim(), opened, args.join(' '));
  }

  // A word that is not a choice stays a positional argument; a joined value must be a choice.
  const extra = runSeal(['copy', '--tls-verify', 'maybe', `oci:${missing}:v1`, `oci:${missing}-out:v1`]);
  assert.equal(extra.status, 2);
  assert.match(extra.stderr, /^seal: usage: seal copy SRC DEST$/m);
  const bad = runSeal(['copy', '--dest-tls-verify=maybe', `oci:${missing}:v1`, `oci:${missing}-out:v1`]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^seal: --dest-tls-verify takes true or false, not "maybe"$/m);
});
