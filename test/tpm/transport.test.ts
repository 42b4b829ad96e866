/**
 * Transports: addresses, swtpm over TCP and Unix sockets, its control channel (power cycle,
 * locality), the kernel device transport's framing, and the recording transport.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Swtpm } from '../../src/machine/index.ts';
import {
  CC,
  DeviceTransport,
  hash,
  openTransport,
  parseTpmAddress,
  RecordingTransport,
  SocketTransport,
  Tpm,
  TpmError,
  TpmResponseError,
} from '../../src/tpm/index.ts';
import { startTestTpm } from '../helpers/tpm.ts';

test('--tpm addresses: device paths, swtpm:HOST:PORT (IPv4, name, [IPv6]), swtpm:unix:PATH; others refused', () => {
  assert.deepEqual(parseTpmAddress('/dev/tpmrm0'), { kind: 'device', path: '/dev/tpmrm0' });
  assert.deepEqual(parseTpmAddress('swtpm:127.0.0.1:2321'), { kind: 'tcp', host: '127.0.0.1', port: 2321 });
  assert.deepEqual(parseTpmAddress('swtpm:localhost:2321'), { kind: 'tcp', host: 'localhost', port: 2321 });
  assert.deepEqual(parseTpmAddress('swtpm:[::1]:2321'), { kind: 'tcp', host: '::1', port: 2321 });
  assert.deepEqual(parseTpmAddress('swtpm:unix:/run/x/swtpm.sock'), {
    kind: 'unix',
    path: '/run/x/swtpm.sock',
    control: '/run/x/swtpm.ctrl',
  });
  assert.deepEqual(parseTpmAddress('swtpm:unix:/run/tpm'), {
    kind: 'unix',
    path: '/run/tpm',
    control: '/run/tpm.ctrl',
  });
  for (const bad of [
    'tpmrm0',
    'swtpm:',
    'swtpm:host',
    'swtpm:host:0',
    'swtpm:host:65535',
    'swtpm:unix:',
    'swtpm:[nope]:1',
    'mssim:1',
  ]) {
    assert.throws(
      () => parseTpmAddress(bad),
      (e: unknown) => e instanceof TpmError && e.code === 'TPM_ADDRESS',
      bad,
    );
  }
});

for (const mode of ['tcp', 'unix'] as const) {
  test(`swtpm over ${mode}: commands, a power cycle over the control channel resets the PCRs, localities`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'seal-tpm-transport-'));
    const swtpm = await Swtpm.start({ stateDir: dir, mode });
    const transport = await openTransport(swtpm.address);
    const tpm = new Tpm(transport);
    try {
      assert.ok(transport instanceof SocketTransport);
      const pcr7 = [{ hash: 'sha256' as const, pcrs: [7] }];
      await tpm.pcrExtend(7, [{ hash: 'sha256', digest: hash('sha256', Buffer.from('boot')) }]);
      assert.notEqual((await tpm.pcrRead(pcr7))[0]!.value.toString('hex'), '00'.repeat(32));
      // _TPM_Init: the TPM wants TPM2_Startup before anything else, then PCRs are reset.
      await transport.control.init();
      await assert.rejects(
        tpm.getRandom(8),
        (e: unknown) => e instanceof TpmResponseError && e.rcName === 'TPM_RC_INITIALIZE',
      );
      await tpm.startup('clear');
      assert.equal((await tpm.pcrRead(pcr7))[0]!.value.toString('hex'), '00'.repeat(32));
      // PCR 17 is extendable from locality 2-4 only (PC client profile); PCR 20 from 1-3.
      const extend17 = () => tpm.pcrExtend(17, [{ hash: 'sha256', digest: Buffer.alloc(32, 1) }]);
      await assert.rejects(
        extend17(),
        (e: unknown) => e instanceof TpmResponseError && e.rcName === 'TPM_RC_LOCALITY',
      );
      await transport.control.setLocality(3);
      await extend17();
      await transport.control.setLocality(0);
      await assert.rejects(extend17(), /TPM_RC_LOCALITY/);
      // Power off: the TPM answers nothing until powered on (and started) again.
      await transport.control.stop();
      await assert.rejects(tpm.getRandom(8), (e: unknown) => e instanceof TpmError);
      await tpm.close();
      await transport.control.init();
      await tpm.startup('clear');
      assert.equal((await tpm.getRandom(8)).length, 8);
      // The harness's reboot uses the same control channel.
      await tpm.pcrExtend(7, [{ hash: 'sha256', digest: Buffer.alloc(32, 2) }]);
      await tpm.close();
      await swtpm.reboot();
      assert.equal((await tpm.pcrRead(pcr7))[0]!.value.toString('hex'), '00'.repeat(32));
    } finally {
      await tpm.close();
      await swtpm.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a socket that closes mid-response, or a TPM that does not answer, is TPM_TRANSPORT', async () => {
  const { createServer } = await import('node:net');
  const server = createServer((socket) => {
    socket.once('data', (d) => {
      if (d.readUInt32BE(6) === CC.GetRandom) socket.end(Buffer.from('80010000001e', 'hex'));
      // any other command: never answered
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const tpm = await Tpm.open(`swtpm:127.0.0.1:${port}`, { timeoutMs: 300 });
    await assert.rejects(
      tpm.getRandom(8),
      (e: unknown) => e instanceof TpmError && e.code === 'TPM_TRANSPORT',
    );
    await assert.rejects(
      tpm.startup(),
      (e: unknown) => e instanceof TpmError && /no response after 300 ms/.test(e.message),
    );
    await tpm.close();
    const closed = await Tpm.open('swtpm:127.0.0.1:1', { timeoutMs: 300 });
    await assert.rejects(
      closed.getRandom(8),
      (e: unknown) => e instanceof TpmError && e.code === 'TPM_TRANSPORT',
    );
  } finally {
    server.close();
  }
});

test('the device transport writes one command and reads one whole response through the file descriptor', async () => {
  // A FIFO opened read-write hands back what was written: the "response" is the command itself,
  // whose framing is valid, so the client reads it and reports its code as the TPM's error.
  const dir = mkdtempSync(join(tmpdir(), 'seal-tpm-fifo-'));
  try {
    const fifo = join(dir, 'tpm');
    execFileSync('mkfifo', [fifo]);
    const device = await DeviceTransport.open(fifo);
    const tpm = new Tpm(device);
    await assert.rejects(
      tpm.getRandom(8),
      (e: unknown) => e instanceof TpmResponseError && e.rc === CC.GetRandom,
    );
    await device.close();
    await assert.rejects(
      DeviceTransport.open(join(dir, 'absent')),
      (e: unknown) => e instanceof TpmError && e.code === 'TPM_TRANSPORT',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the recording transport keeps every exchange and names the command codes', async () => {
  const t = await startTestTpm();
  try {
    const recorder = new RecordingTransport(t.recorder);
    const tpm = new Tpm(recorder);
    await tpm.getRandom(8);
    await tpm.pcrRead([{ hash: 'sha256', pcrs: [7] }]);
    assert.deepEqual(recorder.commandCodes, [CC.GetRandom, CC.PCR_Read]);
    assert.equal(recorder.exchanges[0]!.response.readUInt32BE(6), 0);
  } finally {
    await t.stop();
  }
});
