/**
 * The boot of a Seal device, step by step, each logged on the console and in /run/seal/boot.json:
 *
 *   API filesystems → command line → kernel modules → the disk → TPM unlock (signed policy),
 *   PCR 7 locked at once → LUKS2 config and data partitions (made on the first boot) → the store
 *   → the system manifest verified (CA from the initrd, product from the device certificate,
 *   anti-rollback against the TPM) → every target's layers through dm-verity → the host target
 *   as the new root (the agent's runtime kept at /seal) → the services under crun.
 *
 * Any failure names its step and reason on the console and ends the boot as the command line
 * says (poweroff by default); nothing is written that would make a later boot accept what this
 * one refused: the state file and the TPM's accepted version move only after a system verified.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SystemManifest, SystemTarget } from '../manifest/spec.ts';
import { verifySystem } from '../manifest/verify.ts';
import { deviceIdOf, parseCertificates, x509 } from '../pki/index.ts';
import { LayoutStore } from '../store/index.ts';
import {
  lockPcr7,
  parsePolicy,
  raiseAcceptedVersion,
  readAcceptedVersion,
  Tpm,
  unlock,
} from '../tpm/index.ts';
import { type AgentParameters, parseCommandLine } from './cmdline.ts';
import { type DeviceDisk, findDeviceDisk } from './disk.ts';
import { AgentError } from './errors.ts';
import { closeLayers, mountOverlay, type OpenedLayers, openLayers } from './images.ts';
import { BootLog } from './log.ts';
import { formatLuks, isLuks, openLuks } from './luks.ts';
import { type ServiceHandle, superviseService } from './services.ts';
import { MS, system } from './system.ts';
import { runProgram, SEAL_ROOT } from './tools.ts';

const RUN = '/run/seal';
const TPM_DEVICE = '/dev/tpmrm0';

/** The API filesystems every later step needs. */
function mountApiFilesystems(): void {
  const sys = system();
  const mounts: [source: string, target: string, type: string, flags: number, data: string | null][] = [
    ['proc', '/proc', 'proc', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['sysfs', '/sys', 'sysfs', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['devtmpfs', '/dev', 'devtmpfs', MS.NOSUID, 'mode=0755'],
    ['tmpfs', '/run', 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=0755'],
    ['securityfs', '/sys/kernel/security', 'securityfs', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['cgroup2', '/sys/fs/cgroup', 'cgroup2', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['devpts', '/dev/pts', 'devpts', MS.NOSUID | MS.NOEXEC, 'gid=5,mode=620,ptmxmode=0666'],
    ['tmpfs', '/dev/shm', 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=1777'],
  ];
  for (const [source, target, type, flags, data] of mounts) {
    mkdirSync(target, { recursive: true });
    sys.mount(source, target, type, flags, data);
  }
  mkdirSync('/run/cryptsetup', { recursive: true });
  // The services share the host's network namespace: its loopback must be up.
  sys.interfaceUp('lo');
}

/** Loads the kernel modules listed in /seal/etc/modules, in order (dependencies first). */
function loadModules(): number {
  const list = readFileSync(`${SEAL_ROOT}/etc/modules`, 'utf8').split('\n').filter(Boolean);
  for (const path of list) system().loadModule(path, '');
  return list.length;
}

interface Secrets {
  luksPassphrase: Buffer;
  /** The authorization of the TPM's accepted-version counter (raised once a system is accepted). */
  versionAuth: Buffer;
  product: string;
  serial: string;
  /** The highest system version this device accepted, as its TPM keeps it. */
  accepted: number;
}

/** Unlocks the TPM with the signed policy of the initrd and locks PCR 7 at once. */
async function unlockTpm(tpm: Tpm): Promise<Secrets> {
  const policy = parsePolicy(
    readFileSync(`${SEAL_ROOT}/etc/policy.json`),
    'the signed TPM policy of the initrd',
  );
  try {
    const unlocked = await unlock(tpm, { policy, lockPcr7: true });
    const { luksPassphrase, deviceCert, versionAuth } = unlocked.secrets;
    if (!luksPassphrase || !deviceCert || !versionAuth) {
      const missing = !luksPassphrase
        ? 'LUKS passphrase'
        : !deviceCert
          ? 'device certificate'
          : 'accepted-version authorization (provisioned by an older Seal: provision it again from the management image)';
      throw new AgentError('AGENT_BOOT', `the TPM released no ${missing}`);
    }
    const id = deviceIdOf(new x509.X509Certificate(deviceCert));
    if (!id)
      throw new AgentError('AGENT_BOOT', 'the device certificate in the TPM names no product and serial');
    const secrets: Secrets = {
      luksPassphrase: Buffer.from(luksPassphrase),
      versionAuth: Buffer.from(versionAuth),
      product: id.product,
      serial: id.serial,
      accepted: await readAcceptedVersion(tpm),
    };
    unlocked.wipe();
    return secrets;
  } catch (error) {
    // Whatever happened, nothing more may be read in this boot.
    await lockPcr7(tpm).catch(() => {});
    throw error;
  }
}

/** Opens (on the first boot: formats) a LUKS2 partition and mounts its ext4 filesystem. */
async function openEncrypted(
  device: string,
  name: string,
  passphrase: Buffer,
  at: string,
): Promise<'opened' | 'created'> {
  let created = false;
  if (!(await isLuks(device))) {
    await formatLuks(device, name, passphrase);
    created = true;
  }
  const mapped = await openLuks(device, name, passphrase);
  if (created) await runProgram('mke2fs', ['-q', '-t', 'ext4', '-L', name, mapped]);
  mkdirSync(at, { recursive: true });
  system().mount(mapped, at, 'ext4', MS.NOSUID | MS.NODEV, null);
  return created ? 'created' : 'opened';
}

/** Switches the root to `root`, keeping /seal (the agent's runtime) and the API filesystems. */
function switchRoot(root: string): void {
  const sys = system();
  mkdirSync(join(root, 'seal'), { recursive: true });
  sys.mount(SEAL_ROOT, join(root, 'seal'), null, MS.BIND | MS.REC, null);
  for (const api of ['/dev', '/proc', '/sys', '/run']) {
    mkdirSync(join(root, api), { recursive: true });
    sys.mount(api, join(root, api), null, MS.MOVE, null);
  }
  process.chdir(root);
  sys.mount(root, '/', null, MS.MOVE, null);
  sys.chroot('.');
}

/** The NAME=value lines of an os-release file, for the log. */
function osRelease(root: string): string {
  try {
    const text = readFileSync(join(root, 'etc/os-release'), 'utf8');
    return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(text)?.[1] ?? 'no PRETTY_NAME';
  } catch (error) {
    // A read error here is dm-verity refusing a block of the host image.
    throw new AgentError('AGENT_BOOT', `the host target cannot be read: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** Ends the boot the way the command line says; never returns. */
function end(params: AgentParameters | undefined, log: BootLog): never {
  log.say(`the boot ends: ${params?.onFailure ?? 'poweroff'}`);
  return system().reboot(params?.onFailure ?? 'poweroff');
}

/** Waits until every service has reached running (or one failed), at most `ms`. */
async function servicesUp(services: ServiceHandle[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const states = await Promise.all(
      services.map(async (s) => {
        const { stdout } = await runProgram('crun', ['state', s.name]).catch(() => ({ stdout: '' }));
        return /"status":\s*"running"/.test(stdout) ? 'running' : s.state;
      }),
    );
    if (states.every((s) => s === 'running')) return;
    const failed = services.filter((_, i) => states[i] === 'failed');
    if (failed.length > 0 || Date.now() > deadline) {
      throw new AgentError(
        'AGENT_SERVICE',
        `services not running: ${services
          .filter((_, i) => states[i] !== 'running')
          .map((s) => s.name)
          .join(', ')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function boot(): Promise<void> {
  const log = new BootLog(`${RUN}/boot.json`);
  let params: AgentParameters | undefined;
  const services: ServiceHandle[] = [];
  try {
    log.say(`agent started, Node.js ${process.versions.node}, PID ${process.pid}`);
    await log.step('mount the API filesystems', mountApiFilesystems);
    log.record.nodeStartedAt = Number(
      ((Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) || 0) - process.uptime()).toFixed(2),
    );
    log.say(
      `Node.js started ${log.record.nodeStartedAt} s after the kernel; the agent loaded in ${log.record.agentLoadedMs} ms`,
    );
    params = await log.step('read the kernel command line', () =>
      parseCommandLine(readFileSync('/proc/cmdline', 'utf8')),
    );
    const tag = params.tag;
    await log.step('load kernel modules', loadModules, (n) => `${n} modules`);
    const net = params.net;
    if (net) {
      await log.step(
        'configure the network',
        () => {
          system().configureInterface(net.device, net.address, net.netmask);
          if (net.gateway) system().addDefaultRoute(net.gateway);
        },
        () => `${net.device} ${net.address}/${net.netmask}${net.gateway ? ` via ${net.gateway}` : ''}`,
      );
    }
    const disk: DeviceDisk = await log.step(
      'find the disk',
      () => findDeviceDisk(),
      (d) => d.device,
    );
    const tpm = await Tpm.open(TPM_DEVICE);
    const secrets = await log.step(
      'unlock the TPM and lock PCR 7',
      () => unlockTpm(tpm),
      (s) => `product ${s.product}, serial ${s.serial}, accepted version ${s.accepted}`,
    );
    await log.step(
      'open the config partition',
      () =>
        openEncrypted(disk.partitions.config.device, 'seal-config', secrets.luksPassphrase, `${RUN}/config`),
      (how) => how,
    );
    await log.step(
      'open the data partition',
      () => openEncrypted(disk.partitions.data.device, 'seal-data', secrets.luksPassphrase, `${RUN}/data`),
      (how) => how,
    );
    secrets.luksPassphrase.fill(0);
    await log.step('mount the store', () => {
      mkdirSync(`${RUN}/store`, { recursive: true });
      system().mount(
        disk.partitions.store.device,
        `${RUN}/store`,
        'ext4',
        MS.RDONLY | MS.NOSUID | MS.NODEV,
        null,
      );
    });
    const store = await LayoutStore.open(`${RUN}/store`);
    const ca = parseCertificates(
      readFileSync(`${SEAL_ROOT}/etc/manifest-ca.pem`, 'utf8'),
      'the manifest CA of the initrd',
    )[0]!;
    const report = await log.step(
      'verify the system manifest',
      () =>
        verifySystem(`oci:${RUN}/store:${tag}`, {
          ca,
          product: secrets.product,
          minimumVersion: secrets.accepted,
          state: `${RUN}/config/accepted.json`,
        }),
      (r) => `version ${r.document.version}, ${r.document.targets.length} targets, ${r.manifest.digest}`,
    );
    await log.step(
      'record the accepted version in the TPM',
      () => raiseAcceptedVersion(tpm, secrets.versionAuth, report.document.version),
      (r) => (r.from === r.to ? `${r.to}, as before` : `${r.from} -> ${r.to}`),
    );
    const system_ = report.document as SystemManifest;
    const targets = system_.targets as SystemTarget[];
    const host = targets.find((t) => t.role === 'host');
    if (!host) throw new AgentError('AGENT_BOOT', 'the system manifest has no host target');
    const hostLayers: OpenedLayers = await log.step(
      `open the host target ${host.name}`,
      () => openLayers(store, host.image, `seal-${host.name}`, `${RUN}/targets/${host.name}`),
      (o) => `${o.lowers.length} layers through dm-verity`,
    );
    await log.step(
      'mount the host root',
      () => {
        mountOverlay(hostLayers.lowers, '/sysroot', `${RUN}/targets/${host.name}/rw`);
        return osRelease('/sysroot');
      },
      (name) => name,
    );
    const opened = new Map<string, OpenedLayers>();
    for (const t of targets.filter((t) => t.role === 'service')) {
      opened.set(
        t.name,
        await log.step(
          `open the service image ${t.name}`,
          () => openLayers(store, t.image, `seal-${t.name}`, `${RUN}/targets/${t.name}`),
          (o) => `${o.lowers.length} layers through dm-verity`,
        ),
      );
    }
    if (params.test === 'before-switch')
      throw new AgentError('AGENT_BOOT', 'stopped before the switch (seal.test)');
    await log.step('switch into the host root', () => switchRoot('/sysroot'));
    await log.step(
      'start the services',
      async () => {
        for (const t of targets.filter((t) => t.role === 'service')) {
          const layers = opened.get(t.name)!;
          mkdirSync(`${RUN}/data/journal`, { recursive: true });
          services.push(
            superviseService({
              name: t.name,
              lowers: layers.lowers,
              config: layers.config,
              spec: t.service ?? {},
              dir: `${RUN}/services/${t.name}`,
              volumes: `${RUN}/data/volumes`,
              journal: `${RUN}/data/journal/${t.name}.log`,
              log: (line) => log.say(line),
            }),
          );
        }
        await servicesUp(services, 60_000);
      },
      () => `${services.length} running`,
    );
    log.record.result = 'running';
    log.save();
    const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) || 0;
    log.say(
      `boot complete: ${system_.product} version ${system_.version} is running (${uptime.toFixed(1)} s since the kernel started)`,
    );
    const stop = async (signal: string) => {
      log.say(`${signal}: stopping the services`);
      for (const s of services) await s.stop();
      for (const layers of opened.values()) await closeLayers(layers);
      end({ ...(params as AgentParameters), onFailure: 'poweroff' }, log);
    };
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGINT', () => void stop('SIGINT'));
  } catch (error) {
    log.record.result = 'refused';
    log.save();
    if (params?.debug && error instanceof Error) log.say(error.stack ?? String(error));
    for (const s of services) await s.stop().catch(() => {});
    end(params, log);
  }
}
