import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Swtpm } from '../../src/machine/index.ts';

/** Sends one raw TPM 2.0 command and returns the whole response. */
function transact(
  target: { port: number; host: string } | { path: string },
  command: Buffer,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(target as never);
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      if (all.length >= 10 && all.length >= all.readUInt32BE(2)) {
        socket.destroy();
        resolve(all);
      }
    });
    socket.on('error', reject);
    socket.write(command);
  });
}

// TPM2_GetRandom(16): tag NO_SESSIONS, size 12, command code 0x17B.
const GET_RANDOM = Buffer.from('80010000000c0000017b0010', 'hex');

for (const mode of ['tcp', 'unix'] as const) {
  test(`swtpm (${mode}) starts, answers a TPM command, keeps its state dir, and stops`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'seal-swtpm-'));
    const tpm = await Swtpm.start({ stateDir: dir, mode });
    try {
      const m = /^swtpm:(?:127\.0\.0\.1:(\d+)|unix:(.+))$/.exec(tpm.address);
      assert.ok(m, tpm.address);
      const target = m[1] ? { port: Number(m[1]), host: '127.0.0.1' } : { path: m[2]! };
      const response = await transact(target, GET_RANDOM);
      assert.equal(response.readUInt16BE(0), 0x8001);
      assert.equal(response.readUInt32BE(6), 0, 'TPM_RC_SUCCESS');
      assert.equal(response.readUInt16BE(10), 16);
      assert.equal(response.length, 12 + 16);
      await tpm.stop();
      assert.ok(existsSync(join(dir, 'tpm2-00.permall')), 'the TPM state outlives the process');
    } finally {
      await tpm.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
