/**
 * The boot image, in one run on the same inputs (bookworm-backports' kernel, a 60 MiB initrd):
 *  - build and sign a UKI: `seal uki build … --key --cert` against what a user does without
 *    Seal, `objcopy --add-section …` on systemd's stub, then `sbsign`;
 *  - predict PCR 11: `seal pcr predict --pcrs 11` on the UKI against systemd 254's
 *    `systemd-measure calculate` on the same sections (unpacked from its .deb, not installed);
 *    with the single-core SHA-256 rate of `openssl speed` as the floor of any implementation.
 * Medians of rounds in which the contenders take turns (bench/timing.ts); prints ratios.
 *   node bench/uki.ts [INITRD_MIB]
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { predictPcrs } from '../src/measure/index.ts';
import { withPeImage } from '../src/pe/index.ts';
import { race } from './timing.ts';

const mib = Number(process.argv[2] ?? 60);
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const work = mkdtempSync(join(tmpdir(), 'bench-uki-'));
const f = (name: string) => join(work, name);
const run = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) =>
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });

try {
  const kernel = join(execFileSync('bash', ['scripts/vm-kernel.sh'], { encoding: 'utf8' }).trim(), 'vmlinuz');
  // A 60 MiB initrd that does not compress: content stands in for a real one.
  const fd = openSync(f('initrd'), 'w');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < mib; i++) {
    for (let j = 0; j < chunk.length; j += 4)
      chunk.writeUInt32LE((Math.imul(i * 262144 + j, 2654435761) ^ j) >>> 0, j);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  writeFileSync(f('cmdline'), 'console=ttyS0 quiet');
  writeFileSync(f('os-release'), 'ID=bench\nPRETTY_NAME="Seal benchmark"\n');
  run('openssl', [
    'req',
    '-new',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    f('db.key'),
    '-out',
    f('db.crt'),
    '-subj',
    '/CN=bench',
    '-days',
    '30',
  ]);

  // The objcopy recipe: sections at page-aligned addresses after the stub's image, as ukify places them.
  const base = withPeImage(STUB, (i) => ({ imageBase: i.headers.imageBase, end: i.headers.sizeOfImage }));
  const inputs: [string, string][] = [
    ['.osrel', f('os-release')],
    ['.cmdline', f('cmdline')],
    ['.initrd', f('initrd')],
    ['.linux', kernel],
  ];
  const objcopyArgs: string[] = [];
  let va = base.end;
  for (const [name, path] of inputs) {
    objcopyArgs.push(
      '--add-section',
      `${name}=${path}`,
      '--change-section-vma',
      `${name}=0x${(base.imageBase + BigInt(va)).toString(16)}`,
    );
    va += Math.ceil(statSync(path).size / 4096) * 4096;
  }
  const reference = () => {
    run('objcopy', [...objcopyArgs, STUB, f('ref-unsigned.efi')]);
    run('sbsign', [
      '--key',
      f('db.key'),
      '--cert',
      f('db.crt'),
      '--output',
      f('ref.efi'),
      f('ref-unsigned.efi'),
    ]);
  };
  const seal = () =>
    run('bin/seal', [
      'uki',
      'build',
      '--linux',
      kernel,
      '--initrd',
      f('initrd'),
      '--cmdline',
      `@${f('cmdline')}`,
      '--os-release',
      f('os-release'),
      '--key',
      f('db.key'),
      '--cert',
      f('db.crt'),
      f('seal.efi'),
    ]);
  const build = await race(5, { seal, reference });
  for (const out of ['seal.efi', 'ref.efi']) run('sbverify', ['--cert', f('db.crt'), f(out)]);
  const size = statSync(f('seal.efi')).size;
  console.log(
    `input: kernel ${(statSync(kernel).size / 2 ** 20).toFixed(1)} MiB, initrd ${mib} MiB; UKI ${(size / 2 ** 20).toFixed(1)} MiB`,
  );
  console.log(
    `build+sign   seal ${build.seal.toFixed(3)} s   objcopy+sbsign ${build.reference.toFixed(3)} s   ratio ${(build.seal / build.reference).toFixed(2)}x`,
  );

  // PCR 11: the same sections, as files for systemd-measure.
  for (const name of ['.linux', '.osrel', '.cmdline', '.initrd', '.uname', '.sbat'])
    run('objcopy', ['-O', 'binary', `--only-section=${name}`, f('seal.efi'), f(`section${name}`)]);
  const systemd = execFileSync('bash', ['scripts/systemd-measure.sh'], { encoding: 'utf8' }).trim();
  const measureEnv = { LD_LIBRARY_PATH: `${systemd}/usr/lib/x86_64-linux-gnu/systemd` };
  const measureArgs = [
    'calculate',
    '--bank=sha256',
    '--phase=:',
    ...['linux', 'osrel', 'cmdline', 'initrd', 'uname', 'sbat'].map((s) => `--${s}=${f(`section.${s}`)}`),
  ];
  const ours = run('bin/seal', ['pcr', 'predict', '--uki', f('seal.efi'), '--pcrs', '11'])
    .toString()
    .trim()
    .split('=')[1];
  const theirs = run(`${systemd}/lib/systemd/systemd-measure`, measureArgs, measureEnv)
    .toString()
    .trim()
    .split('=')[1];
  if (ours !== theirs) throw new Error(`PCR 11 differs: seal ${ours}, systemd-measure ${theirs}`);
  const predict = await race(5, {
    seal: () => run('bin/seal', ['pcr', 'predict', '--uki', f('seal.efi'), '--pcrs', '11']),
    library: () => predictPcrs({ uki: f('seal.efi'), pcrs: [11] }),
    systemdMeasure: () => run(`${systemd}/lib/systemd/systemd-measure`, measureArgs, measureEnv),
  });
  const speed = execFileSync('openssl', ['speed', '-seconds', '2', '-bytes', '16384', 'sha256'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const kbps = Number(/sha256\s+([\d.]+)k/.exec(speed)?.[1] ?? Number.NaN);
  const floor = size / (kbps * 1000);
  console.log(
    `PCR 11       seal ${predict.seal.toFixed(3)} s   systemd-measure ${predict.systemdMeasure.toFixed(3)} s   ratio ${(predict.seal / predict.systemdMeasure).toFixed(2)}x`,
  );
  console.log(
    `             in-process (predictPcrs, no process start) ${predict.library.toFixed(3)} s   ratio ${(predict.library / predict.systemdMeasure).toFixed(2)}x`,
  );
  console.log(
    `             SHA-256 of the ${(size / 2 ** 20).toFixed(1)} MiB UKI on one core (openssl speed): ${floor.toFixed(3)} s`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
