/**
 * A device unlock — salted, parameter-encrypted policy session, the signed policy's ticket,
 * PolicyPCR(7) ∧ PolicyNV(version) ∧ PolicyAuthorize then NV_Read for 3 secrets, PCR 7 lock —
 * by Seal (the library in a running agent, and the `seal tpm unlock` command from a cold start)
 * and by tpm2-tools (bench/tpm-unlock-tpm2-tools.sh), on one swtpm, in one run. Between runs the
 * TPM is power-cycled and "booted" again (untimed). TPM commands are counted by a proxy on the
 * TPM socket; the proxy's recording also tells whether a secret crossed it in clear.
 *   node bench/tpm.ts [ROUNDS]
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Swtpm } from '../src/machine/index.ts';
import { initPki, newDevice } from '../src/pki/index.ts';
import {
  hash,
  lockDigest,
  marshal,
  openTransport,
  provision,
  serializePolicy,
  signPolicy,
  Tpm,
  unlock,
  versionOperand,
  writeSignature,
} from '../src/tpm/index.ts';
import { median } from './timing.ts';

const run = promisify(execFile);
const rounds = Number(process.argv[2] ?? 7);
const SEAL = fileURLToPath(new URL('../bin/seal', import.meta.url));
const SCRIPT = fileURLToPath(new URL('./tpm-unlock-tpm2-tools.sh', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'bench-tpm-'));
const SIGNER = hash('sha256', Buffer.from('the db certificate that signed the production UKI'));

/** Forwards loopback connections on a new port to `target`, handing the bytes of each direction to `tap`. */
function forward(target: number, tap?: (data: Buffer, up: boolean) => void, port = 0): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: target });
      client.on('data', (d: Buffer) => {
        tap?.(d, true);
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        tap?.(d, false);
        client.write(d);
      });
      client.on('close', () => upstream.end());
      upstream.on('close', () => client.end());
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/**
 * A proxy in front of swtpm's command port (and, on the next port, its control port, as the
 * swtpm TCTI expects) that keeps every command and all the traffic.
 */
async function proxy(
  port: number,
): Promise<{ port: number; commands: Buffer[]; traffic: Buffer[]; close(): void }> {
  const commands: Buffer[] = [];
  const traffic: Buffer[] = [];
  let pending = Buffer.alloc(0);
  const tap = (d: Buffer, up: boolean) => {
    traffic.push(Buffer.from(d));
    if (!up) return;
    pending = Buffer.concat([pending, d]);
    while (pending.length >= 6 && pending.length >= pending.readUInt32BE(2)) {
      commands.push(pending.subarray(0, pending.readUInt32BE(2)));
      pending = pending.subarray(pending.readUInt32BE(2));
    }
  };
  for (;;) {
    const data = await forward(port, tap);
    const p = (data.address() as { port: number }).port;
    try {
      const control = await forward(port + 1, undefined, p + 1);
      return {
        port: p,
        commands,
        traffic,
        close: () => {
          data.close();
          control.close();
        },
      };
    } catch {
      data.close();
    }
  }
}

