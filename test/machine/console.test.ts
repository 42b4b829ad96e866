/**
 * The console as the host shows it: the firmware's escape sequences dropped, controls a guest
 * could use against the terminal escaped, sequences and characters split across chunks handled;
 * fuzzed with random byte streams cut at random places (the output never holds an unsafe
 * character and equals the unsplit result). And following a log as it grows, is replaced, and
 * its writer goes.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ConsoleText, followFile } from '../../src/machine/index.ts';
import { prng } from '../helpers/trees.ts';

const show = (...chunks: (string | Buffer)[]) => {
  const c = new ConsoleText();
  return chunks.map((x) => c.push(Buffer.from(x))).join('') + c.end();
};

test("OVMF's screen control is dropped; text, newlines and tabs stay; carriage returns go", () => {
  assert.equal(
    show('\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r\n\x1b[0m\tok\x1b(B\x1b7\n'),
    'BdsDxe: loading Boot0001\n\tok\n',
  );
  assert.equal(show('seal: [ ok ] find the disk (12 ms)\r\n'), 'seal: [ ok ] find the disk (12 ms)\n');
  assert.equal(show('café ✓ 日本\n'), 'café ✓ 日本\n');
});

test('what a guest could do to the terminal is shown, not done', () => {
  // A window title (OSC, ended by BEL or ST), bell, backspaces, a bidi override, C1 CSI.
  assert.equal(show('a\x1b]0;owned\x07b\x1b]2;x\x1b\\c'), 'abc');
  assert.equal(show('bell\x07 back\x08\x08 \u202eevil\n'), 'bell\\x07 back\\x08\\x08 \\u202eevil\n');
  assert.equal(show(Buffer.from([0x41, 0xc2, 0x9b, 0x32, 0x4a])), 'A\\x9b2J');
  // A lone ESC, an unfinished sequence at the end, a sequence with a byte out of place.
  assert.equal(show('x\x1b'), 'x\\x1b');
  assert.equal(show('x\x1b[12'), 'x\\x1b[12');
  assert.equal(show('x\x1b[1\x01m'), 'x\\x1b[1\\x01m');
});

test('sequences and UTF-8 characters split between chunks', () => {
  assert.equal(show('a\x1b', '[2', 'Jb'), 'ab');
  assert.equal(show('a\x1b]0;ti', 'tle\x07b'), 'ab');
  assert.equal(show(Buffer.from([0xe2, 0x9c]), Buffer.from([0x93, 0x0a])), '✓\n');
});

test('fuzz: random consoles cut anywhere give the same safe text as whole', () => {
  const random = prng(0x5eed);
  const alphabet = [
    0x1b, 0x5b, 0x5d, 0x07, 0x5c, 0x0d, 0x0a, 0x09, 0x30, 0x3b, 0x41, 0x6d, 0x9b, 0xc2, 0xe2, 0x80,
  ];
  for (let round = 0; round < 3000; round++) {
    const n = Math.floor(random() * 400);
    const bytes = Buffer.alloc(n);
    for (let i = 0; i < n; i++)
      bytes[i] =
        random() < 0.6 ? alphabet[Math.floor(random() * alphabet.length)]! : Math.floor(random() * 256);
    const whole = show(bytes);
    const cuts: Buffer[] = [];
    for (let at = 0; at < n; ) {
      const len = 1 + Math.floor(random() * 40);
      cuts.push(bytes.subarray(at, at + len));
      at += len;
    }
    assert.equal(show(...cuts), whole, `round ${round}`);
    assert.doesNotMatch(
      whole,
      /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]/,
      `round ${round}: ${JSON.stringify(whole)}`,
    );
  }
  // A sequence that never ends does not hold the output back without bound.
  const c = new ConsoleText();
  const out = c.push(Buffer.from(`\x1b]${'x'.repeat(10_000)}`));
  assert.ok(out.length > 9_000);
});

const dir = mkdtempSync(join(tmpdir(), 'seal-console-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('following a log: what is there, what is appended, a new log after a restart, the end with the writer', async () => {
  const log = join(dir, 'console.log');
  writeFileSync(log, 'one\n');
  let alive = true;
  let got = '';
  const steps = [
    () => appendFileSync(log, 'two\n'),
    () => {
      renameSync(log, `${log}.1`);
      writeFileSync(log, 'three\n');
    },
    () => {
      appendFileSync(log, 'four\n');
      alive = false;
    },
  ];
  await followFile(log, {
    intervalMs: 5,
    alive: () => alive,
    onData: (chunk) => {
      got += chunk.toString();
      if (got.endsWith('\n')) steps.shift()?.();
    },
  });
  assert.equal(got, 'one\ntwo\nthree\nfour\n');
});

test('following: from the end, a log that does not exist yet, and an abort', async () => {
  const log = join(dir, 'later.log');
  let got = '';
  let polls = 0;
  await followFile(log, {
    intervalMs: 5,
    alive: () => {
      polls++;
      if (polls === 3) writeFileSync(log, 'late\n');
      return polls < 6;
    },
    onData: (chunk) => (got += chunk.toString()),
  });
  assert.equal(got, 'late\n');
  got = '';
  const stop = new AbortController();
  await followFile(log, {
    fromEnd: true,
    intervalMs: 5,
    signal: stop.signal,
    alive: () => {
      appendFileSync(log, 'new\n');
      return true;
    },
    onData: (chunk) => {
      got += chunk.toString();
      stop.abort();
    },
  });
  assert.match(got, /^(new\n)+$/);
});
