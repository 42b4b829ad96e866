/**
 * `seal attest verify` per evidence document: how many documents one core verifies per second
 * (goal ≥ 500), against the floor — checking the quote's signature alone (ECDSA P-256 over the
 * TPMS_ATTEST, node:crypto) — and against tpm2-tools' tpm2_checkquote, which checks only the
 * signature and the nonce (no PCR file given), one process per quote as it is used (its CPU time read from
 * /proc/self/stat's children times).
 *   node bench/attest.ts [DOCUMENTS]
 *
 * The documents: quotes with fresh nonces by a swtpm's identity key (certified by a device CA)
 * after a played boot of a signed UKI (the PCR 4/7/11 events OVMF and systemd-stub measure, and
 * firmware events): 38 events, PCRs 0-9 and 11, a binding key. Verified as a service does —
 * parse, chain, signature, nonce, product, PCR digest, event log replay and data checks, reference
 * comparison, binding — once with every chain checked anew (a new device each time) and once
 * with the chain cache a verifier service keeps. Rates are per CPU second of this process
 * (node:crypto and WebCrypto work on other threads is counted), so they are per core.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ChainCache,
  parseEvidence,
  parseReference,
  quoteEvidence,
  verifyEvidence,
} from '../src/attest/index.ts';
import { parseCertificate } from '../src/pki/index.ts';
import { keyObjectOf, publicPem, verifyTpmSignature } from '../src/tpm/index.ts';
import { bootEvents, buildArtifacts, certifyDevice, playBoot } from '../test/helpers/attest.ts';
import { startTestTpm } from '../test/helpers/tpm.ts';

const count = Number(process.argv[2] ?? 500);
const work = mkdtempSync(join(tmpdir(), 'bench-attest-'));

/** CPU seconds used by this process's finished children (/proc/self/stat cutime + cstime). */
function childrenCpu(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // Fields 16 and 17 of the whole line (cutime, cstime), in clock ticks of 1/100 s.
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** Wall seconds and CPU seconds (user + system, all threads) of `run`. */
async function measure(run: () => Promise<unknown> | unknown): Promise<{ wall: number; cpu: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await run();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { wall, cpu: (cpu.user + cpu.system) / 1e6 };
}

async function best(rounds: number, run: () => Promise<unknown> | unknown) {
  await run();
  let out = { wall: Number.POSITIVE_INFINITY, cpu: Number.POSITIVE_INFINITY };
  for (let i = 0; i < rounds; i++) {
    const m = await measure(run);
    if (m.cpu < out.cpu) out = m;
  }
  return out;
}

try {
  const fx = await buildArtifacts(work);
  const t = await startTestTpm();
  const docs: { text: string; nonce: Buffer }[] = [];
  try {
    const device = await certifyDevice(t.tpm, fx.pki, 'SN-BENCH');
    const log = await playBoot(t.tpm, await bootEvents(fx.good, fx.vars));
    for (let i = 0; i < count; i++) {
      const nonce = Buffer.alloc(32);
      nonce.writeUInt32BE(i);
      const quoted = await quoteEvidence(t.tpm, {
        nonce,
        certificates: [device.der],
        eventLog: log,
        bind: true,
      });
      await quoted.binding!.release();
      docs.push({ text: quoted.evidence, nonce });
    }
  } finally {
    await t.stop();
  }
  const deviceCa = parseCertificate(readFileSync(fx.deviceCa, 'utf8'));
  const reference = parseReference(readFileSync(fx.reference));
  const parsed = docs.map((d) => parseEvidence(d.text));
  const key = keyObjectOf(parsed[0]!.attestationKey);

  const cold = async () => {
    for (const d of docs)
      await verifyEvidence(parseEvidence(d.text), { deviceCa, reference, nonce: d.nonce });
  };
  const chains = new ChainCache();
  const warm = async () => {
    for (const d of docs)
      await verifyEvidence(parseEvidence(d.text), { deviceCa, reference, nonce: d.nonce, chains });
  };
  const floor = () => {
    for (const e of parsed)
      if (!verifyTpmSignature(key, e.quote.bytes, e.quote.signature))
        throw new Error('a quote does not verify');
  };

  const tc = await best(3, cold);
  const tw = await best(3, warm);
  const tf = await best(3, floor);

  // tpm2_checkquote, one process per document (20 of them).
  const sample = parsed.slice(0, 20);
  writeFileSync(join(work, 'ak.pem'), publicPem(parsed[0]!.attestationKey));
  sample.forEach((e, i) => {
    writeFileSync(join(work, `q${i}.bin`), e.quote.bytes);
    writeFileSync(join(work, `q${i}.sig`), e.quote.signatureBytes);
  });
  const checkquote = () => {
    for (const [i, e] of sample.entries())
      execFileSync(
        'tpm2_checkquote',
        [
          '-u',
          'ak.pem',
          '-m',
          `q${i}.bin`,
          '-s',
          `q${i}.sig`,
          '-g',
          'sha256',
          '-q',
          e.quote.attest.extraData.toString('hex'),
        ],
        { cwd: work, stdio: 'ignore' },
      );
  };
  const cpu0 = childrenCpu();
  const tq = await measure(checkquote);
  const tqCpu = childrenCpu() - cpu0;

  const rate = (n: number, s: number) => `${Math.round(n / s)}/s`;
  console.log(
    `${count} evidence documents (${docs[0]!.text.length} bytes each, 38 events, PCRs 0-9,11, binding key)`,
  );
  console.log(
    `signature check alone (floor): ${rate(count, tf.cpu)} per CPU second (${((tf.cpu / count) * 1e6).toFixed(0)} µs each)`,
  );
  console.log(
    `seal verify, chain cached (a service): ${rate(count, tw.cpu)} per CPU second, ${rate(count, tw.wall)} wall — ${(tw.cpu / tf.cpu).toFixed(1)}x the floor's time (goal ≥ 500/s per core)`,
  );
  console.log(
    `seal verify, every chain checked: ${rate(count, tc.cpu)} per CPU second, ${rate(count, tc.wall)} wall — ${(tc.cpu / tf.cpu).toFixed(1)}x the floor's time`,
  );
  console.log(
    `tpm2_checkquote (one process per quote; signature and nonce only): ${rate(sample.length, tqCpu)} per CPU second, ${rate(sample.length, tq.wall)} wall — seal verify (cached) ${(tqCpu / sample.length / (tw.cpu / count)).toFixed(0)}x less CPU per document`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
