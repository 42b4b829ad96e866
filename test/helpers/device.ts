/**
 * A small Seal system built as a product team would build it, for the device tests: a PKI, a
 * host image and two services made from busybox, sealed, pinned in a signed system manifest,
 * a TPM provisioned as the factory does, an initrd, and a disk installed from all of it.
 *
 * The services: `counter` counts boots in a volume on the data partition, checks that its root
 * is fresh (a marker file it leaves must be gone at the next start) and publishes a page there;
 * `web` (busybox httpd) serves that page; counter fetches it through the shared loopback and
 * prints it, so one console line proves both run and the data survived.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTable, SECTOR } from '../../src/gpt/index.ts';
import { Machine, Swtpm } from '../../src/machine/index.ts';
import { runSeal } from './cli.ts';
import { BOOT_MANAGER_254, opensslCertificate } from './efi.ts';
import { opensslKeyPair } from './keys.ts';
import { CRASH } from './uki-vm.ts';
import { vmKernel } from './vm.ts';

export const PRODUCT = '5e4c1f0a-6d2b-4c8e-9f3a-7b1d2e3c4f50';

function seal(args: string[]): string {
  const r = runSeal(args);
  if (r.status !== 0) throw new Error(`seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** A busybox root filesystem with `files` (path → contents). */
function busyboxRoot(dir: string, files: Record<string, string>): void {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(dir, 'bin/busybox'));
  for (const applet of [
    'sh',
    'cat',
    'echo',
    'sleep',
    'wget',
    'touch',
    'test',
    'ls',
    'httpd',
    'mkdir',
    'sync',
  ]) {
    symlinkSync('busybox', join(dir, 'bin', applet));
  }
  for (const d of ['etc', 'tmp', 'proc', 'sys', 'dev', 'srv', 'data'])
    mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\nwww:x:33:33:www:/srv:/bin/sh\n');
  writeFileSync(join(dir, 'etc/group'), 'root:x:0:\nwww:x:33:\n');
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
}

export const COUNTER = [
  'n=$(cat /data/boots 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/boots',
  'if [ -e /marker ]; then echo "rootfs: dirty"; else echo "rootfs: fresh"; fi; touch /marker',
  'echo "<p>boot $n</p>" > /data/index.html; sync',
  'for i in 1 2 3 4 5 6 7 8 9 10; do page=$(wget -q -O - http://127.0.0.1:8080/index.html) && break; sleep 1; done',
  'echo "pcr7: $(cat /sys/class/tpm/tpm0/pcr-sha256/7)"',
  'echo "counter: boot $n, web says: $page"',
  'exec sleep 1000000',
].join('; ');

export interface DeviceFixture {
  work: string;
  pki: string;
  /** The manifest CA certificate (PEM) the initrd carries. */
  ca: string;
  productKey: string;
  productCert: string;
  policyKey: string;
  policyPub: string;
  deviceCert: string;
  deviceKey: string;
  layout: string;
}

/** A sealed busybox image `NAME-sealed` in the fixture's layout, with `files` added (path → contents). */
export function sealedImage(
  f: { work: string; layout: string },
  name: string,
  files: Record<string, string> = {},
): string {
  const dir = join(f.work, 'roots', name);
  busyboxRoot(dir, files);
  seal(['image', 'import', `dir:${dir}`, `oci:${f.layout}:${name}`]);
  seal([
    'image',
    'seal',
    `oci:${f.layout}:${name}`,
    `oci:${f.layout}:${name}-sealed`,
    '--format',
    'squashfs',
  ]);
  return `${name}-sealed`;
}

