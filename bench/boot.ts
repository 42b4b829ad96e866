/**
 * The boot of a Seal device, firmware start to all services running, under qemu TCG with OVMF
 * Secure Boot and swtpm: the Seal agent's initrd against a shell initrd that does the same steps
 * by hand (bench/boot/: busybox, tpm2-tools, cryptsetup, veritysetup, crun), in one run.
 *
 * Both boot the same kernel from a UKI built by `seal uki build` with the same command line and
 * signed by the same kernel key (so firmware, stub and PCR 7 — hence the TPM policy — match), on
 * the same disk, varstore and TPM: the device of test/helpers/device.ts (a busybox host and two
 * services, `web` and `counter`), installed by `seal install` and booted once by the agent (its
 * first boot makes the LUKS2 partitions; both contenders then open them). Before each boot the
 * ESP's BOOTX64.EFI is replaced by the contender's UKI. Boots alternate, each under
 * `flock /tmp/seal-vm.lock` (other VMs on this machine wait, and so do we).
 *
 * Times: the host's clock from qemu's start to the console line "boot complete" (the agent's,
 * or the reference's marker), and the guest's: kernel uptime at that line, the uptime at which
 * the init process started (the agent: "Node.js started X s after the kernel"), and each step's
 * duration as printed on the console (the agent prints the StepRecord it keeps in
 * /run/seal/boot.json; the reference prints its own the same way). The contender's own share is
 * "boot complete" uptime minus its init's start. A boot counts when the counter service then
 * reports the web service's page (both services really run).
 *   node bench/boot.ts [ROUNDS]        (SEAL_BENCH_KEEP=1 keeps the work directory: disk, UKIs, TPM)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSeal } from '../test/helpers/cli.ts';
import {
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  installDisk,
  PRODUCT,
  predictPcr7,
  provisionTpm,
} from '../test/helpers/device.ts';
import { vmKernel } from '../test/helpers/vm.ts';
import { type Boot, bootOnce, type Kind, putUki } from './boot/machine.ts';
import { buildReferenceInitrd } from './boot/reference.ts';
import { median } from './timing.ts';

const rounds = Number(process.argv[2] ?? 3);
const CMDLINE = 'console=ttyS0 quiet loglevel=3 panic=-1';
/** Both initrds are compressed as `seal initrd build` does by default (zstd 12): every MiB of the UKI costs boot time. */
const LEVEL = 12;
/** Seconds a service must stay up to count as come up: the agent waits them, and so does the shell. */
const SETTLE = 3;
const KERNEL_PACKAGE = fileURLToPath(new URL('../scripts/kernel-package.sh', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'bench-boot-'));
const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };

