/**
 * UEFI formats against efitools and Debian's OVMF varstores: signature lists equal
 * cert-to-efi-sig-list's and are read back by sig-list-to-certs; image digests match
 * hash-to-efi-sig-list; .auth payloads are byte-identical to sign-efi-sig-list's; Debian's
 * empty, snakeoil and Microsoft varstores read as what they are; Seal's enrolled varstores keep
 * the firmware volume valid and list what was enrolled; damaged inputs give typed errors.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  EfiError,
  encodeSignatureLists,
  GUIDS,
  parseAuthenticatedVariable,
  parseSignatureLists,
  secureBootState,
  Varstore,
} from '../../src/efi/index.ts';
import { isSealError } from '../../src/errors.ts';
import { authenticodeDigest, withPeImage } from '../../src/pe/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { opensslCertificate, STUB_254 } from '../helpers/efi.ts';
import { prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-efi-'));
after(() => rm(work, { recursive: true, force: true }));
const f = (name: string) => join(work, name);
const OWNER = '11111111-2222-3333-4444-555555555555';
const OVMF = '/usr/share/OVMF';

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('signature lists: equal to cert-to-efi-sig-list, read back by sig-list-to-certs, digests as hash-to-efi-sig-list', () => {
  const a = opensslCertificate(work, 'a');
  const b = opensslCertificate(work, 'b', 'ecdsa-p256');
  for (const c of [a, b]) {
    const esl = f(`${c.cert}.esl`.replace(/.*\//, ''));
    execFileSync('cert-to-efi-sig-list', ['-g', OWNER, c.cert, esl]);
    const der = new X509Certificate(readFileSync(c.cert)).raw;
    const ours = encodeSignatureLists([{ type: GUIDS.certX509, owner: OWNER, data: der }]);
    assert.deepEqual(ours, readFileSync(esl));
  }
  // Two certificates and two hashes in Seal's lists; sig-list-to-certs finds both certificates.
  const entries = [
    { type: GUIDS.certX509, owner: OWNER, data: new X509Certificate(readFileSync(a.cert)).raw },
    { type: GUIDS.certX509, owner: OWNER, data: new X509Certificate(readFileSync(b.cert)).raw },
    { type: GUIDS.certSha256, owner: OWNER, data: Buffer.alloc(32, 1) },
    { type: GUIDS.certSha256, owner: OWNER, data: Buffer.alloc(32, 2) },
  ];
  const lists = encodeSignatureLists(entries);
  assert.deepEqual(parseSignatureLists(lists), entries);
  writeFileSync(f('mixed.esl'), lists);
  execFileSync('sig-list-to-certs', [f('mixed.esl'), f('out')], { stdio: 'ignore' });
  const extracted = readdirSync(work)
    .filter((n) => /^out-\d+\.der$/.test(n))
    .sort();
  assert.deepEqual(
    extracted.map((n) => readFileSync(f(n))),
    [entries[0]!.data, entries[1]!.data],
  );
  // The two hashes share one list: 3 lists in all.
  let count = 0;
  for (let at = 0; at < lists.length; at += lists.readUInt32LE(at + 16)) count++;
  assert.equal(count, 3);
  execFileSync('hash-to-efi-sig-list', [STUB_254, f('hash.esl')], { stdio: 'ignore' });
  const [hash] = parseSignatureLists(readFileSync(f('hash.esl')));
  assert.equal(hash!.type, GUIDS.certSha256);
  assert.deepEqual(
    hash!.data,
    withPeImage(STUB_254, (i) => authenticodeDigest(i)),
  );
});

test('.auth payloads are byte-identical to sign-efi-sig-list (replace and append, PK/KEK/db/dbx)', () => {
  seal('secureboot', 'keys', f('keys'));
  const extra = opensslCertificate(work, 'extra');
  const cases: [string, string, boolean][] = [
    ['db', 'KEK', true],
    ['db', 'KEK', false],
    ['dbx', 'KEK', true],
    ['KEK', 'PK', true],
    ['PK', 'PK', false],
  ];
  for (const [variable, signer, append] of cases) {
    const esl = f('extra.esl');
    execFileSync('cert-to-efi-sig-list', ['-g', OWNER, extra.cert, esl]);
    const theirs = f(`${variable}-${append}.theirs.auth`);
    execFileSync(
      'sign-efi-sig-list',
      [
        ...(append ? ['-a'] : []),
        '-t',
        '2025-06-01 12:34:56',
        '-g',
        OWNER,
        '-k',
        f(`keys/${signer}.key`),
        '-c',
        f(`keys/${signer}.crt`),
        variable,
        esl,
        theirs,
      ],
      { stdio: 'ignore' },
    );
    const ours = f(`${variable}-${append}.auth`);
    seal(
      'secureboot',
      'auth',
      variable,
      ours,
      '--add',
      extra.cert,
      '--owner',
      OWNER,
      '--time',
      '2025-06-01T12:34:56Z',
      '--key',
      f(`keys/${signer}.key`),
      '--cert',
      f(`keys/${signer}.crt`),
      ...(append ? ['--append'] : []),
    );
    assert.deepEqual(
      readFileSync(ours),
      readFileSync(theirs),
      `${variable} signed by ${signer}${append ? ', append' : ''}`,
    );
    const parsed = parseAuthenticatedVariable(readFileSync(ours));
    assert.deepEqual(parsed.data, readFileSync(esl));
  }
});

test("Debian's varstores read as what they are: empty (setup mode), snakeoil (its test key), Microsoft's", () => {
  const empty = secureBootState(Varstore.parse(readFileSync(`${OVMF}/OVMF_VARS_4M.fd`)));
  assert.equal(empty.enabled, false);
  assert.equal(empty.setupMode, true);
  const snakeoil = secureBootState(Varstore.parse(readFileSync(`${OVMF}/OVMF_VARS_4M.snakeoil.fd`)));
  assert.equal(snakeoil.enabled, true);
  const key = new X509Certificate(readFileSync('/usr/share/ovmf/PkKek-1-snakeoil.pem'));
  for (const list of [snakeoil.pk, snakeoil.kek, snakeoil.db]) {
    assert.equal(list.length, 1);
    assert.deepEqual(list[0]!.data, key.raw);
  }
  assert.equal(snakeoil.dbx.length, 1);
  assert.equal(snakeoil.dbx[0]!.type, GUIDS.certSha256);
  const ms = secureBootState(Varstore.parse(readFileSync(`${OVMF}/OVMF_VARS_4M.ms.fd`)));
  assert.equal(ms.enabled, true);
  const subjects = ms.db.map((e) => new X509Certificate(e.data).subject);
  assert.ok(
    subjects.some((s) => /Microsoft Windows Production PCA 2011/.test(s)),
    subjects.join('; '),
  );
  assert.ok(
    subjects.some((s) => /Microsoft Corporation UEFI CA 2011/.test(s)),
    subjects.join('; '),
  );
  // The lister shows the same.
  const listed = JSON.parse(seal('secureboot', 'list', `${OVMF}/OVMF_VARS_4M.ms.fd`, '--json')) as {
    secureBoot: boolean;
    keys: { db: { subject?: string }[] };
  };
  assert.equal(listed.secureBoot, true);
  assert.equal(listed.keys.db.length, ms.db.length);
});

test('enrollment keeps the firmware volume valid and the other variables, and is reproducible', () => {
  seal('secureboot', 'keys', f('keys2'));
  const enroll = (out: string) =>
    seal(
      'secureboot',
      'enroll',
      `${OVMF}/OVMF_VARS_4M.snakeoil.fd`,
      out,
      '--pk',
      f('keys2/PK.crt'),
      '--kek',
      f('keys2/KEK.crt'),
      '--kek',
      '/usr/share/ovmf/PkKek-1-snakeoil.pem',
      '--db',
      f('keys2/db.crt'),
      '--db',
      `sha256:${'ab'.repeat(32)}`,
      '--dbx',
      `sha256:${'cd'.repeat(32)}`,
    );
  enroll(f('enrolled.fd'));
  enroll(f('enrolled2.fd'));
  assert.deepEqual(readFileSync(f('enrolled.fd')), readFileSync(f('enrolled2.fd')));
  const before = readFileSync(`${OVMF}/OVMF_VARS_4M.snakeoil.fd`);
  const after = readFileSync(f('enrolled.fd'));
  assert.equal(after.length, before.length);
  // Firmware volume header (with its checksum) and everything past the variable store: untouched.
  assert.deepEqual(after.subarray(0, 0x48), before.subarray(0, 0x48));
  assert.deepEqual(after.subarray(0x40000), before.subarray(0x40000));
  const store = Varstore.parse(after);
  const state = secureBootState(store);
  assert.equal(state.enabled, true);
  assert.deepEqual(
    state.kek.map((e) => new X509Certificate(e.data).subject),
    [
      'CN=Seal Key Exchange Key',
      new X509Certificate(readFileSync('/usr/share/ovmf/PkKek-1-snakeoil.pem')).subject,
    ],
  );
  assert.deepEqual(
    state.db.map((e) => e.type),
    [GUIDS.certX509, GUIDS.certSha256],
  );
  assert.equal(state.dbx[0]!.data.toString('hex'), 'cd'.repeat(32));
  // The non-Secure Boot variables the snakeoil store had (boot options, console) are still there.
  const names = (s: Varstore) => s.variables().map((v) => v.name);
  for (const name of ['Boot0000', 'Timeout', 'PlatformLang', 'ConOut', 'MTC'])
    assert.ok(names(store).includes(name), name);
  const listed = seal('secureboot', 'list', f('enrolled.fd'));
  assert.match(listed, /^Secure Boot: enabled$/m);
  assert.match(listed, /^db: SHA-256 (ab)+ \(owner 5ea1b007-0000-4000-8000-5ea15ea15ea1\)$/m);
  assert.match(listed, /^PK\s+EFI global variable\s+attr 0x27\s+\d+ bytes\s+2020-01-01T00:00:00.000Z$/m);
});

test('damaged varstores, signature lists and .auth payloads give typed errors, never a crash or a hang', (t) => {
  const random = prng(12);
  const bases = [readFileSync(`${OVMF}/OVMF_VARS_4M.snakeoil.fd`), readFileSync(f('enrolled.fd'))];
  const auth = readFileSync(f('db-true.auth'));
  let refused = 0;
  for (let i = 0; i < 3000; i++) {
    const kind = i % 3;
    const base = kind === 2 ? auth : bases[i % 2]!;
    const data = Buffer.from(base);
    // Varstores: often the volume and store headers, else the first records; .auth: anywhere.
    const span = kind === 2 ? data.length : 0x5000;
    for (let k = 0, n = 1 + Math.floor(random() * 3); k < n; k++) {
      const at = kind !== 2 && random() < 0.4 ? Math.floor(random() * 0x64) : Math.floor(random() * span);
      data[at] = random() < 0.5 ? Math.floor(random() * 256) : data[at]! ^ (1 << Math.floor(random() * 8));
    }
    try {
      if (kind === 2) {
        const p = parseAuthenticatedVariable(data);
        parseSignatureLists(p.data);
      } else {
        const store = Varstore.parse(data);
        secureBootState(store);
        Varstore.parse(store.toBuffer());
      }
    } catch (error) {
      assert.ok(isSealError(error) && error instanceof EfiError, `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  t.diagnostic(`${refused} of 3000 refused`);
  assert.ok(refused > 300, `only ${refused} refused`);
});
