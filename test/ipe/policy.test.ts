/**
 * IPE policies: the text the kernel's parser takes (checked by the kernel in test/vm/signatures),
 * pinned digests, refused options, and the signed form: byte for byte what
 * `openssl smime -sign -nodetach -noattr -nocerts -binary` makes (RSA), through `seal ipe policy`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { IpeError, ipePolicy } from '../../src/ipe/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { opensslSelfSigned } from '../helpers/keys.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-ipe-'));
after(() => rm(work, { recursive: true, force: true }));

test('the default policy: execute only from the initramfs, signed dm-verity, signed fs-verity', () => {
  assert.equal(
    ipePolicy(),
    [
      'policy_name=seal policy_version=0.0.1',
      'DEFAULT action=ALLOW',
      'DEFAULT op=EXECUTE action=DENY',
      'op=EXECUTE boot_verified=TRUE action=ALLOW',
      'op=EXECUTE dmverity_signature=TRUE action=ALLOW',
      'op=EXECUTE fsverity_signature=TRUE action=ALLOW',
      '',
    ].join('\n'),
  );
});

test('operations, trust properties and pinned digests', () => {
  const text = ipePolicy({
    name: 'product-x',
    version: '1.02.3',
    operations: ['EXECUTE', 'KMODULE'],
    trust: ['dmverity_signature'],
    dmverityRootHashes: ['AB'.repeat(32)],
    fsverityDigests: [`sha512:${'cd'.repeat(64)}`],
  });
  assert.equal(
    text,
    [
      'policy_name=product-x policy_version=1.2.3',
      'DEFAULT action=ALLOW',
      'DEFAULT op=EXECUTE action=DENY',
      'op=EXECUTE dmverity_signature=TRUE action=ALLOW',
      `op=EXECUTE dmverity_roothash=sha256:${'ab'.repeat(32)} action=ALLOW`,
      `op=EXECUTE fsverity_digest=sha512:${'cd'.repeat(64)} action=ALLOW`,
      'DEFAULT op=KMODULE action=DENY',
      'op=KMODULE dmverity_signature=TRUE action=ALLOW',
      `op=KMODULE dmverity_roothash=sha256:${'ab'.repeat(32)} action=ALLOW`,
      `op=KMODULE fsverity_digest=sha512:${'cd'.repeat(64)} action=ALLOW`,
      '',
    ].join('\n'),
  );
});

test('what the kernel would refuse is refused here, naming it', () => {
  const cases: [Parameters<typeof ipePolicy>[0], RegExp][] = [
    [{ name: 'has space' }, /policy name/],
    [{ name: 'a#comment' }, /policy name/],
    [{ version: '1.2' }, /MAJOR.MINOR.REVISION/],
    [{ version: '1.2.65536' }, /MAJOR.MINOR.REVISION/],
    [{ operations: ['EXEC' as 'EXECUTE'] }, /unknown IPE operation "EXEC"/],
    [{ operations: [] }, /at least one operation/],
    [{ trust: ['dmverity_roothash' as 'boot_verified'] }, /unknown IPE trust property/],
    [{ dmverityRootHashes: ['abc'] }, /not a dm-verity root hash/],
    [{ fsverityDigests: ['ab'.repeat(32)] }, /not a fs-verity digest/],
  ];
  for (const [options, message] of cases) {
    assert.throws(
      () => ipePolicy(options),
      (e: unknown) => e instanceof IpeError && e.code === 'IPE_INVALID_OPTION' && message.test(e.message),
      JSON.stringify(options),
    );
  }
});

test('seal ipe policy: the text, and signed as openssl smime -nodetach signs it', () => {
  const signer = opensslSelfSigned(work, 'policy-signer', 'rsa:2048');
  const out = join(work, 'policy');
  const r = runSeal([
    'ipe',
    'policy',
    out,
    '--name',
    'p',
    '--version',
    '2.0.0',
    '--key',
    signer.key,
    '--cert',
    signer.cert,
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(readFileSync(out, 'utf8'), /^policy_name=p policy_version=2\.0\.0\n/);
  const theirs = execFileSync('openssl', [
    'smime',
    '-sign',
    '-nodetach',
    '-noattr',
    '-nocerts',
    '-binary',
    '-in',
    out,
    '-signer',
    signer.cert,
    '-inkey',
    signer.key,
    '-outform',
    'DER',
  ]);
  assert.ok(readFileSync(`${out}.p7s`).equals(theirs));
  const bad = runSeal(['ipe', 'policy', out, '--op', 'EXECUTE,BOGUS']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /unknown IPE operation "BOGUS" \[IPE_INVALID_OPTION\]/);
});
