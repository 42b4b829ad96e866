/**
 * A throwaway Linux VM for the kernel features this host lacks (device-mapper, fs-verity):
 * bookworm-backports' kernel (scripts/vm-kernel.sh) under qemu with TCG, booting an initramfs
 * built here — static busybox, the needed modules, veritysetup and fsverity with their
 * libraries, the test's files under /data — that runs one shell script and powers off. The
 * script's output and exit status come back over the serial console.
 */
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { treeToCpio } from '../../src/cpio/index.ts';
import { treeFromDirectory } from '../../src/tree/index.ts';

const MODULES = [
  'dm-mod',
  'dm-bufio',
  'reed_solomon',
  'dm-verity',
  'libcrc32c',
  'erofs',
  'overlay',
  'squashfs',
  'loop',
];
const TOOLS = ['/usr/sbin/veritysetup', '/usr/bin/fsverity'];
const MARK = 'SEAL-VM-STATUS';

export function vmKernel(): string {
  const script = fileURLToPath(new URL('../../scripts/vm-kernel.sh', import.meta.url));
  return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
}

/** Copies a dynamically linked program and the libraries `ldd` names into `root`. */
export function addProgram(root: string, program: string): void {
  const copy = (path: string) => {
    const to = join(root, path);
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(realpathSync(path), to);
    chmodSync(to, 0o755);
  };
  copy(program);
  for (const line of execFileSync('ldd', [program], { encoding: 'utf8' }).split('\n')) {
    const lib = /=> (\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)/.exec(line)?.[1];
    if (lib) copy(lib);
  }
}

/**
 * Seal itself for a VM: the pinned Node.js, the sources, the addons and the runtime packages,
 * copied into `dir`, to pass as `directories: { seal: dir }` with `SEAL_IN_VM_PROGRAMS`; the
 * guest runs it as `SEAL_IN_VM`.
 */
export function sealForVm(dir: string): string {
  const repo = fileURLToPath(new URL('../..', import.meta.url));
  mkdirSync(join(dir, 'node_modules'), { recursive: true });
  execFileSync('cp', ['-a', join(repo, 'src'), join(repo, 'build'), join(repo, 'package.json'), dir]);
  execFileSync('cp', [join(repo, 'node_modules/node/bin/node'), join(dir, 'node')]);
  for (const dep of readdirSync(join(repo, 'node_modules'))) {
    if (['node', 'typescript', '@biomejs', '@types', '.bin'].includes(dep) || dep.startsWith('.')) continue;
    execFileSync('cp', ['-a', join(repo, 'node_modules', dep), join(dir, 'node_modules')]);
  }
  return dir;
}

/** What Seal in a VM needs besides busybox: mount(8) for its mounts, Node's libraries. */
export const SEAL_IN_VM_PROGRAMS = [
  '/usr/bin/mount',
  '/usr/bin/umount',
  ...['libstdc++.so.6', 'libdl.so.2', 'libpthread.so.0'].map((l) => `/lib/x86_64-linux-gnu/${l}`),
];

/** The command line that runs Seal in the guest (with sealForVm's tree at /seal). */
export const SEAL_IN_VM =
  'HOME=/tmp SEAL_RUNTIME_DIR=/run/seal /seal/node --disable-warning=ExperimentalWarning /seal/src/cli/main.ts';

export interface VmResult {
  status: number;
  output: string;
}

export interface VmOptions {
  /** Directories copied into the initramfs (VM path → host directory). */
  directories?: Record<string, string>;
  /** Extra programs (with their libraries) in the initramfs. */
  programs?: string[];
  timeoutMs?: number;
  /** Guest memory in MiB (default 3072: TCG guests with less were seen corrupting memory under load). */
  memory?: number;
  /**
   * Boot through UEFI firmware (OVMF's code and a copy of `vars`, its variable store) instead of
   * qemu's direct boot, so the kernel sees EFI variables: its `.platform` keyring then holds the
   * certificates of the store's `db` (what dm-verity root-hash and IPE policy signatures may be
   * checked against). The kernel and initrd are still handed over by qemu.
   */
  uefi?: { code: string; vars: string };
  /** More kernel command-line words. */
  append?: string[];
  /** The control socket of a qemu-mode swtpm (Swtpm.start mode 'qemu'): the guest gets it as a TIS TPM. */
  tpm?: string;
}