/** The PKI, the keys and the sealed images (built once per test file). */
export function buildFixture(work: string): DeviceFixture {
  const pki = join(work, 'pki');
  seal(['pki', 'init', pki]);
  seal(['pki', 'product', 'new', pki, '--name', 'seal-test', '--id', PRODUCT]);
  seal(['pki', 'device', 'new', pki, '--product', PRODUCT, '--serial', 'SN0001']);
  const { key: policyKey, pub: policyPub } = opensslKeyPair(join(work, 'policy.key'));
  const f: DeviceFixture = {
    work,
    pki,
    ca: join(pki, 'manifest-ca.pem'),
    productKey: join(pki, `products/${PRODUCT}.key`),
    productCert: join(pki, `products/${PRODUCT}.pem`),
    policyKey,
    policyPub,
    deviceCert: join(pki, 'devices/SN0001.pem'),
    deviceKey: join(pki, 'devices/SN0001.key'),
    layout: join(work, 'images'),
  };
  sealedImage(f, 'host', { 'etc/os-release': 'PRETTY_NAME="Seal test host"\nID=seal-test\n' });
  // Each image its own (the same files in the same second would make one image twice).
  sealedImage(f, 'web', { 'etc/image': 'web\n' });
  sealedImage(f, 'counter', { 'etc/image': 'counter\n' });
  return f;
}

export interface SystemOptions {
  /** Signing key and certificate (default the product's). */
  key?: string;
  cert?: string;
  /** Tag in the layout (default `system-VERSION`). */
  tag?: string;
  /** Images (tags in the fixture's layout) and service entries replacing the fixture's. */
  host?: string;
  web?: { image?: string; command?: string[] };
  counter?: { image?: string; command?: string[]; restart?: 'always' | 'on-failure' | 'no' };
  /** Extra top-level YAML lines (security_version, downgrade). */
  extra?: string[];
  /** A boot image (a tag in the fixture's layout, made by `seal uki image`): the system's UKI. */
  boot?: string;
}

/** A signed system manifest of the fixture's images, version `version`, at `oci:LAYOUT:TAG`. */
export function buildSystem(f: DeviceFixture, version: number, options: SystemOptions = {}): string {
  const yaml = join(f.work, `system-${version}-${options.tag ?? 'default'}.yaml`);
  writeFileSync(
    yaml,
    [
      `product: ${PRODUCT}`,
      `version: ${version}`,
      ...(options.extra ?? []),
      'targets:',
      `  - { name: host, role: host, image: "oci:${f.layout}:${options.host ?? 'host-sealed'}" }`,
      ...(options.boot ? [`  - { name: boot, role: boot, image: "oci:${f.layout}:${options.boot}" }`] : []),
      '  - name: web',
      '    role: service',
      `    image: "oci:${f.layout}:${options.web?.image ?? 'web-sealed'}"`,
      '    service:',
      `      command: ${JSON.stringify(options.web?.command ?? ['/bin/httpd', '-f', '-p', '8080', '-h', '/srv'])}`,
      '      mounts: [{ source: state, target: /srv, readonly: true }]',
      '  - name: counter',
      '    role: service',
      `    image: "oci:${f.layout}:${options.counter?.image ?? 'counter-sealed'}"`,
      '    service:',
      `      command: ${JSON.stringify(options.counter?.command ?? ['/bin/sh', '-c', COUNTER])}`,
      ...(options.counter?.restart ? [`      restart: ${options.counter.restart}`] : []),
      '      mounts: [{ source: state, target: /data }]',
      'storage: [{ name: state, size: 16M }]',
      '',
    ].join('\n'),
  );
  const ref = `oci:${f.layout}:${options.tag ?? `system-${version}`}`;
  seal(['manifest', 'build', yaml, ref]);
  seal([
    'manifest',
    'sign',
    ref,
    '--key',
    options.key ?? f.productKey,
    '--cert',
    options.cert ?? f.productCert,
  ]);
  return ref;
}

/**
 * The disk of a device: `seal install` of `system` with `uki` (none: the system's boot target),
 * verified with the CA first unless `verify` is false; with `bootManager`, systemd-boot starts it.
 */
