/**
 * `seal tpm …` end to end, as a factory and a device would run it, on one swtpm: provision,
 * status, pcrs, policy sign/show, unlock (secrets only where asked; under strace, no secret byte
 * in any write and no file opened for writing), PCR 7 lock, refusals, revocation, identity.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { hash, parsePolicy, raiseAcceptedVersion, unlock } from '../../src/tpm/index.ts';
import { runSeal, SEAL_BIN } from '../helpers/cli.ts';
import { opensslKeyPair } from '../helpers/keys.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

const PRODUCT = '3b241101-e2bb-4255-8caf-4136c566a962';
let t: TestTpm;
let dir: string;
let policyKey: { key: string; pub: string };

before(async () => {
  t = await startTestTpm();
  dir = mkdtempSync(join(tmpdir(), 'seal-tpm-cli-'));
  policyKey = opensslKeyPair(join(dir, 'policy.key'));
  assert.equal(runSeal(['pki', 'init', join(dir, 'pki')]).status, 0);
});
after(async () => {
  await t.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs seal with this TPM (the test's own connection closed first: swtpm serves one at a time). */
async function seal(args: string[], options: { status?: number } = {}) {
  await t.tpm.close();
  const r = runSeal([
    ...args.slice(0, 2),
    ...args.slice(2),
    ...(args[0] === 'tpm' && needsTpm(args) ? ['--tpm', t.swtpm.address] : []),
  ]);
  if (options.status !== undefined)
    assert.equal(r.status, options.status, `seal ${args.join(' ')}: ${r.stderr}`);
  return r;
}

function needsTpm(args: string[]): boolean {
  return args[1] !== 'policy' && !(args[1] === 'identity' && args[2] === 'verify');
}

async function pcr7(): Promise<string> {
  return JSON.parse((await seal(['tpm', 'pcrs', '--json', '7'], { status: 0 })).stdout)['sha256:7'];
}

async function bootWith(signer: string): Promise<void> {
  await t.tpm.close();
  await t.swtpm.reboot();
  await t.tpm.pcrExtend(7, [{ hash: 'sha256', digest: hash('sha256', Buffer.from(signer)) }]);
}

const escaped = (b: Buffer) => [...b].map((c) => `\\x${c.toString(16).padStart(2, '0')}`).join('');

