/**
 * The verifier service and its client against swtpm: the good device (a boot of the reference
 * UKI played into its TPM) fetches the secret — also provisioned as the factory does, with the
 * certificate unlock() releases, as the agent would, until it locks PCR 7; nothing is released to a device that booted
 * another UKI, of another product, with a key the device CA did not certify, or without a binding
 * key; a captured exchange replayed gets nothing (the nonce is spent), and the captured answer
 * cannot be opened once the device's PCRs moved, nor by another TPM; a stale nonce and a nonce
 * the verifier never issued get nothing; HTTPS with a CA the client is given; the CLI pair
 * (`seal attest serve` and `seal attest fetch`).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  AttestError,
  activateWithBinding,
  type Decision,
  fetchSecret,
  NonceStore,
  parseReference,
  parseSecret,
  quoteEvidence,
  startVerifier,
  type Verifier,
} from '../../src/attest/index.ts';
import { initPki, newDevice, parseCertificate } from '../../src/pki/index.ts';
import {
  createIdentity,
  hash,
  IDENTITY_HANDLE,
  lockPcr7,
  provision,
  SRK_HANDLE,
  signPolicy,
  TpmResponseError,
  unlock,
} from '../../src/tpm/index.ts';
import {
  type AttestFixture,
  bootEvents,
  buildArtifacts,
  certifyDevice,
  OTHER_PRODUCT,
  PRODUCT,
  playBoot,
} from '../helpers/attest.ts';
import { runSealAsync, SEAL_BIN } from '../helpers/cli.ts';
import { startTestTpm, type TestTpm } from '../helpers/tpm.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-attest-serve-'));
const f = (name: string) => join(work, name);
let fx: AttestFixture;
let t: TestTpm;
let certDer: Buffer;
let log: Buffer;
let verifier: Verifier;
const decisions: Decision[] = [];
const SECRET = Buffer.from('the fleet join token: 4f1c…', 'utf8');
const stopLater: (() => Promise<void>)[] = [];

before(async () => {
  const artifacts = await buildArtifacts(work);
  t = await startTestTpm();
  const device = await certifyDevice(t.tpm, artifacts.pki, 'SN-0100');
  fx = { ...artifacts, deviceCert: device.cert, serial: 'SN-0100' };
  certDer = device.der;
  log = await playBoot(t.tpm, await bootEvents(fx.good, fx.vars));
  writeFileSync(f('secret.bin'), SECRET);
  verifier = await startVerifier({
    reference: parseReference(readFileSync(fx.reference)),
    deviceCa: parseCertificate(readFileSync(fx.deviceCa, 'utf8')),
    secrets: new Map([['join-token', SECRET]]),
    onDecision: (d) => decisions.push(d),
  });
});

after(async () => {
  await verifier?.close();
  for (const stop of stopLater) await stop().catch(() => {});
  await t?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** POSTs JSON to the verifier; resolves with the status and the parsed answer. */
function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const r = request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json' } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () =>
          resolve({ status: response.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    r.on('error', reject);
    r.end(text);
  });
}