export function installDisk(
  f: DeviceFixture,
  system: string,
  disk: string,
  uki: string | undefined,
  options: { verify?: boolean; bootManager?: string } = {},
): void {
  seal([
    'install',
    '--disk',
    disk,
    '--manifest',
    system,
    ...(uki ? ['--uki', uki] : []),
    ...(options.verify === false ? [] : ['--ca', f.ca]),
    ...(options.bootManager ? ['--boot-manager', options.bootManager] : []),
    '--size',
    '2G',
  ]);
}

/** A device's disk, its varstore (written by the firmware) and its TPM's state directory. */
export interface DeviceFiles {
  disk: string;
  vars: string;
  tpm: string;
}

/** A new device: `seal install` of `system` and `uki` onto its disk, the kit's varstore, its TPM provisioned. */
export async function newDevice(
  f: DeviceFixture,
  kit: BootKit,
  system: string,
  uki: string,
  device: DeviceFiles,
  options: { verify?: boolean } = {},
): Promise<DeviceFiles> {
  installDisk(f, system, device.disk, uki, options);
  copyFileSync(kit.vars, device.vars);
  mkdirSync(device.tpm);
  await provisionTpm(f, device.tpm);
  return device;
}

/**
 * The factory step on a device's TPM (a swtpm state directory): provisioned under the product's
 * policy-signing key with the identity of device `serial` (made in the PKI when it is not SN0001).
 */
export async function provisionTpm(f: DeviceFixture, stateDir: string, serial = 'SN0001'): Promise<void> {
  if (serial !== 'SN0001') seal(['pki', 'device', 'new', f.pki, '--product', PRODUCT, '--serial', serial]);
  const tpm = await Swtpm.start({ stateDir, mode: 'tcp' });
  try {
    seal([
      'tpm',
      'provision',
      '--tpm',
      tpm.address,
      '--product-policy-key',
      f.policyPub,
      '--device-cert',
      join(f.pki, 'devices', `${serial}.pem`),
      '--device-key',
      join(f.pki, 'devices', `${serial}.key`),
    ]);
  } finally {
    await tpm.stop();
  }
}

/** The product's Secure Boot keys and kernel signer, and a varstore enrolled with them. */
export interface BootKit {
  keys: string;
  /** The kernel-signing key and certificate (their CA is in db). */
  kernelKey: string;
  kernelCert: string;
  kernelCa: string;
  /** Debian's OVMF varstore with PK, KEK and db enrolled (copy it per machine: the firmware writes to it). */
  vars: string;
  /** The kernel and its package (modules for the initrd). */
  vmlinuz: string;
  kernelPackage: string;
  /** systemd-boot 254, signed by the kernel signer. */
  bootManager: string;
  /** The management image's signer: a db entry of its own, so its boots have a PCR 7 of their own. */
  management: { key: string; cert: string };
}

/** The product's boot kit for the test VMs' kernel (`vmlinuz`, and its package for the initrd's modules). */
export function buildBootKit(
  f: DeviceFixture,
  vmlinuz = join(vmKernel(), 'vmlinuz'),
  kernelPackage = execFileSync('bash', ['scripts/kernel-package.sh'], { encoding: 'utf8' }).trim(),
): BootKit {
  const keys = join(f.work, 'secureboot');
  seal(['secureboot', 'keys', keys]);
  seal(['pki', 'kernel', 'new', f.pki]);
  const management = opensslCertificate(f.work, 'management', 'rsa-2048', '/CN=Seal test management image');
  const vars = join(f.work, 'OVMF_VARS_seal.fd');
  seal([
    'secureboot',
    'enroll',
    '/usr/share/OVMF/OVMF_VARS_4M.fd',
    vars,
    '--pk',
    join(keys, 'PK.crt'),
    '--kek',
    join(keys, 'KEK.crt'),
    '--db',
    join(f.pki, 'kernel-ca.pem'),
    '--db',
    management.cert,
  ]);
  const bootManager = join(f.work, 'systemd-boot.efi');
  seal([
    'uki',
    'sign',
    BOOT_MANAGER_254,
    bootManager,
    '--key',
    join(f.pki, 'kernel/uki.key'),
    '--cert',
    join(f.pki, 'kernel/uki.pem'),
  ]);
  return {
    bootManager,
    management,
    keys,
    kernelKey: join(f.pki, 'kernel/uki.key'),
    kernelCert: join(f.pki, 'kernel/uki.pem'),
    kernelCa: join(f.pki, 'kernel-ca.pem'),
    vars,
    vmlinuz,
    kernelPackage,
  };
}

