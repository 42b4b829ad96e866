/**
 * Failures are typed and their one-line messages cannot be forged by an input: whatever an
 * input holds (newlines, escape sequences, bidirectional overrides) is shown escaped, and a
 * document that is not JSON gets its module's code, never a raw SyntaxError.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { escapeControls, SealError } from '../../src/errors.ts';
import { runSeal, runSealAsync } from '../helpers/cli.ts';
import { fileEntry, tarOf, writeLayout } from '../helpers/layout.ts';
import { scratch } from './helpers.ts';

const work = scratch('messages');
after(() => rmSync(work, { recursive: true, force: true }));

/** A failed command printed exactly one line, `seal: … [CODE]`, with no control character in it. */
function assertOneTypedLine(stderr: string, code: string, what: string): void {
  assert.ok(stderr.endsWith(`[${code}]\n`), `${what}: ${JSON.stringify(stderr)}`);
  const line = stderr.slice(0, -1);
  assert.ok(
    !/[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/.test(line),
    `${what}: ${JSON.stringify(stderr)}`,
  );
  assert.ok(line.startsWith('seal: '), what);
}

test('escapeControls leaves printable text alone and escapes every control and formatting character', () => {
  assert.equal(escapeControls('plain text, ünïcode & "quotes"'), 'plain text, ünïcode & "quotes"');
  assert.equal(escapeControls('a\nb\rc\td'), 'a\\nb\\rc\\td');
  assert.equal(escapeControls('\x1b[31mred\x1b[0m\x07'), '\\x1b[31mred\\x1b[0m\\x07');
  assert.equal(escapeControls('\x9bc1 \x7f'), '\\x9bc1 \\x7f');
  assert.equal(
    escapeControls('evil\u202egnp.exe \u2066x\u2069 \u200b'),
    'evil\\u202egnp.exe \\u2066x\\u2069 \\u200b',
  );
  assert.equal(new SealError('X', 'line one\nseal: forged line').message, 'line one\\nseal: forged line');
});

test('index.json that is not JSON is STORE_INVALID_DOCUMENT, not a raw SyntaxError', () => {
  for (const [what, text] of [
    ['empty', ''],
    ['truncated', '{"schemaVersion": 2, "manifests": ['],
    ['not JSON at all', 'root:x:0:0:root:/root:/bin/bash\n'],
    ['an escape sequence', '\x1b]0;pwned\x07\x1b[2J'],
  ]) {
    const dir = join(work, `index-${what.replace(/\W/g, '')}`);
    writeLayout(dir, [], 't');
    writeFileSync(join(dir, 'index.json'), text);
    const r = runSeal(['image', 'inspect', `oci:${dir}:t`]);
    assert.equal(r.status, 1, what);
    assertOneTypedLine(r.stderr, 'STORE_INVALID_DOCUMENT', what);
  }
  const wrong = join(work, 'index-wrong-shape');
  writeLayout(wrong, [], 't');
  writeFileSync(join(wrong, 'index.json'), '{"schemaVersion":2,"manifests":[{"digest":7}]}');
  assertOneTypedLine(runSeal(['image', 'inspect', `oci:${wrong}:t`]).stderr, 'OCI_INVALID', 'wrong shape');
});

test('a dumpfile whose hardlink target holds an escaped newline cannot forge a second line', () => {
  const dumpfile = join(work, 'forge.dump');
  writeFileSync(
    dumpfile,
    '/ 0 40755 2 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 0 0.0 /no\\nseal:\\x20all\\x20good\\x1b[2K - -\n',
  );
  const r = runSeal(['composefs', 'create', `dumpfile:${dumpfile}`, join(work, 'forge.cfs')]);
  assert.equal(r.status, 1);
  assertOneTypedLine(r.stderr, 'COMPOSEFS_BAD_DUMPFILE', 'hardlink target');
  assert.ok(r.stderr.includes('/no\\nseal: all good\\x1b[2K'), r.stderr);
});

test('names quoted in tree and tar errors are escaped', async () => {
  const dir = join(work, 'dup');
  const name = 'a\x1b[2Jb\nseal: ok';
  writeLayout(dir, [await tarOf([fileEntry(name, 'x'), fileEntry(name, 'y')])], 't');
  const r = runSeal(['image', 'unpack', `oci:${dir}:t`, join(work, 'dup-out')]);
  assert.equal(r.status, 1);
  assertOneTypedLine(r.stderr, 'TREE_DUPLICATE_ENTRY', 'duplicate entry');
});

test('errors that are not Seal’s own (a path with a newline) are escaped by the CLI too', () => {
  const missing = join(work, 'no\nsuch\x1b[31m');
  const r = runSeal(['squashfs', 'ls', missing]);
  assert.equal(r.status, 1);
  assert.equal(r.stderr.split('\n').length, 2, JSON.stringify(r.stderr));
  assert.ok(!/[\x00-\x09\x0b-\x1f]/.test(r.stderr), JSON.stringify(r.stderr));
});

test('a registry whose error answer holds escape sequences cannot forge terminal output', async () => {
  const server = createServer((req, res) => {
    if (req.url === '/v2/') {
      res.writeHead(200).end('{}');
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        errors: [{ code: 'MANIFEST_UNKNOWN', message: 'gone\n\x1b[1Aseal: copied 1 image\x1b[K' }],
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as { port: number };
    const r = await runSealAsync(['image', 'inspect', `docker://127.0.0.1:${port}/x:y`]);
    assert.equal(r.status, 1);
    assertOneTypedLine(r.stderr, 'NOT_FOUND', 'registry error message');
    assert.ok(r.stderr.includes('MANIFEST_UNKNOWN: gone'), r.stderr);
  } finally {
    server.close();
  }
});
