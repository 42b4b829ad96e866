/**
 * SEV, SEV-ES and SEV-SNP launch digests against sev-snp-measure: its published vectors (some
 * measured on SNP hardware), and 723 runs of the tool itself recorded on this machine's Debian
 * OVMF builds (see fixtures/sev-snp-measure/README.md), replayed through `seal measure`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import {
  CvmError,
  cpuSignature,
  directBootHashes,
  Firmware,
  launchDigest,
  resetVmsa,
  snpOvmfHash,
  VCPU_TYPES,
  vcpuModel,
  vcpuTypeSignature,
} from '../../src/measure/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { generated, runInProcess, SSM, sha256, workDir } from './helpers.ts';

interface GuestCase {
  name: string;
  mode: 'sev' | 'seves' | 'snp' | 'snp:svsm';
  vcpus: number;
  vcpuType: string | null;
  ovmf: string;
  kernel: string | null;
  initrd: string | null;
  append: string | null;
  guestFeatures: string;
  vmm?: 'QEMU' | 'ec2' | 'gce';
  ovmfHash?: string;
  svsm?: string;
  varsSize?: number;
  expect?: string;
  error?: string;
}

function fixturePath(name: string): string {
  return name.endsWith('.gz') || existsSync(join(SSM, name)) ? join(SSM, name) : join(workDir(), name);
}

test("sev-snp-measure's published vectors (tests/test_guest.py), SVSM ones measured on SNP hardware", async () => {
  const doc = JSON.parse(readFileSync(join(SSM, 'test_guest.json'), 'utf8')) as {
    ovmfHashOfAmdSevSuffix: string;
    cases: GuestCase[];
  };
  const empty = join(workDir(), 'empty');
  assert.equal(
    (await snpOvmfHash(join(SSM, 'ovmf_AmdSev_suffix.bin'))).toString('hex'),
    doc.ovmfHashOfAmdSevSuffix,
  );
  let checked = 0;
  for (const c of doc.cases) {
    const file = (p: string | null) => (p === null ? undefined : p === '/dev/null' ? empty : p);
    const run = launchDigest({
      mode: c.mode,
      ovmf: fixturePath(c.ovmf),
      vcpus: c.vcpus,
      vcpuSignature: c.vcpuType ? vcpuTypeSignature(c.vcpuType) : undefined,
      vmm: c.vmm,
      kernel: file(c.kernel),
      initrd: file(c.initrd),
      // sev-snp-measure reads its `append` only with a kernel
      cmdline: c.kernel === null ? undefined : (c.append ?? undefined),
      guestFeatures: BigInt(c.guestFeatures),
      ovmfHash: c.ovmfHash ? Buffer.from(c.ovmfHash, 'hex') : undefined,
      svsm: c.svsm ? fixturePath(c.svsm) : undefined,
      varsSize: c.varsSize,
    });
    if (c.error) {
      await assert.rejects(run, (e: unknown) => e instanceof CvmError && e.code === c.error, c.name);
    } else {
      assert.equal((await run).toString('hex'), c.expect, c.name);
    }
    checked++;
  }
  assert.equal(checked, 26);
});

interface Run {
  argv: string[];
  status: number;
  stdout: string;
  stderr?: string;
}

test('723 recorded sev-snp-measure runs give the same output through `seal measure`', async () => {
  const doc = JSON.parse(readFileSync(join(SSM, 'runs.json'), 'utf8')) as {
    inputs: Record<string, { path: string; sha256: string }>;
    generated: Record<string, { size: number; sha256: string; salt: number }>;
    cases: Run[];
  };
  const dir = workDir();
  const paths = new Map<string, string>();
  for (const [name, { path, sha256: want }] of Object.entries(doc.inputs)) {
    const file = name.startsWith('debian:')
      ? path
      : join(name.endsWith('.fd') || name.endsWith('svsm.bin') ? dir : SSM, name.slice('fixture:'.length));
    assert.equal(
      sha256(readFileSync(file)),
      want,
      `${file} is not the file the runs were recorded with (a Debian ovmf update?): record runs.json again`,
    );
    paths.set(`{${name}}`, file);
  }
  for (const [name, g] of Object.entries(doc.generated)) {
    const data = generated(g.size, g.salt);
    assert.equal(sha256(data), g.sha256, `generated ${name}`);
    const file = join(dir, `gen-${name}`);
    writeFileSync(file, data);
    paths.set(`{${name}}`, file);
  }
  let same = 0;
  let refusedNoMetadata = 0;
  for (const run of doc.cases) {
    const argv = ['measure', ...run.argv.map((a) => paths.get(a) ?? a)];
    const label = run.argv.join(' ');
    const got = await runInProcess(argv);
    const ovmf = run.argv[run.argv.indexOf('--ovmf') + 1] ?? '';
    const mode = run.argv[run.argv.indexOf('--mode') + 1];
    if (mode === 'snp' && ovmf.includes('4M')) {
      // sev-snp-measure measures an SNP launch of a firmware without SEV metadata, which QEMU
      // refuses to launch (it needs the metadata's CPUID and secrets pages): Seal refuses too.
      assert.equal(run.status, 0, label);
      assert.equal(got.status, 1, label);
      assert.match(got.stderr, /\[CVM_NO_SEV_METADATA\]/, label);
      refusedNoMetadata++;
      continue;
    }
    if (run.status === 0) {
      assert.equal(got.stderr, '', label);
      assert.equal(got.stdout, run.stdout, label);
    } else {
      // argparse errors exit 2 (usage), measurement errors exit 1: the same classes as Seal's.
      assert.equal(got.status, run.status, `${label}: ${got.stderr}`);
      assert.match(got.stderr, /^seal: /, label);
    }
    same++;
  }
  assert.equal(same + refusedNoMetadata, 723);
  assert.equal(refusedNoMetadata, 18);
});

test('bad inputs get typed errors naming them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-cvm-bad-'));
  const codeOf = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof CvmError, String(e));
      return e.code;
    }
    return 'no error';
  };
  const ovmf4m = '/usr/share/OVMF/OVMF_CODE_4M.fd';
  // Debian's 4 MiB builds carry no SEV metadata
  assert.equal(await codeOf(launchDigest({ mode: 'snp', ovmf: ovmf4m, vcpus: 1 })), 'CVM_NO_SEV_METADATA');
  assert.throws(() => vcpuTypeSignature('EPYC-v9'), { code: 'CVM_UNKNOWN_VCPU_TYPE' });
  assert.throws(() => vcpuTypeSignature('constructor'), { code: 'CVM_UNKNOWN_VCPU_TYPE' });
  assert.throws(() => cpuSignature(23, 256, 0), { code: 'CVM_INVALID_OPTION' });
  // No footer table at all: SEV still measures the image, SEV-ES and SNP cannot start APs.
  const plain = join(dir, 'plain.fd');
  writeFileSync(plain, Buffer.alloc(8192, 0x5a));
  assert.equal((await launchDigest({ mode: 'sev', ovmf: plain })).length, 32);
  assert.equal(await codeOf(launchDigest({ mode: 'seves', ovmf: plain, vcpus: 2 })), 'CVM_NO_RESET_BLOCK');
  assert.equal(await codeOf(launchDigest({ mode: 'snp', ovmf: plain, vcpus: 1 })), 'CVM_NO_SEV_METADATA');
  assert.equal(
    await codeOf(launchDigest({ mode: 'sev', ovmf: plain, kernel: plain })),
    'CVM_NO_HASHES_TABLE',
  );
  // Not whole pages; a footer table whose size runs past the image; metadata pointing outside it.
  const odd = join(dir, 'odd.fd');
  writeFileSync(odd, Buffer.alloc(5000));
  assert.equal(await codeOf(launchDigest({ mode: 'sev', ovmf: odd })), 'CVM_BAD_FIRMWARE');
  const suffix = readFileSync(join(SSM, 'ovmf_AmdSev_suffix.bin'));
  const huge = Buffer.from(suffix);
  huge.writeUInt16LE(0xffff, huge.length - 32 - 18);
  assert.throws(() => new Firmware(huge, 'huge'), { code: 'CVM_BAD_FIRMWARE' });
  const fw = new Firmware(suffix, 'suffix');
  const metaEntry = fw.table.get('dc886566-984a-4798-a75e-5585a7bf67cc');
  assert.ok(metaEntry);
  const outside = Buffer.from(suffix);
  outside.writeUInt32LE(0x100000, metaEntry.byteOffset - suffix.byteOffset);
  assert.throws(() => new Firmware(outside, 'outside'), { code: 'CVM_BAD_FIRMWARE' });
  // options
  assert.equal(await codeOf(launchDigest({ mode: 'snp', ovmf: plain, vcpus: 0 })), 'CVM_INVALID_OPTION');
  assert.equal(await codeOf(launchDigest({ mode: 'snp', ovmf: plain })), 'CVM_INVALID_OPTION');
  assert.equal(
    await codeOf(launchDigest({ mode: 'seves', ovmf: plain, vcpus: 1, ovmfHash: Buffer.alloc(48) })),
    'CVM_INVALID_OPTION',
  );
  const cli = await runInProcess([
    'measure',
    'snp',
    '--vcpus',
    '1',
    '--vcpu-type',
    'EPYC-v9',
    '--ovmf',
    ovmf4m,
  ]);
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /unknown vCPU type "EPYC-v9".*\[CVM_UNKNOWN_VCPU_TYPE\]/);
  const noMeta = await runInProcess([
    'measure',
    'snp',
    '--vcpus',
    '1',
    '--vcpu-type',
    'EPYC',
    '--ovmf',
    ovmf4m,
  ]);
  assert.match(noMeta.stderr, /OVMF_CODE_4M\.fd: no SEV metadata.*\[CVM_NO_SEV_METADATA\]/);
});

/** Every SEV-capable CPU model of the installed QEMU, expanded by QEMU itself over QMP. */
async function qemuCpuModels(): Promise<Map<string, { family: number; model: number; stepping: number }>> {
  const qemu = spawn(
    'qemu-system-x86_64',
    ['-machine', 'none', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-qmp', 'stdio'],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines = createInterface({ input: qemu.stdout })[Symbol.asyncIterator]();
  const reply = async (): Promise<{ return?: unknown; error?: unknown }> => {
    for (;;) {
      const { value, done } = await lines.next();
      if (done) throw new Error('qemu closed QMP');
      const msg = JSON.parse(value as string) as {
        return?: unknown;
        error?: unknown;
        event?: unknown;
        QMP?: unknown;
      };
      if ('return' in msg || 'error' in msg) return msg;
    }
  };
  const send = async (execute: string, args?: unknown) => {
    qemu.stdin.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    const r = await reply();
    assert.ok(!('error' in r), `${execute}: ${JSON.stringify(r.error)}`);
    return r.return;
  };
  try {
    await send('qmp_capabilities');
    const defs = (await send('query-cpu-definitions')) as { name: string }[];
    const out = new Map<string, { family: number; model: number; stepping: number }>();
    for (const { name } of defs) {
      if (!/^(EPYC|Dhyana)/.test(name)) continue;
      const r = (await send('query-cpu-model-expansion', { type: 'static', model: { name } })) as {
        model: { props: { family: number; model: number; stepping: number } };
      };
      const { family, model, stepping } = r.model.props;
      out.set(name, { family, model, stepping });
    }
    await send('quit');
    return out;
  } finally {
    qemu.kill();
  }
}

test("every SEV-capable vCPU type of the installed QEMU is known, with QEMU's family/model/stepping", async () => {
  const models = await qemuCpuModels();
  assert.ok(models.size >= 19, `QEMU offered only ${[...models.keys()].join(', ')}`);
  for (const [name, fms] of models) {
    assert.ok(VCPU_TYPES.includes(name), `QEMU's ${name} is missing`);
    assert.deepEqual(vcpuModel(name), fms, name);
  }
  // The one type sev-snp-measure knows that this QEMU does not (EPYC-Turin) keeps its signature.
  assert.equal(vcpuTypeSignature('EPYC-Turin'), 0xb00f00);
  assert.equal(vcpuTypeSignature('EPYC-v4'), 0x800f12);
});

test('VMSA pages differ by vCPU signature, VMM and features; only the AP ones by entry point', () => {
  const base = { eip: 0xfffffff0, sevFeatures: 1n, vcpuSignature: 0x800f12, vmm: 'QEMU' as const };
  const a = resetVmsa(base);
  assert.equal(a.length, 4096);
  assert.notDeepEqual(resetVmsa({ ...base, vcpuSignature: 0xa00f11 }), a);
  assert.notDeepEqual(resetVmsa({ ...base, sevFeatures: 0x21n }), a);
  // ec2 and gce put 0x600 in RDX whatever the signature
  assert.deepEqual(resetVmsa({ ...base, vmm: 'ec2' }), resetVmsa({ ...base, vmm: 'ec2', vcpuSignature: 1 }));
  assert.deepEqual(resetVmsa({ ...base, vmm: 'gce' }), resetVmsa({ ...base, vmm: 'gce', vcpuSignature: 1 }));
  assert.throws(() => resetVmsa({ ...base, vmm: 'kvmtool' as never }), { code: 'CVM_INVALID_OPTION' });
});

test('the seal executable: sev-snp-measure spellings, --json and --dump-vmsa', () => {
  const ovmf = '/usr/share/OVMF/OVMF_CODE.fd';
  const args = ['--vcpus', '4', '--vcpu-type', 'EPYC-Milan', '--ovmf', ovmf];
  const word = runSeal(['measure', 'snp', ...args]);
  assert.equal(word.status, 0, word.stderr);
  assert.match(word.stdout, /^[0-9a-f]{96}\n$/);
  assert.equal(runSeal(['measure', '--mode', 'snp', ...args]).stdout, word.stdout);
  assert.equal(
    runSeal(['measure', '--ovmf', ovmf, '--mode', 'snp', '--vcpus', '4', '--vcpu-sig', '0xa00f11']).stdout,
    word.stdout,
  );
  const contradiction = runSeal(['measure', 'snp', '--mode', 'seves', ...args]);
  assert.equal(contradiction.status, 2);
  const json = runSeal(['measure', 'snp', ...args, '--guest-features', '0x21', '--json']);
  const parsed = JSON.parse(json.stdout) as Record<string, unknown>;
  assert.equal(parsed.mode, 'snp');
  assert.equal(parsed.vcpus, 4);
  assert.equal(parsed.vcpuSignature, '0xa00f11');
  assert.equal(parsed.guestFeatures, '0x21');
  assert.match(parsed.measurement as string, /^[0-9a-f]{96}$/);
  const cwd = mkdtempSync(join(tmpdir(), 'seal-vmsa-'));
  const dump = runSeal(
    ['measure', 'seves', '--vcpus', '3', '--vcpu-type', 'EPYC', '--ovmf', ovmf, '--dump-vmsa'],
    { cwd },
  );
  assert.equal(dump.status, 0, dump.stderr);
  assert.ok(existsSync(join(cwd, 'vmsa2.bin')) && !existsSync(join(cwd, 'vmsa3.bin')));
  assert.equal(readFileSync(join(cwd, 'vmsa0.bin')).length, 4096);
  assert.notDeepEqual(readFileSync(join(cwd, 'vmsa0.bin')), readFileSync(join(cwd, 'vmsa1.bin')));
  assert.deepEqual(readFileSync(join(cwd, 'vmsa1.bin')), readFileSync(join(cwd, 'vmsa2.bin')));
});

test('a large initrd is hashed on a worker thread to the same SHA-256', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-cvm-big-'));
  const big = generated(17 << 20, 3);
  writeFileSync(join(dir, 'initrd'), big);
  writeFileSync(join(dir, 'kernel'), big.subarray(0, 1000));
  const h = await directBootHashes(join(dir, 'kernel'), join(dir, 'initrd'), 'quiet');
  assert.equal(h.initrd.toString('hex'), sha256(big));
  assert.equal(h.kernel.toString('hex'), sha256(big.subarray(0, 1000)));
  assert.equal(h.cmdline.toString('hex'), sha256(Buffer.from('quiet\0')));
});