/** PCR 7 of a boot of `uki` with the kit's varstore, as `seal pcr predict` says. */
export function predictPcr7(kit: BootKit, uki: string): string {
  const out = JSON.parse(seal(['pcr', 'predict', '--uki', uki, '--vars', kit.vars, '--pcrs', '7', '--json']));
  const value = out.values?.sha256?.['7'];
  if (typeof value !== 'string') throw new Error(`no PCR 7 in ${JSON.stringify(out)}`);
  return value;
}

/**
 * The signed boot image: an initrd carrying `ca` and a TPM policy for PCR 7 of this kit's
 * signer and policy version `version`, in a UKI signed by the kernel signer (or by `signer`).
 */
export function buildUki(
  f: DeviceFixture,
  kit: BootKit,
  out: string,
  options: {
    ca?: string;
    version?: number;
    cmdline?: string;
    signer?: { key: string; cert: string };
    /** The initrd of an earlier buildUki (same CA and policy): only the UKI is made. */
    initrd?: string;
    /** A management image: signed by the kit's management signer, its initrd with a management policy. */
    management?: boolean;
    /** The initrd carries the kit's signed systemd-boot (for an installer). */
    bootManager?: boolean;
    /** zstd level of the initrd (default 3: quick to build; `seal initrd build` defaults to 12). */
    level?: number;
    /** Further `seal initrd build` options (--kernel-signer, --ipe-policy). */
    initrdArgs?: string[];
  } = {},
): string {
  const base = out.replace(/\.efi$/, '');
  const osRelease = join(f.work, 'uki-os-release');
  writeFileSync(osRelease, 'ID=seal-test\nPRETTY_NAME="Seal test device"\n');
  const signer =
    options.signer ?? (options.management ? kit.management : { key: kit.kernelKey, cert: kit.kernelCert });
  const initrd =
    options.initrd ??
    buildInitrd(f, kit, base, {
      ...options,
      // A foreign signer's UKI is refused by the firmware before any policy matters.
      probeSigner: options.management ? kit.management : { key: kit.kernelKey, cert: kit.kernelCert },
    });
  seal([
    'uki',
    'build',
    '--linux',
    kit.vmlinuz,
    '--initrd',
    initrd,
    '--os-release',
    osRelease,
    '--cmdline',
    options.cmdline ?? 'console=ttyS0 quiet loglevel=3 panic=-1',
    ...(options.management ? ['--management'] : []),
    '--key',
    signer.key,
    '--cert',
    signer.cert,
    out,
  ]);
  return out;
}