async function refused(promise: Promise<unknown>, remoteCode: string): Promise<AttestError> {
  const error = await promise.then(
    () => assert.fail(`released; expected ${remoteCode}`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof AttestError, String(error));
  assert.equal(error.code, 'ATTEST_REFUSED', error.message);
  assert.equal(error.remoteCode, remoteCode, error.message);
  return error;
}

const fetchOptions = () => ({ certificates: [certDer], eventLog: log });

test('the good device fetches the secret; the verifier logs what it released to whom', async () => {
  const secret = await fetchSecret(verifier.url, t.tpm, 'join-token', fetchOptions());
  assert.deepEqual(secret, SECRET);
  const last = decisions.at(-1)!;
  assert.ok(last.released);
  assert.equal(last.verdict.serial, 'SN-0100');
  assert.equal(last.verdict.system, 'good.efi');
  // The binding key was flushed: no transient object is left in the TPM.
  assert.deepEqual(await t.tpm.handles(0x80000000), []);
});

test('as the agent would: a provisioned device unlocks, fetches with the certificate its TPM released, then locks PCR 7 and gets nothing more', async () => {
  const device = await startTestTpm();
  stopLater.push(() => device.stop());
  const { der } = await certifyDevice(device.tpm, fx.pki, 'SN-0300');
  const policyKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  await provision(device.tpm, { policyKey: policyKey.publicKey, deviceCert: der, deviceKeyInTpm: true });
  const bootLog = await playBoot(device.tpm, await bootEvents(fx.good, fx.vars));
  const [pcr7] = await device.tpm.pcrRead([{ hash: 'sha256', pcrs: [7] }]);
  const policy = signPolicy({
    key: policyKey.privateKey,
    role: 'production',
    version: 1,
    pcrs: [[7, pcr7!.value]],
  });
  const unlocked = await unlock(device.tpm, { policy, lockPcr7: false });
  const secret = await fetchSecret(verifier.url, device.tpm, 'join-token', {
    certificates: [unlocked.secrets.deviceCert!],
    eventLog: bootLog,
  });
  assert.deepEqual(secret, SECRET);
  await lockPcr7(device.tpm);
  const locked = await refused(
    fetchSecret(verifier.url, device.tpm, 'join-token', {
      certificates: [unlocked.secrets.deviceCert!],
      eventLog: bootLog,
    }),
    'ATTEST_EVENT_LOG',
  );
  assert.match(locked.message, /PCR 7 was locked after the boot/);
  unlocked.wipe();
});

test('a captured exchange replayed gets nothing, and its captured answer opens nowhere else', async () => {
  // The exchange, step by step, as a network observer sees it.
  const challenge = await post(`${verifier.url}v1/challenge`, {});
  assert.equal(challenge.status, 200);
  const nonce = Buffer.from(challenge.json.nonce as string, 'hex');
  const quoted = await quoteEvidence(t.tpm, {
    nonce,
    pcrs: challenge.json.pcrs as number[],
    certificates: [certDer],
    eventLog: log,
    bind: true,
  });
  const body = `{"secret":"join-token","evidence":${quoted.evidence}}`;
  const answer = await post(`${verifier.url}v1/attest`, body);
  assert.equal(answer.status, 200);
  // Replayed: the nonce is spent.
  const replay = await post(`${verifier.url}v1/attest`, body);
  assert.equal(replay.status, 403);
  assert.equal((replay.json.error as { code: string }).code, 'ATTEST_CHALLENGE');
  assert.match((replay.json.error as { message: string }).message, /already used/);
  const captured = parseSecret(answer.json);
  // Another TPM cannot open the captured answer (no such binding key, no such identity key).
  const other = await startTestTpm();
  stopLater.push(() => other.stop());
  await createIdentity(other.tpm);
  await assert.rejects(
    other.tpm.activateCredential(
      IDENTITY_HANDLE,
      SRK_HANDLE,
      captured.credentialBlob,
      captured.encryptedSecret,
    ),
    (e: unknown) => e instanceof TpmResponseError,
  );
  // The device itself cannot open it once a PCR moved (here: PCR 7 locked, as the agent does).
  await t.tpm.pcrExtend(7, [{ hash: 'sha256', digest: hash('sha256', Buffer.from('locked')) }]);
  await assert.rejects(
    activateWithBinding(t.tpm, quoted.binding!, captured.credentialBlob, captured.encryptedSecret),
    (e: unknown) => e instanceof TpmResponseError && e.rcName === 'TPM_RC_VALUE',
  );
  await quoted.binding!.release();
  // Nor can a new attestation from the locked state get a secret.
  await refused(fetchSecret(verifier.url, t.tpm, 'join-token', fetchOptions()), 'ATTEST_EVENT_LOG');
  await t.tpm.close();
  await t.swtpm.reboot();
  await playBoot(t.tpm, await bootEvents(fx.good, fx.vars));
});

test('a stale nonce and a nonce the verifier never issued get nothing', async () => {
  let now = 1_000_000;
  const clocked = await startVerifier({
    reference: parseReference(readFileSync(fx.reference)),
    deviceCa: parseCertificate(readFileSync(fx.deviceCa, 'utf8')),
    secrets: new Map([['join-token', SECRET]]),
    nonces: new NonceStore({ ttlMs: 30_000, now: () => now }),
  });
  stopLater.push(() => clocked.close());
  const challenge = await post(`${clocked.url}v1/challenge`, {});
  assert.equal(challenge.json.expiresIn, 30);
  const nonce = Buffer.from(challenge.json.nonce as string, 'hex');
  const quoted = await quoteEvidence(t.tpm, { nonce, certificates: [certDer], eventLog: log, bind: true });
  await quoted.binding!.release();
  now += 30_001;
  const stale = await post(
    `${clocked.url}v1/attest`,
    `{"secret":"join-token","evidence":${quoted.evidence}}`,
  );
  assert.equal(stale.status, 403);
  assert.equal((stale.json.error as { code: string }).code, 'ATTEST_CHALLENGE');
  assert.match((stale.json.error as { message: string }).message, /expired/);
  // A nonce the device chose itself.
  const own = await quoteEvidence(t.tpm, {
    nonce: randomBytes(32),
    certificates: [certDer],
    eventLog: log,
    bind: true,
  });
  await own.binding!.release();
  const foreign = await post(
    `${verifier.url}v1/attest`,
    `{"secret":"join-token","evidence":${own.evidence}}`,
  );
  assert.equal(foreign.status, 403);
  assert.match((foreign.json.error as { message: string }).message, /not issued by this verifier/);
});

test('nothing is released to a device that booted a UKI not in the reference, of another product, or with an uncertified key', async () => {
  const before = decisions.length;
  // Another UKI.
  await t.tpm.close();
  await t.swtpm.reboot();
  const otherLog = await playBoot(t.tpm, await bootEvents(fx.other, fx.vars));
  const e = await refused(
    fetchSecret(verifier.url, t.tpm, 'join-token', { certificates: [certDer], eventLog: otherLog }),
    'ATTEST_REFERENCE_MISMATCH',
  );
  assert.match(e.message, /PCR 4, EV_EFI_BOOT_SERVICES_APPLICATION/);
  await t.tpm.close();
  await t.swtpm.reboot();
  await playBoot(t.tpm, await bootEvents(fx.good, fx.vars));
  // Another product: a device certified for OTHER_PRODUCT, booting the good UKI.
  const other = await startTestTpm();
  stopLater.push(() => other.stop());
  const otherDevice = await certifyDevice(other.tpm, fx.pki, 'SN-0200', OTHER_PRODUCT);
  const otherBoot = await playBoot(other.tpm, await bootEvents(fx.good, fx.vars));
  await refused(
    fetchSecret(verifier.url, other.tpm, 'join-token', {
      certificates: [otherDevice.der],
      eventLog: otherBoot,
    }),
    'ATTEST_PRODUCT',
  );
  // A key certified by another CA.
  const foreignPki = f('foreign-pki');
  await initPki(foreignPki);
  const id = await createIdentity(t.tpm);
  const foreignCert = await newDevice(foreignPki, {
    product: PRODUCT,
    serial: 'SN-0100',
    publicKey: id.pem,
  });
  await refused(
    fetchSecret(verifier.url, t.tpm, 'join-token', {
      certificates: [Buffer.from(parseCertificate(readFileSync(foreignCert.certificate, 'utf8')).rawData)],
      eventLog: log,
    }),
    'ATTEST_UNTRUSTED_KEY',
  );
  const refusedDecisions = decisions.slice(before);
  assert.equal(refusedDecisions.length, 3);
  assert.ok(refusedDecisions.every((d) => !d.released));
  assert.deepEqual(await t.tpm.handles(0x80000000), []);
});

test('evidence without a binding key, with a forged binding, for an unknown secret or malformed: refused', async () => {
  const ask = async () =>
    Buffer.from((await post(`${verifier.url}v1/challenge`, {})).json.nonce as string, 'hex');
  const plain = await quoteEvidence(t.tpm, { nonce: await ask(), certificates: [certDer], eventLog: log });
  const r1 = await post(`${verifier.url}v1/attest`, `{"secret":"join-token","evidence":${plain.evidence}}`);
  assert.equal(r1.status, 403);
  assert.equal((r1.json.error as { code: string }).code, 'ATTEST_BINDING');
  const bound = await quoteEvidence(t.tpm, {
    nonce: await ask(),
    certificates: [certDer],
    eventLog: log,
    bind: true,
  });
  await bound.binding!.release();
  const doc = JSON.parse(bound.evidence);
  doc.binding.parentQualifiedName = `000b${'00'.repeat(32)}`;
  const r2 = await post(`${verifier.url}v1/attest`, { secret: 'join-token', evidence: doc });
  assert.equal((r2.json.error as { code: string }).code, 'ATTEST_BINDING');
  assert.match((r2.json.error as { message: string }).message, /not a child of the attestation key's parent/);
  const r3 = await post(`${verifier.url}v1/attest`, { secret: 'nope', evidence: doc });
  assert.equal(r3.status, 404);
  assert.equal((r3.json.error as { code: string }).code, 'ATTEST_SECRET');
  const r4 = await post(`${verifier.url}v1/attest`, '{"secret":"join-token","evidence":{"type":1}}');
  assert.equal(r4.status, 400);
  assert.equal((r4.json.error as { code: string }).code, 'ATTEST_EVIDENCE');
  const r5 = await post(`${verifier.url}v1/attest`, 'not json');
  assert.equal(r5.status, 400);
  const r6 = await post(`${verifier.url}v1/nothing`, {});
  assert.equal(r6.status, 404);
});

test('over HTTPS: a client given the CA fetches the secret; one that is not refuses the server', async () => {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      f('tls.key'),
      '-out',
      f('tls.crt'),
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-days',
      '2',
    ],
    { stdio: 'ignore' },
  );
  const tls = await startVerifier({
    reference: parseReference(readFileSync(fx.reference)),
    deviceCa: parseCertificate(readFileSync(fx.deviceCa, 'utf8')),
    secrets: new Map([['join-token', SECRET]]),
    tls: { cert: readFileSync(f('tls.crt')), key: readFileSync(f('tls.key')) },
  });
  stopLater.push(() => tls.close());
  assert.match(tls.url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
  const secret = await fetchSecret(tls.url, t.tpm, 'join-token', {
    ...fetchOptions(),
    ca: readFileSync(f('tls.crt')),
  });
  assert.deepEqual(secret, SECRET);
  await assert.rejects(
    fetchSecret(tls.url, t.tpm, 'join-token', fetchOptions()),
    (e: unknown) => e instanceof AttestError && e.code === 'ATTEST_PROTOCOL' && /self-signed/.test(e.message),
  );
});

test('seal attest serve and seal attest fetch', async () => {
  writeFileSync(f('log.bin'), log);
  const { spawn } = await import('node:child_process');
  const serve = spawn(
    SEAL_BIN,
    [
      'attest',
      'serve',
      '--reference',
      fx.reference,
      '--device-ca',
      fx.deviceCa,
      '--secret',
      `join-token=${f('secret.bin')}`,
      '--listen',
      '127.0.0.1:0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const exited = new Promise<number | null>((resolve) => serve.once('exit', resolve));
  stopLater.push(async () => {
    serve.kill('SIGKILL');
  });
  const url = await new Promise<string>((resolve, reject) => {
    serve.stdout.on('data', (d: Buffer) => {
      output += d.toString();
      const m = /listening on (\S+)/.exec(output);
      if (m) resolve(m[1]!);
    });
    serve.once('exit', () => reject(new Error(`seal attest serve exited: ${output}`)));
  });
  await t.tpm.close();
  const fetched = await runSealAsync([
    'attest',
    'fetch',
    url,
    'join-token',
    f('fetched.bin'),
    '--tpm',
    t.swtpm.address,
    '--cert',
    fx.deviceCert,
    '--event-log',
    f('log.bin'),
  ]);
  assert.equal(fetched.status, 0, fetched.stderr);
  assert.deepEqual(readFileSync(f('fetched.bin')), SECRET);
  const unknown = await runSealAsync([
    'attest',
    'fetch',
    url,
    'other',
    f('other.bin'),
    '--tpm',
    t.swtpm.address,
    '--cert',
    fx.deviceCert,
    '--event-log',
    f('log.bin'),
  ]);
  assert.equal(unknown.status, 1);
  assert.match(
    unknown.stderr,
    /refused with ATTEST_SECRET: this verifier holds no secret "other" \[ATTEST_REFUSED\]/,
  );
  serve.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.match(output, /released join-token to .* serial SN-0100 \(booted "good\.efi"\)/);
  assert.match(output, /refused other: this verifier holds no secret/);
});