test('factory and device through the CLI', async () => {
  const pki = join(dir, 'pki');
  assert.equal(
    (await seal(['pki', 'device', 'new', pki, '--product', PRODUCT, '--serial', 'SN1'])).status,
    0,
  );
  const cert = join(pki, 'devices', 'SN1.pem');
  const key = join(pki, 'devices', 'SN1.key');
  await bootWith('production signer');

  // tpm2-tools reads the same PCR 7.
  const ours = await pcr7();
  await t.tpm.close();
  const theirs = (await t.tools('tpm2_pcrread', ['sha256:7'])).toString();
  assert.ok(theirs.toLowerCase().includes(ours), theirs);

  const provisioned = await seal(
    [
      'tpm',
      'provision',
      '--product-policy-key',
      policyKey.pub,
      '--device-cert',
      cert,
      '--device-key',
      key,
      '--luks-passphrase-out',
      '-',
    ],
    { status: 0 },
  );
  const luks = provisioned.stdout;
  assert.match(luks, /^[0-9a-f]{64}$/, 'only the passphrase on stdout');
  const again = await seal(
    [
      'tpm',
      'provision',
      '--json',
      '--product-policy-key',
      policyKey.pub,
      '--device-cert',
      cert,
      '--device-key',
      key,
    ],
    { status: 0 },
  );
  assert.equal(JSON.parse(again.stdout).status, 'already-provisioned');
  const status = JSON.parse((await seal(['tpm', 'status', '--json'], { status: 0 })).stdout);
  assert.equal(status.ownerAuthSet, true);
  assert.equal(status.policyVersion, 1);
  assert.equal(status.secrets.luksPassphrase.nv.size, 64);
  assert.equal(status.secrets.versionAuth.nv.size, 32);
  assert.equal(status.acceptedVersion, 0);
  assert.equal(status.acceptedVersionIndex, '0x01500050');
  assert.equal((await seal(['tpm', 'accepted-version'], { status: 0 })).stdout, '0\n');
  assert.ok(!JSON.stringify(status).includes(luks));

  const policy = join(dir, 'p1.json');
  await seal(['tpm', 'policy', 'sign', '--key', policyKey.key, '--pcr7', ours, '--version', '1', policy], {
    status: 0,
  });
  const shown = JSON.parse(
    (await seal(['tpm', 'policy', 'show', '--json', policy, '--key', policyKey.pub], { status: 0 })).stdout,
  );
  assert.equal(shown.valid, true);
  assert.equal(shown.pcrs['sha256:7'], ours);

  // The storage key can be pinned to the Name the factory saw.
  await seal(['tpm', 'unlock', '--policy', policy, '--storage-key-name', status.srk.name], { status: 0 });
  assert.match(
    (
      await seal(['tpm', 'unlock', '--policy', policy, '--storage-key-name', `000b${'11'.repeat(32)}`], {
        status: 1,
      })
    ).stderr,
    /is not the one provisioned/,
  );

  // Unlock without outputs: reported, not printed, not written — checked at the system-call level.
  const trace = join(dir, 'strace.log');
  await t.tpm.close();
  const traced = spawnSync(
    'strace',
    [
      '-f',
      '-qq',
      '-o',
      trace,
      '-s',
      '65536',
      '-xx',
      '-e',
      'trace=open,openat,creat,write,writev,pwrite64,sendto,sendmsg,rename,renameat,renameat2',
      SEAL_BIN,
      'tpm',
      'unlock',
      '--tpm',
      t.swtpm.address,
      '--policy',
      policy,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(traced.status, 0, traced.stderr);
  assert.match(
    traced.stdout,
    /Released for policy version 1: device certificate \(\d+ bytes\), device key \(\d+ bytes\), LUKS passphrase \(64 bytes\), version authorization \(32 bytes\)/,
  );
  const log = readFileSync(trace, 'latin1');
  const deviceKeyDer = createPrivateKey(readFileSync(key)).export({ type: 'pkcs8', format: 'der' }) as Buffer;
  for (const secret of [Buffer.from(luks), deviceKeyDer.subarray(-40)])
    assert.ok(!log.includes(escaped(secret.subarray(0, 24))), 'a secret was written somewhere');
  const opens = log.split('\n').filter((l) => /open(at)?\(|creat\(/.test(l));
  assert.ok(opens.length > 10);
  assert.deepEqual(
    opens.filter((l) => /O_WRONLY|O_RDWR|O_CREAT|creat\(/.test(l)),
    [],
    'no file opened for writing',
  );
  assert.ok(!/rename/.test(log));

  // Asked for: the passphrase on stdout (the same strace check finds it there: the check can fail).
  await t.tpm.close();
  const printed = spawnSync(
    'strace',
    [
      '-f',
      '-qq',
      '-o',
      trace,
      '-s',
      '65536',
      '-xx',
      '-e',
      'trace=write,writev',
      SEAL_BIN,
      'tpm',
      'unlock',
      '--tpm',
      t.swtpm.address,
      '--policy',
      policy,
      '--luks-passphrase-out',
      '-',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(printed.stdout, luks);
  assert.ok(readFileSync(trace, 'latin1').includes(escaped(Buffer.from(luks).subarray(0, 24))));
  // …and files, mode 0600.
  const keyOut = join(dir, 'key-out.pem');
  const certOut = join(dir, 'cert-out.pem');
  await seal(
    ['tpm', 'unlock', '--policy', policy, '--device-key-out', keyOut, '--device-cert-out', certOut],
    { status: 0 },
  );
  assert.equal(statSync(keyOut).mode & 0o777, 0o600);
  assert.deepEqual(
    createPrivateKey(readFileSync(keyOut)).export({ type: 'pkcs8', format: 'der' }),
    deviceKeyDer,
  );
  assert.equal(
    new X509Certificate(readFileSync(certOut)).fingerprint256,
    new X509Certificate(readFileSync(cert)).fingerprint256,
  );

  // Another PCR 7: refused with the TPM's reason, one line, nothing written.
  const other = join(dir, 'other.json');
  await seal(
    ['tpm', 'policy', 'sign', '--key', policyKey.key, '--pcr7', 'ab'.repeat(32), '--version', '1', other],
    { status: 0 },
  );
  const refusedOut = join(dir, 'refused.txt');
  const refused = await seal(
    ['tpm', 'unlock', '--policy', other, '--luks-passphrase-out', refusedOut, '--lock-pcr7'],
    { status: 1 },
  );
  assert.match(
    refused.stderr,
    /^seal: the TPM refused to release the deviceCert: TPM2_PolicyPCR failed: TPM_RC_VALUE .* \[TPM_REFUSED\]\n$/,
  );
  assert.ok(!existsSync(refusedOut));
  assert.equal(await pcr7(), ours, 'a refused unlock does not lock PCR 7');

  // Lock, then refused until reboot.
  await seal(['tpm', 'unlock', '--policy', policy, '--lock-pcr7'], { status: 0 });
  assert.notEqual(await pcr7(), ours);
  assert.match((await seal(['tpm', 'unlock', '--policy', policy], { status: 1 })).stderr, /PCR 7 was locked/);

  // Revocation from the management image.
  await bootWith('management signer');
  const mgmt = join(dir, 'm1.json');
  await seal(
    [
      'tpm',
      'policy',
      'sign',
      '--management',
      '--key',
      policyKey.key,
      '--pcr7',
      await pcr7(),
      '--version',
      '1',
      mgmt,
    ],
    { status: 0 },
  );
  const revoked = JSON.parse(
    (await seal(['tpm', 'revoke', '--json', '--management-policy', mgmt], { status: 0 })).stdout,
  );
  assert.deepEqual(revoked, { from: 1, to: 2 });
  await bootWith('production signer');
  assert.match(
    (await seal(['tpm', 'unlock', '--policy', policy], { status: 1 })).stderr,
    /TPM2_PolicyNV failed: TPM_RC_POLICY .*the TPM's policy version is 2, the policy is for 1 \(revoked\)/,
  );
  const v2 = join(dir, 'p2.json');
  await seal(['tpm', 'policy', 'sign', '--key', policyKey.key, '--pcr7', ours, '--version', '2', v2], {
    status: 0,
  });
  assert.equal(
    (await seal(['tpm', 'unlock', '--policy', v2, '--luks-passphrase-out', '-'], { status: 0 })).stdout,
    luks,
  );

  // A policy file edited by hand is refused by `policy show` and by the TPM.
  const doc = JSON.parse(readFileSync(v2, 'utf8'));
  doc.policyVersion = 3;
  doc.policy[1].operandB = '0000000000000003';
  writeFileSync(join(dir, 'edited.json'), JSON.stringify(doc));
  assert.match(
    (await seal(['tpm', 'policy', 'show', join(dir, 'edited.json')], { status: 1 })).stdout,
    /INVALID: approvedPolicy is not the digest/,
  );
  assert.match(
    (await seal(['tpm', 'unlock', '--policy', join(dir, 'edited.json')], { status: 1 })).stderr,
    /TPM_RC_POLICY/,
  );
  assert.match(
    (await seal(['tpm', 'unlock', '--policy', join(dir, 'absent.json')], { status: 1 })).stderr,
    /absent\.json/,
  );
  writeFileSync(join(dir, 'junk.json'), '{"type":"seal-tpm-signed-policy","format":2}');
  assert.match(
    (await seal(['tpm', 'unlock', '--policy', join(dir, 'junk.json')], { status: 1 })).stderr,
    /junk\.json: format 2 is not 1 \[TPM_POLICY_FILE\]/,
  );

  // The agent raises the accepted manifest version (library); the CLI reads it.
  const { secrets } = await unlock(t.tpm, { policy: parsePolicy(readFileSync(v2)), lockPcr7: true });
  await raiseAcceptedVersion(t.tpm, secrets.versionAuth!, 3);
  assert.equal((await seal(['tpm', 'accepted-version'], { status: 0 })).stdout, '3\n');
  const accepted = JSON.parse((await seal(['tpm', 'accepted-version', '--json'], { status: 0 })).stdout);
  assert.equal(accepted.acceptedVersion, 3);
  assert.equal(BigInt(accepted.counter) - BigInt(accepted.base), 3n);
  assert.match(
    (await seal(['tpm', 'status'], { status: 0 })).stdout,
    /policy version 2, accepted manifest version 3\n/,
  );
});

test('TPM-resident identity through the CLI: create, certify with seal pki, provision, sign and verify a challenge, quote', async () => {
  await t.stop();
  t = await startTestTpm();
  const pki = join(dir, 'pki');
  const pub = join(dir, 'identity.pem');
  const created = JSON.parse(
    (await seal(['tpm', 'identity', 'create', '--json', '--out', pub], { status: 0 })).stdout,
  );
  assert.equal(created.created, true);
  await seal(['pki', 'device', 'new', pki, '--product', PRODUCT, '--serial', 'SN-TPM', '--public-key', pub], {
    status: 0,
  });
  const cert = join(pki, 'devices', 'SN-TPM.pem');
  assert.ok(!existsSync(join(pki, 'devices', 'SN-TPM.key')), 'no key file for a TPM-resident key');
  await seal(
    ['tpm', 'provision', '--product-policy-key', policyKey.pub, '--device-cert', cert, '--device-key-in-tpm'],
    { status: 0 },
  );
  const sig = join(dir, 'challenge.sig');
  await seal(['tpm', 'identity', 'sign', '--challenge', '00112233445566778899', '--out', sig], { status: 0 });
  assert.equal(
    (
      await seal([
        'tpm',
        'identity',
        'verify',
        '--key',
        cert,
        '--challenge',
        '00112233445566778899',
        '--signature',
        sig,
      ])
    ).status,
    0,
  );
  assert.equal(
    (
      await seal([
        'tpm',
        'identity',
        'verify',
        '--key',
        cert,
        '--challenge',
        '0011223344556677889a',
        '--signature',
        sig,
      ])
    ).status,
    1,
  );
  // openssl agrees: an ordinary ECDSA-SHA256 signature by the certified key.
  writeFileSync(join(dir, 'challenge.bin'), Buffer.from('00112233445566778899', 'hex'));
  const verified = spawnSync(
    'openssl',
    ['dgst', '-sha256', '-verify', pub, '-signature', sig, join(dir, 'challenge.bin')],
    { encoding: 'utf8' },
  );
  assert.equal(verified.stdout.trim(), 'Verified OK');
  const quote = join(dir, 'quote.json');
  await seal(['tpm', 'identity', 'quote', '--nonce', 'cafe', '--pcrs', '0,7', quote], { status: 0 });
  const q = JSON.parse(readFileSync(quote, 'utf8'));
  writeFileSync(join(dir, 'attest.bin'), Buffer.from(q.attest, 'hex'));
  writeFileSync(join(dir, 'attest.sig'), Buffer.from(q.signature, 'hex'));
  const quoteOk = spawnSync(
    'openssl',
    ['dgst', '-sha256', '-verify', pub, '-signature', join(dir, 'attest.sig'), join(dir, 'attest.bin')],
    { encoding: 'utf8' },
  );
  assert.equal(quoteOk.stdout.trim(), 'Verified OK');
  assert.equal(q.pcrDigest, hash('sha256', Buffer.alloc(64)).toString('hex'));
});
