/**
 * The SEV-SNP launch digest of a direct boot (OVMF + the test VM's kernel + a 50 MiB initrd +
 * command line, 4 vCPUs) against the SHA-384 throughput limit of this machine — node:crypto
 * hashing the same bytes once — and against sev-snp-measure when it can be run: set
 * SEV_SNP_MEASURE to its sev-snp-measure.py (it is a Python tool, not a Debian package; Debian's
 * python3 runs it as it is). Median of five rounds each, taking turns.
 *   node bench/measure.ts [INITRD_MIB]
 *
 * Debian's OVMF builds reserve no SEV hashes table, so the firmware measured is Debian's 4 MiB
 * OVMF_CODE with its last page replaced by the end of an AmdSevX64 build (the footer table and SEV
 * metadata with the kernel-hashes page): the same number of pages as a real AmdSev image.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchDigest, vcpuTypeSignature } from '../src/measure/index.ts';
import { race } from './timing.ts';

const initrdMib = Number(process.argv[2] ?? 50);
const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'bench-measure-'));

try {
  const kernel = join(
    execFileSync('bash', [join(root, 'scripts/vm-kernel.sh')], { encoding: 'utf8' }).trim(),
    'vmlinuz',
  );
  const initrd = join(work, 'initrd.img');
  const block = Buffer.alloc(1 << 20);
  const chunks: Buffer[] = [];
  for (let i = 0; i < initrdMib; i++) {
    for (let j = 0; j < block.length; j += 4)
      block.writeUInt32LE(Math.imul(i * 262144 + j, 2654435761) >>> 0, j);
    chunks.push(Buffer.from(block));
  }
  writeFileSync(initrd, Buffer.concat(chunks));
  const ovmf = join(work, 'OVMF.fd');
  const code = readFileSync('/usr/share/OVMF/OVMF_CODE_4M.fd');
  const suffix = readFileSync(join(root, 'test/measure/fixtures/sev-snp-measure/ovmf_AmdSev_suffix.bin'));
  writeFileSync(ovmf, Buffer.concat([code.subarray(0, code.length - suffix.length), suffix]));
  const cmdline = 'console=ttyS0 root=/dev/vda rw seal.attest=https://127.0.0.1:8443/';
  const files = [ovmf, kernel, initrd];
  const bytes = files.reduce((n, f) => n + statSync(f).size, 0);

  const seal = () =>
    launchDigest({
      mode: 'snp',
      ovmf,
      vcpus: 4,
      vcpuSignature: vcpuTypeSignature('EPYC-Milan'),
      kernel,
      initrd,
      cmdline,
      guestFeatures: 0x21n,
    });
  const limit = async () => {
    const hash = createHash('sha384');
    for (const f of files)
      for await (const c of createReadStream(f, { highWaterMark: 1 << 20 })) hash.update(c as Buffer);
    return hash.digest();
  };
  const ssm = process.env.SEV_SNP_MEASURE;
  const ssmArgs = (script: string) => [
    script,
    '--mode',
    'snp',
    '--vcpus',
    '4',
    '--vcpu-type',
    'EPYC-Milan',
    '--guest-features',
    '0x21',
    '--ovmf',
    ovmf,
    '--kernel',
    kernel,
    '--initrd',
    initrd,
    '--append',
    cmdline,
  ];
  const sealCli = () =>
    execFileSync(join(root, 'bin/seal'), ['measure', ...ssmArgs('snp').slice(2)], { encoding: 'utf8' });
  const contenders: Record<string, () => unknown> = { seal, limit, sealCli };
  if (ssm && existsSync(ssm))
    contenders.ssm = () => execFileSync('python3', ssmArgs(ssm), { encoding: 'utf8' });

  const ours = (await seal()).toString('hex');
  assert(sealCli().trim() === ours, 'seal measure printed another digest');
  if (contenders.ssm)
    assert((contenders.ssm() as string).trim() === ours, 'sev-snp-measure computed another digest');

  const t = await race(5, contenders);
  const mb = (s: number) => `${(bytes / s / 1e6).toFixed(0)} MB/s`;
  console.log(
    `input: OVMF ${statSync(ovmf).size} B + kernel ${statSync(kernel).size} B + initrd ${initrdMib} MiB, 4 vCPUs`,
  );
  console.log(`SHA-384 once over the same bytes (limit): ${(t.limit * 1000).toFixed(1)} ms (${mb(t.limit)})`);
  console.log(
    `seal launchDigest (library): ${(t.seal * 1000).toFixed(1)} ms — ${(t.seal / t.limit).toFixed(2)}x the limit (goal ≤ 1.5x)`,
  );
  console.log(`seal measure snp (command, with Node.js start): ${(t.sealCli * 1000).toFixed(1)} ms`);
  if (t.ssm !== undefined)
    console.log(
      `sev-snp-measure (python3): ${(t.ssm * 1000).toFixed(1)} ms — seal command ${(t.ssm / t.sealCli).toFixed(2)}x faster, library ${(t.ssm / t.seal).toFixed(2)}x`,
    );
  else console.log('sev-snp-measure: not run (set SEV_SNP_MEASURE=/path/to/sev-snp-measure.py)');
} finally {
  rmSync(work, { recursive: true, force: true });
}

function assert(ok: boolean, message: string): void {
  if (!ok) throw new Error(message);
}