function seal(args: string[]): string {
  const r = runSeal(args);
  if (r.status !== 0) throw new Error(`seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const s = (x: number) => `${x.toFixed(1)} s`;
const ms = (x: number | undefined) => (x === undefined ? '—' : `${Math.round(x)}`);

function report(boots: Boot[], first: Boot, retries: number): void {
  const of = (kind: Kind) => boots.filter((b) => b.kind === kind);
  const med = (kind: Kind, pick: (b: Boot) => number | undefined) => {
    const values = of(kind)
      .map(pick)
      .filter((v): v is number => v !== undefined && Number.isFinite(v));
    return values.length ? median(values) : undefined;
  };
  const row = (label: string, pick: (b: Boot) => number | undefined, unit = s, ratio = true) => {
    const a = med('seal', pick);
    const r = med('reference', pick);
    const x = ratio && a !== undefined && r ? `${(a / r).toFixed(2)}×` : '';
    return `| ${label} | ${a === undefined ? '—' : unit(a)} | ${r === undefined ? '—' : unit(r)} | ${x} |`;
  };
  const kernelAt = (b: Boot) => b.total - b.uptime;
  const share = (b: Boot) => b.uptime - b.initAt;
  const stepSum = (b: Boot) => [...b.steps.values()].reduce((x, y) => x + y, 0);
  console.log(
    `\nboot of a Seal device (busybox host, 2 services) under qemu TCG + OVMF Secure Boot + swtpm, median of ${rounds} rounds (host load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} at the end)\n`,
  );
  console.log('| | Seal agent | shell reference | agent ÷ shell |');
  console.log('|---|---:|---:|---:|');
  console.log(row('**firmware start → all services running** (host clock)', (b) => b.total));
  console.log(row('qemu start → firmware starts the UKI', (b) => b.firmwareAt, s, false));
  console.log(row('qemu start → kernel start (host − guest uptime)', kernelAt, s, false));
  console.log(row('kernel start → init started (initrd unpacked)', (b) => b.initAt));
  console.log(row('**init → all services running (own share)**', share));
  console.log(
    row(
      '  of which Node.js starting and loading the agent',
      (b) => (b.loadMs === undefined ? undefined : b.loadMs / 1000),
      s,
      false,
    ),
  );
  const tpm = (b: Boot) => b.steps.get('unlock the TPM and lock PCR 7') ?? 0;
  console.log(row(`  own share less the ${SETTLE} s the services must stay up`, (b) => share(b) - SETTLE));
  console.log(row('  … and less the TPM unlock step', (b) => share(b) - SETTLE - tpm(b) / 1000));
  console.log(
    row(
      '  own share outside the steps (the agent: also loading)',
      (b) => share(b) - stepSum(b) / 1000,
      s,
      false,
    ),
  );
  console.log(row('qemu start → the counter read the web page (host)', (b) => b.counterAt, s, false));
  const names: string[] = [];
  for (const b of [...of('seal'), ...of('reference')])
    for (const name of b.steps.keys()) if (!names.includes(name)) names.push(name);
  console.log("\nper step (ms, median; the agent's from its boot record, the shell's printed alike)\n");
  console.log('| step | Seal agent | shell reference |');
  console.log('|---|---:|---:|');
  for (const name of names)
    console.log(
      `| ${name} | ${ms(med('seal', (b) => b.steps.get(name)))} | ${ms(med('reference', (b) => b.steps.get(name)))} |`,
    );
  console.log(`| (sum of the steps) | ${ms(med('seal', stepSum))} | ${ms(med('reference', stepSum))} |`);
  console.log(
    "\nrounds (host clock to all services running; own share in brackets; the host's 1-minute load average at each boot):",
  );
  for (let i = 0; i < rounds; i++) {
    const a = of('seal')[i]!;
    const r = of('reference')[i]!;
    console.log(
      `  ${i + 1}: agent ${s(a.total)} (${s(share(a))}), shell ${s(r.total)} (${s(share(r))}); host load ${a.load.toFixed(1)} and ${r.load.toFixed(1)}`,
    );
  }
  console.log(
    `first boot of the agent (LUKS2 formatted, ext4 made): ${s(first.total)} (${s(share(first))}); ` +
      `open config ${ms(first.steps.get('open the config partition'))} ms, open data ${ms(first.steps.get('open the data partition'))} ms`,
  );
  if (retries) console.log(`crashed guests booted again: ${retries}`);
  const total = med('seal', (b) => b.total)!;
  const ratio = med('seal', share)! / med('reference', share)!;
  console.log(
    `\ngoals: all services up in ≤ 30 s under TCG: ${s(total)} — ${total <= 30 ? 'met' : 'NOT met'}; ` +
      `the agent's share ≤ 1.5× the shell's: ${ratio.toFixed(2)}× — ${ratio <= 1.5 ? 'met' : 'NOT met'}`,
  );
}

try {
  console.error('bench/boot: building the device (PKI, images, system, UKI, disk, TPM)…');
  const f = buildFixture(join(work, 'fixture'));
  const kernelPackage = execFileSync('bash', [KERNEL_PACKAGE], { encoding: 'utf8' }).trim();
  const kit = buildBootKit(f, join(vmKernel(), 'vmlinuz'), kernelPackage);
  const sealUki = buildUki(f, kit, join(work, 'seal.efi'), { cmdline: CMDLINE, level: LEVEL });
  const system = buildSystem(f, 1);
  installDisk(f, system, device.disk, sealUki);
  copyFileSync(kit.vars, device.vars);
  mkdirSync(device.tpm);
  await provisionTpm(f, device.tpm);

  console.error('bench/boot: building the shell reference initrd and its UKI…');
  const ref = await buildReferenceInitrd(join(work, 'reference.initrd'), {
    kernelPackage,
    policy: join(work, 'seal.policy.json'),
    system,
    ca: f.ca,
    layout: f.layout,
    level: LEVEL,
  });
  const refUki = join(work, 'reference.efi');
  seal([
    'uki',
    'build',
    '--linux',
    kit.vmlinuz,
    '--initrd',
    ref.path,
    '--cmdline',
    CMDLINE,
    '--key',
    kit.kernelKey,
    '--cert',
    kit.kernelCert,
    refUki,
  ]);
  if (predictPcr7(kit, refUki) !== predictPcr7(kit, sealUki))
    throw new Error('the two UKIs give different PCR 7 values: the TPM policy would not open for both');
  console.error(
    `bench/boot: initrds zstd ${LEVEL}; UKIs ${(statSync(sealUki).size / 2 ** 20).toFixed(1)} MiB (agent) and ${(statSync(refUki).size / 2 ** 20).toFixed(1)} MiB (shell, ${ref.modules} modules, services ${ref.services.join(', ')}); product ${PRODUCT}`,
  );

  const retries = { count: 0 };
  const boot = async (kind: Kind) => {
    putUki(device, kind === 'seal' ? sealUki : refUki);
    const b = await bootOnce(device, kind, retries);
    console.error(
      `bench/boot: ${kind}: all services running ${s(b.total)} after qemu started, ${s(b.uptime)} after the kernel`,
    );
    return b;
  };
  // The agent's first boot makes the LUKS2 partitions; the shell then boots once untimed (warm-up).
  const first = await boot('seal');
  await boot('reference');
  const boots: Boot[] = [];
  for (let round = 0; round < rounds; round++) {
    const order: Kind[] = round % 2 === 0 ? ['seal', 'reference'] : ['reference', 'seal'];
    for (const kind of order) boots.push(await boot(kind));
  }
  report(boots, first, retries.count);
} finally {
  if (process.env.SEAL_BENCH_KEEP) console.error(`bench/boot: kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
