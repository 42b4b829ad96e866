/**
 * Opening a sealed layer through dm-verity (openVerityDevice), shared by the device agent and
 * `seal image mount`: the veritysetup calls it makes and how it reads the kernel's view, with a
 * recording runner in place of veritysetup (the VM tests open real devices).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VerityError } from '../../src/verity/errors.ts';
import { openVerityDevice } from '../../src/verity/kernel.ts';

const ROOT = 'ab'.repeat(32);

/** A runner that records each call and answers `veritysetup status` with `status`. */
function runner(status: string, failOpen?: Error) {
  const calls: string[][] = [];
  const run = async (program: string, args: string[]) => {
    calls.push([program, ...args]);
    if (args[0] === 'open' && failOpen) throw failOpen;
    return { stdout: args[0] === 'status' ? status : '' };
  };
  return { run, calls };
}

const statusOf = (state: string, root = ROOT) =>
  `/dev/mapper/web-0 is active.\n  type:        VERITY\n  status:      ${state}\n  hash type:   1\n  root hash:   ${root}\n`;

test('a verified device: opened with the layer as its own hash device at the offset, its path returned', async () => {
  const r = runner(statusOf('verified'));
  const path = await openVerityDevice(r.run, {
    data: '/s/blob',
    hashOffset: 8192,
    name: 'web-0',
    rootHash: ROOT,
  });
  assert.equal(path, '/dev/mapper/web-0');
  assert.deepEqual(r.calls, [
    ['veritysetup', 'open', '/s/blob', 'web-0', '/s/blob', ROOT, '--hash-offset', '8192'],
    ['veritysetup', 'status', 'web-0'],
  ]);
});

test('with a signature: handed to the kernel, and only "verified (with signature)" accepted', async () => {
  const signed = runner(statusOf('verified (with signature)'));
  const d = { data: '/s/blob', hashOffset: 4096, name: 'web-0', rootHash: ROOT, signature: '/s/sig' };
  assert.equal(await openVerityDevice(signed.run, d), '/dev/mapper/web-0');
  assert.ok(signed.calls[0]!.includes('--root-hash-signature=/s/sig'));
  const unsigned = runner(statusOf('verified'));
  await assert.rejects(openVerityDevice(unsigned.run, d), (e: unknown) => {
    assert.ok(e instanceof VerityError);
    assert.equal(e.code, 'VERITY_KERNEL_REFUSED');
    assert.match(e.message, /is verified, not verified \(with signature\)/);
    return true;
  });
  assert.deepEqual(unsigned.calls.at(-1), ['veritysetup', 'close', 'web-0'], 'closed again');
});

test('a corrupted device, another root hash or an unreadable status: closed again and refused', async () => {
  for (const [stdout, reason] of [
    [statusOf('corrupted'), /is corrupted, not verified/],
    [statusOf('verified', 'cd'.repeat(32)), new RegExp(`root hash ${'cd'.repeat(32)}, not verified`)],
    ['', /in an unknown state/],
  ] as const) {
    const r = runner(stdout);
    await assert.rejects(
      openVerityDevice(r.run, { data: '/s/blob', hashOffset: 0, name: 'web-0', rootHash: ROOT }),
      reason,
    );
    assert.deepEqual(r.calls.at(-1), ['veritysetup', 'close', 'web-0']);
  }
});

test("a refused open rejects with the runner's own error, nothing else run", async () => {
  const failure = new Error('Verity device detected corruption after activation.');
  const r = runner(statusOf('verified'), failure);
  await assert.rejects(
    openVerityDevice(r.run, { data: '/s/blob', hashOffset: 0, name: 'web-0', rootHash: ROOT }),
    (e) => e === failure,
  );
  assert.equal(r.calls.length, 1);
});