/** The initrd of a device: `ca` and a TPM policy for PCR 7 of the kit's signer and policy version `version`. */
function buildInitrd(
  f: DeviceFixture,
  kit: BootKit,
  base: string,
  options: {
    ca?: string;
    version?: number;
    management?: boolean;
    bootManager?: boolean;
    level?: number;
    initrdArgs?: string[];
    probeSigner: { key: string; cert: string };
  },
): string {
  // PCR 7 depends on the signer's db entry, not on the image: a first, policy-less UKI tells it.
  const probe = `${base}.probe.efi`;
  writeFileSync(`${base}.empty`, '');
  seal([
    'uki',
    'build',
    '--linux',
    kit.vmlinuz,
    '--initrd',
    `${base}.empty`,
    '--key',
    options.probeSigner.key,
    '--cert',
    options.probeSigner.cert,
    probe,
  ]);
  const pcr7 = predictPcr7(kit, probe);
  seal([
    'tpm',
    'policy',
    'sign',
    '--key',
    f.policyKey,
    '--pcr7',
    pcr7,
    '--version',
    String(options.version ?? 1),
    ...(options.management ? ['--management'] : []),
    `${base}.policy.json`,
  ]);
  seal([
    'initrd',
    'build',
    options.ca ?? f.ca,
    `${base}.initrd`,
    '--kernel',
    kit.kernelPackage,
    '--policy',
    `${base}.policy.json`,
    ...(options.bootManager ? ['--boot-manager', kit.bootManager] : []),
    ...(options.initrdArgs ?? []),
    '--level',
    String(options.level ?? 3),
  ]);
  return `${base}.initrd`;
}

/** What a device's boot showed on its console. */
export interface DeviceBoot {
  output: string;
  /** The agent reached "boot complete". */
  booted: boolean;
  /** The step that failed and its message, when the agent refused. */
  failed?: { step: string; message: string };
  /** The firmware refused the boot image ("Access Denied"). */
  firmwareRefused: boolean;
  /** The counter service's report, when it got that far. */
  counter?: { boot: number; page: string; rootfs: string; pcr7?: string };
  /** Seconds since the kernel started, at "boot complete". */
  uptime?: number;
}

export const bootRetries = { count: 0 };

/**
 * Boots a device — its disk, its varstore (written by the firmware) and its TPM's state — under
 * OVMF with Secure Boot, until the agent completes (and the counter reported), refuses, or the
 * firmware refuses. The device is a `seal machine` using the three in place (its directory,
 * sockets and console log are temporary). A guest that crashed is booted again (up to 3 times),
 * as the other VM tests do.
 */