const swtpm = await Swtpm.start({ stateDir: join(work, 'state'), mode: 'tcp' });
const port = Number(swtpm.address.split(':').at(-1));
try {
  // The factory: a device identity, the product policy key, provisioning, a signed policy.
  await initPki(join(work, 'pki'));
  const device = await newDevice(join(work, 'pki'), {
    product: '3b241101-e2bb-4255-8caf-4136c566a962',
    serial: 'BENCH1',
  });
  const deviceCert = Buffer.from(
    new (await import('node:crypto')).X509Certificate(readFileSync(device.certificate)).raw,
  );
  const deviceKey = createPrivateKey(readFileSync(device.key!)).export({
    type: 'pkcs8',
    format: 'der',
  }) as Buffer;
  const policyKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const boot = async () => {
    await swtpm.reboot();
    const tpm = new Tpm(await openTransport(swtpm.address));
    await tpm.pcrExtend(7, [{ hash: 'sha256', digest: SIGNER }]);
    await tpm.close();
  };
  await boot();
  const factory = new Tpm(await openTransport(swtpm.address));
  const { luksPassphrase } = await provision(factory, {
    policyKey: policyKey.privateKey,
    deviceCert,
    deviceKey,
  });
  await factory.close();
  const pcr7 = hash('sha256', Buffer.alloc(32), SIGNER);
  const policy = signPolicy({ key: policyKey.privateKey, role: 'production', version: 1, pcrs: [[7, pcr7]] });
  writeFileSync(join(work, 'policy.json'), serializePolicy(policy));
  // tpm2-tools' inputs, from the same signed policy.
  writeFileSync(join(work, 'policy-key.pem'), policy.signingKey.pem);
  writeFileSync(join(work, 'approved.bin'), policy.approvedPolicy);
  writeFileSync(
    join(work, 'signature.bin'),
    marshal((w) => writeSignature(w, policy.signature)),
  );
  writeFileSync(join(work, 'pcr7.bin'), pcr7);
  writeFileSync(join(work, 'version.bin'), versionOperand(1));
  writeFileSync(join(work, 'lock.hex'), lockDigest('sha256').toString('hex'));
  const secrets = [deviceCert, deviceKey, luksPassphrase!];

  const contenders = {
    'seal (library)': async (address: string) => {
      const tpm = new Tpm(await openTransport(address));
      // The same three secrets the tpm2-tools script reads (the agent also reads versionAuth).
      const { secrets: s, wipe } = await unlock(tpm, {
        policy,
        lockPcr7: true,
        secrets: ['deviceCert', 'deviceKey', 'luksPassphrase'],
      });
      if (!s.luksPassphrase?.equals(luksPassphrase!)) throw new Error('seal read the wrong passphrase');
      wipe();
      await tpm.close();
    },
    'seal tpm unlock (CLI)': async (address: string) => {
      await run(SEAL, [
        'tpm',
        'unlock',
        '--tpm',
        address,
        '--policy',
        join(work, 'policy.json'),
        '--lock-pcr7',
      ]);
    },
    'tpm2-tools': async (address: string) => {
      const [, host, p] = address.split(':');
      for (const f of ['session.ctx', 'key.ctx', 'key.name', 'verified.tkt'])
        rmSync(join(work, f), { force: true });
      await run('bash', [SCRIPT, work], {
        env: { ...process.env, TPM2TOOLS_TCTI: `swtpm:host=${host},port=${p}` },
      });
      const read = ['0x01500021', '0x01500022', '0x01500040'].map((i) =>
        readFileSync(join(work, `secret-${i}`)),
      );
      if (!read.every((r, i) => r.equals(secrets[i]!))) throw new Error('tpm2-tools read other secrets');
      for (const i of ['0x01500021', '0x01500022', '0x01500040']) rmSync(join(work, `secret-${i}`));
    },
  };
  type Name = keyof typeof contenders;

  // One counted, checked run of each through the proxy.
  const counts = {} as Record<Name, number>;
  const inClear = {} as Record<Name, boolean>;
  for (const [name, contender] of Object.entries(contenders) as [Name, (a: string) => Promise<void>][]) {
    await boot();
    const p = await proxy(port);
    await contender(`swtpm:127.0.0.1:${p.port}`);
    p.close();
    counts[name] = p.commands.length;
    const wire = Buffer.concat(p.traffic);
    inClear[name] = secrets.some((s) => wire.includes(s.subarray(0, 24)));
  }

  // Timed rounds, straight to swtpm; the power cycle and boot measurement are not timed.
  const times = Object.fromEntries(Object.keys(contenders).map((k) => [k, [] as number[]])) as Record<
    Name,
    number[]
  >;
  for (let round = 0; round < rounds; round++) {
    for (const [name, contender] of Object.entries(contenders) as [Name, (a: string) => Promise<void>][]) {
      await boot();
      const start = process.hrtime.bigint();
      await contender(swtpm.address);
      times[name].push(Number(process.hrtime.bigint() - start) / 1e9);
    }
  }
  const tools = median(times['tpm2-tools']);
  console.log(
    `unlock of 3 secrets (the CLI reads its default 4) + PCR 7 lock on swtpm, median of ${rounds} rounds`,
  );
  for (const name of Object.keys(contenders) as Name[]) {
    const t = median(times[name]);
    console.log(
      `  ${name.padEnd(24)} ${(t * 1000).toFixed(1).padStart(8)} ms  ${(t / tools).toFixed(3)}× tpm2-tools  ${String(counts[name]).padStart(3)} TPM commands  secrets in clear on the wire: ${inClear[name] ? 'YES' : 'no'}`,
    );
  }
} finally {
  await swtpm.stop();
  rmSync(work, { recursive: true, force: true });
}