/** Boots the VM, runs `script` (sh) with `files` (VM path under /data → host path), returns its output. */
export async function runInVm(
  script: string,
  files: Record<string, string> = {},
  options: VmOptions = {},
): Promise<VmResult> {
  const kernel = vmKernel();
  const root = mkdtempSync(join(tmpdir(), 'seal-vm-'));
  try {
    for (const d of [
      'bin',
      'sbin',
      'proc',
      'sys',
      'dev',
      'run/cryptsetup',
      'tmp',
      'mnt',
      'data',
      'modules',
    ]) {
      mkdirSync(join(root, d), { recursive: true });
    }
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    symlinkSync('busybox', join(root, 'bin/sh'));
    for (const m of MODULES)
      copyFileSync(join(kernel, 'modules', `${m}.ko`), join(root, 'modules', `${m}.ko`));
    for (const tool of [...TOOLS, ...(options.programs ?? [])]) addProgram(root, tool);
    for (const [to, from] of Object.entries(files)) {
      mkdirSync(dirname(join(root, 'data', to)), { recursive: true });
      copyFileSync(from, join(root, 'data', to));
    }
    for (const [to, from] of Object.entries(options.directories ?? {})) {
      mkdirSync(dirname(join(root, to)), { recursive: true });
      execFileSync('cp', ['-a', from, join(root, to)]);
    }
    writeFileSync(join(root, 'test.sh'), script);
    writeFileSync(
      join(root, 'init'),
      `#!/bin/sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in ${MODULES.join(' ')}; do insmod /modules/$m.ko || echo "insmod $m failed"; done
export DM_DISABLE_UDEV=1 PATH=/usr/sbin:/usr/bin:/sbin:/bin
cd /data
sh -e /test.sh
echo "${MARK} $?"
poweroff -f
`,
      { mode: 0o755 },
    );
    const initrd = join(root, '..', `${basename(root)}.cpio`);
    writeFileSync(initrd, await treeToCpio(await treeFromDirectory(root, { xattrs: false })));
    try {
      // TCG guests on this host see their memory corrupted now and then while both host cores are
      // busy (measured: about one boot in three with three guests at once, none in ten booted one
      // at a time), crashing in places unrelated to the test. scripts/test.sh therefore runs the VM
      // tests alone, and `oops=panic` turns such a crash into a quick exit. A guest whose kernel
      // crashed, or whose script died of SIGILL, SIGBUS or SIGSEGV (seen once in a CI run, never
      // reproduced), is booted again, each time from the same initrd; a crash that is the test's
      // own still fails, as every boot repeats it.
      for (let attempt = 1; ; attempt++) {
        let result: VmResult;
        try {
          result = await boot(join(kernel, 'vmlinuz'), initrd, options, root);
        } catch (error) {
          const crashed = /Kernel panic|Oops|general protection fault|BUG: |invalid opcode/.test(
            String(error),
          );
          if (!crashed || attempt === 4) throw error;
          console.error(`the VM crashed; booting it again (attempt ${attempt + 1})`);
          continue;
        }
        if (![128 + 4, 128 + 7, 128 + 11].includes(result.status) || attempt === 4) return result;
        console.error(
          `the VM's script died of signal ${result.status - 128}; booting it again (attempt ${attempt + 1})`,
        );
      }
    } finally {
      rmSync(initrd, { force: true });
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function boot(kernel: string, initrd: string, options: VmOptions, work: string): Promise<VmResult> {
  const memory = options.memory ?? 3072;
  const timeoutMs = options.timeoutMs ?? 240_000;
  const firmware: string[] = [];
  if (options.uefi) {
    // A fresh copy of the variable store for every boot: the firmware writes to it.
    const vars = join(work, 'OVMF_VARS.fd');
    copyFileSync(options.uefi.vars, vars);
    firmware.push(
      ...['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${options.uefi.code}`],
      ...['-drive', `if=pflash,format=raw,unit=1,file=${vars}`],
    );
  }
  const append = [
    'console=ttyS0 quiet loglevel=3 oops=panic panic=-1 rdinit=/init',
    ...(options.append ?? []),
  ];
  return new Promise((resolve, reject) => {
    const qemu = spawn(
      'qemu-system-x86_64',
      [
        ...['-accel', 'tcg', '-m', String(memory), '-smp', '1', '-nographic', '-no-reboot', '-nic', 'none'],
        ...firmware,
        ...['-kernel', kernel, '-initrd', initrd],
        ...['-append', append.join(' ')],
        ...(options.tpm
          ? [
              '-chardev',
              `socket,id=chrtpm,path=${options.tpm}`,
              '-tpmdev',
              'emulator,id=tpm0,chardev=chrtpm',
              '-device',
              'tpm-tis,tpmdev=tpm0',
            ]
          : []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    qemu.stdout.on('data', (d: Buffer) => {
      output += d.toString('latin1');
    });
    qemu.stderr.on('data', (d: Buffer) => {
      output += d.toString('latin1');
    });
    const timer = setTimeout(() => qemu.kill('SIGKILL'), timeoutMs);
    qemu.on('error', reject);
    qemu.on('close', () => {
      clearTimeout(timer);
      const m = new RegExp(`${MARK} (\\d+)`).exec(output);
      if (!m) reject(new Error(`the VM did not finish its script:\n${output.slice(-3000)}`));
      // The firmware's console clears the screen: its escape sequences are not the script's output.
      else
        resolve({
          status: Number(m[1]),
          output: output
            .slice(0, m.index)
            .replace(/\r/g, '')
            .replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, ''),
        });
    });
  });
}