export async function bootDevice(
  device: { disk: string; vars: string; tpm: string },
  timeoutMs = 240_000,
): Promise<DeviceBoot> {
  const root = mkdtempSync(join(tmpdir(), 'seal-boot-'));
  try {
    const machine = await Machine.create({
      root,
      name: 'device',
      disk: { path: device.disk, inPlace: true },
      vars: { path: device.vars, inPlace: true },
      tpm: { stateDir: device.tpm, inPlace: true },
      memory: 2048,
    });
    for (let attempt = 1; ; attempt++) {
      const result = await machine.start({
        timeoutMs,
        noReboot: true,
        // Complete once both the agent (boot complete, after it confirmed the system) and the counter said so.
        stopOn:
          /counter: boot \d+.*\n[\s\S]*seal: boot complete.*\n|seal: boot complete.*\n[\s\S]*counter: boot \d+.*\n|seal: the boot ends|Access Denied|No bootable option/,
      });
      const output = result.output;
      const failed = /seal: \[FAIL\] ([^:]+): (.*)\n/.exec(output);
      const counter = /counter: boot (\d+), web says: (.*)\n/.exec(output);
      const boot: DeviceBoot = {
        output,
        booted: /seal: boot complete/.test(output),
        ...(failed ? { failed: { step: failed[1]!, message: failed[2]! } } : {}),
        firmwareRefused: /Access Denied/.test(output),
        ...(counter
          ? {
              counter: {
                boot: Number(counter[1]),
                page: counter[2]!,
                rootfs: /rootfs: (\w+)/.exec(output)?.[1] ?? '',
                pcr7: /pcr7: ([0-9a-fA-F]{64})/.exec(output)?.[1]?.toLowerCase(),
              },
            }
          : {}),
        ...(/since the kernel started/.test(output)
          ? { uptime: Number(/running \(([\d.]+) s since the kernel started/.exec(output)?.[1]) }
          : {}),
      };
      const finished = boot.counter || boot.failed || boot.firmwareRefused;
      if (finished || attempt === 3 || (!CRASH.test(output) && !result.timedOut)) return boot;
      bootRetries.count++;
      console.error(`the device VM crashed or hung; booting it again (attempt ${attempt + 1})`);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** A device running in the foreground of a `seal machine` (reboots included), driven by what its console shows. */
export class DeviceSession {
  #output = '';
  readonly #listeners = new Set<() => void>();
  readonly #abort = new AbortController();
  readonly done: Promise<unknown>;
  #ended = false;

  constructor(machine: Machine, timeoutMs = 1_200_000) {
    this.done = machine
      .start({
        timeoutMs,
        signal: this.#abort.signal,
        onOutput: (text) => {
          this.#output += text;
          for (const l of this.#listeners) l();
        },
      })
      .finally(() => {
        this.#ended = true;
        for (const l of this.#listeners) l();
      });
  }

  get output(): string {
    return this.#output;
  }

  /** The console from `from` on, for a failure: its start (what led there) and its end. */
  #since(from: number): string {
    const text = this.#output.slice(from);
    return text.length <= 6000 ? text : `${text.slice(0, 3000)}\n[…]\n${text.slice(-3000)}`;
  }

  /** Where the console is now: later waits look only at what comes after. */
  mark(): number {
    return this.#output.length;
  }

  /** Resolves with the first match of `re` in the console after `from` (its index counted in `output`); rejects if the machine ends or time runs out. */
  waitFor(re: RegExp, from = 0, timeoutMs = 240_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => finish(new Error(`no ${re} within ${timeoutMs} ms:\n${this.#since(from)}`)),
        timeoutMs,
      );
      const finish = (error?: Error, match?: RegExpExecArray) => {
        clearTimeout(timer);
        this.#listeners.delete(check);
        if (error) reject(error);
        else resolve(match!);
      };
      const check = () => {
        const m = re.exec(this.#output.slice(from));
        if (m) {
          m.index += from; // where it is in `output`, not in the slice
          finish(undefined, m);
        } else if (this.#ended) finish(new Error(`the machine ended before ${re}:\n${this.#since(from)}`));
      };
      this.#listeners.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.done.catch(() => {});
  }
}

/** The byte offset on `disk` of byte `at` of the store file `path` (its ext4 filesystem read with debugfs). */
export function storeOffset(disk: string, path: string, at: number): number {
  const store = readTable(disk).partitions.find((p) => p.name === 'seal-store')!;
  const image = `${disk}?offset=${store.firstLba * SECTOR}`;
  const blockSize = Number(
    /Block size:\s+(\d+)/.exec(
      execFileSync('debugfs', ['-R', 'stats', image], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }),
    )![1],
  );
  const block = Number(
    execFileSync('debugfs', ['-R', `bmap ${path} ${Math.floor(at / blockSize)}`, image], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim(),
  );
  if (!(block > 0)) throw new Error(`${path} has no block ${Math.floor(at / blockSize)} on ${disk}`);
  return store.firstLba * SECTOR + block * blockSize + (at % blockSize);
}

/** One byte of `disk` at `offset`, flipped (a tamper). */
export function flipByte(disk: string, offset: number): void {
  const fd = openSync(disk, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, offset);
    b[0]! ^= 0x40;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

/** `boot` was refused by the agent at `step` for `reason`, and no service started. */
export function assertRefused(boot: DeviceBoot, step: RegExp, reason: RegExp, what: string): void {
  assert.ok(boot.failed, `${what}: not refused by the agent\n${boot.output.slice(-3000)}`);
  assert.match(
    boot.failed.step,
    step,
    `${what}: refused at the wrong step: ${boot.failed.step}: ${boot.failed.message}`,
  );
  assert.match(boot.failed.message, reason, `${what}: ${boot.failed.message}`);
  assert.doesNotMatch(boot.output, /service \w+: started/, `${what}: a service started`);
}
