/** Response codes decode into names and subjects; the retry warnings are retried; framing is checked. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  baseRc,
  decodeRc,
  describeRc,
  isRetryable,
  RC,
  Reader,
  Tpm,
  TpmError,
  TpmResponseError,
} from '../../src/tpm/index.ts';
import { ReplayTransport } from '../helpers/tpm.ts';

test('format-1 codes name their handle, session or parameter', () => {
  assert.deepEqual(decodeRc(0x99d), {
    rc: 0x99d,
    name: 'TPM_RC_POLICY_FAIL',
    description: 'a policy check failed',
    kind: 'error',
    session: 1,
  });
  assert.equal(decodeRc(0x98e).name, 'TPM_RC_AUTH_FAIL');
  assert.equal(decodeRc(0x98e).session, 1);
  assert.equal(decodeRc(0xa9d).session, 2);
  assert.deepEqual([decodeRc(0x1c4).name, decodeRc(0x1c4).parameter], ['TPM_RC_VALUE', 1]);
  assert.deepEqual([decodeRc(0x2c4).name, decodeRc(0x2c4).parameter], ['TPM_RC_VALUE', 2]);
  assert.deepEqual([decodeRc(0x18b).name, decodeRc(0x18b).handle], ['TPM_RC_HANDLE', 1]);
  assert.deepEqual([decodeRc(0x28b).name, decodeRc(0x28b).handle], ['TPM_RC_HANDLE', 2]);
  assert.equal(decodeRc(0x9a2).name, 'TPM_RC_BAD_AUTH');
  assert.equal(decodeRc(0x1db).name, 'TPM_RC_SIGNATURE');
  assert.equal(decodeRc(0x1db).parameter, 1);
  assert.equal(baseRc(0x99d), RC.POLICY_FAIL);
  assert.equal(baseRc(0x1c4), RC.VALUE);
  assert.equal(describeRc(0x99d), 'TPM_RC_POLICY_FAIL (a policy check failed) in session 1');
});

test('format-0 errors, warnings, vendor and TPM 1.2 codes', () => {
  assert.equal(decodeRc(0x128).name, 'TPM_RC_PCR_CHANGED');
  assert.equal(decodeRc(0x148).name, 'TPM_RC_NV_LOCKED');
  assert.equal(decodeRc(0x126).name, 'TPM_RC_POLICY');
  assert.equal(decodeRc(0x14c).name, 'TPM_RC_NV_DEFINED');
  assert.equal(decodeRc(0x100).name, 'TPM_RC_INITIALIZE');
  assert.deepEqual([decodeRc(0x922).name, decodeRc(0x922).kind], ['TPM_RC_RETRY', 'warning']);
  assert.equal(decodeRc(0x908).name, 'TPM_RC_YIELDED');
  assert.equal(decodeRc(0x90a).name, 'TPM_RC_TESTING');
  assert.equal(decodeRc(0x921).name, 'TPM_RC_LOCKOUT');
  assert.equal(decodeRc(0x902).name, 'TPM_RC_OBJECT_MEMORY');
  assert.equal(decodeRc(0x1e).kind, 'tpm1.2');
  assert.equal(decodeRc(0x501).kind, 'vendor');
  assert.equal(decodeRc(0x17f).name, 'TPM_RC_0x17f');
  assert.equal(decodeRc(0).name, 'TPM_RC_SUCCESS');
  assert.ok(isRetryable(0x922) && isRetryable(0x908) && isRetryable(0x90a));
  assert.ok(!isRetryable(0x99d) && !isRetryable(0x921));
});

function response(rc: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(10 + body.length);
  b.writeUInt16BE(0x8001, 0);
  b.writeUInt32BE(b.length, 2);
  b.writeUInt32BE(rc, 6);
  body.copy(b, 10);
  return b;
}

test('TPM_RC_RETRY, YIELDED and TESTING are sent again; other codes become TpmResponseError', async () => {
  const random = Buffer.from('0010000102030405060708090a0b0c0d0e0f', 'hex');
  const tpm = new Tpm(
    new ReplayTransport([response(0x922), response(0x908), response(0x90a), response(0, random)]),
  );
  assert.equal((await tpm.getRandom(16)).toString('hex'), '000102030405060708090a0b0c0d0e0f');
  assert.equal(tpm.commandCount, 4);
  const failing = new Tpm(new ReplayTransport([response(0x14c)]));
  await assert.rejects(failing.getRandom(4), (e: unknown) => {
    assert.ok(e instanceof TpmResponseError);
    assert.equal(e.code, 'TPM_RESPONSE');
    assert.equal(e.rcName, 'TPM_RC_NV_DEFINED');
    assert.match(e.message, /TPM2_GetRandom failed: TPM_RC_NV_DEFINED/);
    return true;
  });
  const stubborn = new Tpm(new ReplayTransport(Array.from({ length: 5 }, () => response(0x922))), {
    retries: 3,
  });
  await assert.rejects(stubborn.getRandom(4), /TPM_RC_RETRY/);
  assert.equal(stubborn.commandCount, 4);
});

test('responses whose framing or contents disagree are TPM_MALFORMED', async () => {
  const short = response(0, Buffer.from('0010aabb', 'hex'));
  const unframed = response(0);
  unframed.writeUInt32BE(99, 2);
  for (const bad of [short, unframed, Buffer.from('8001', 'hex')]) {
    await assert.rejects(
      new Tpm(new ReplayTransport([bad])).getRandom(16),
      (e: unknown) => e instanceof TpmError && e.code === 'TPM_MALFORMED',
    );
  }
  const r = new Reader(Buffer.from('0005aabb', 'hex'), 'a test');
  assert.throws(() => r.b('field'), /a test: field needs 5 bytes, 2 left/);
  const big = new Reader(Buffer.from('0100', 'hex'), 'a test');
  assert.throws(() => big.b('digest', 64), /digest is 256 bytes, at most 64 allowed/);
  const many = new Reader(Buffer.from('00010000', 'hex'), 'a test');
  assert.throws(() => many.list('handles', 128, (x) => x.u32()), /handles has 65536 entries/);
});
