/**
 * The boot of a Seal device, step by step, each logged on the console and in /run/seal/boot.json:
 *
 *   API filesystems → command line → kernel modules (→ network) → the disk → TPM unlock (signed
 *   policy) (→ attestation to the verifier of `seal.attest`, its secrets on a tmpfs) → PCR 7
 *   locked → LUKS2 config and data partitions (made on the first boot) →
 *   the store → the system chosen (a trial system while it has boots left, else `current`) and
 *   verified (CA from the initrd, product from the device certificate, anti-rollback against the
 *   TPM) → every target's layers through dm-verity → the host target as the new root (the agent's
 *   runtime kept at /seal) → the services under crun → the system confirmed good (the TPM's floor
 *   rises only now) → optionally, a registry tag followed for updates.
 *
 * Any failure names its step and reason on the console and ends the boot as the command line
 * says (poweroff by default) — a failed trial boot reboots instead (so does a counted try of a
 * new UKI that fails before the device's state is read, at attestation say), until its boots run
 * out and the good system comes back by itself. Nothing is written that would make a later boot
 * accept what this one refused.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { type SystemManifest, type SystemTarget, securityVersionOf } from '../manifest/spec.ts';
import type { VerifyReport } from '../manifest/verify.ts';
import { deviceIdOf, x509 } from '../pki/index.ts';
import { syncImage } from '../registry/sync.ts';
import { LayoutStore, openDestination, openSource } from '../store/index.ts';
import { lockPcr7, parsePolicy, readAcceptedVersion, Tpm, unlock } from '../tpm/index.ts';
import { fetchBootSecrets, SECRETS_DIR, writeBootSecrets } from './attest.ts';
import {
  type BootEntries,
  type BootEntry,
  countedTry,
  type LoaderReport,
  loaderReport,
  mountEsp,
} from './boot-entries.ts';
import { type AgentParameters, parseCommandLine } from './cmdline.ts';
import { Device, initrdCa, mountStore, RUN } from './device.ts';
import { type DeviceDisk, findDeviceDisk } from './disk.ts';
import { AgentError } from './errors.ts';
import { mountOverlay, type OpenedLayers } from './images.ts';
import { installOnDevice } from './installer.ts';
import { activateIpePolicy, IPE_POLICY, initrdKernelSigner, trustForFsverity } from './kernel-trust.ts';
import { BootLog, peakMemory } from './log.ts';
import { formatLuks, isLuks, openLuks } from './luks.ts';
import { manage } from './management.ts';
import { watchMedia } from './media.ts';
import { watchPowerButton } from './power.ts';
import { servePush } from './push.ts';
import { loadState, recordEvent, rememberRefused, saveState, type TrialState } from './state.ts';
import { MS, system } from './system.ts';
import { runProgram, SEAL_ROOT } from './tools.ts';
import { follow, UpdateChecker } from './update.ts';

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
  /** The device certificate (DER), kept only while PCR 7 stays open for attestation. */
  deviceCert?: Buffer;
}

/**
 * Unlocks the TPM with the signed policy of the initrd and locks PCR 7 at once — or, with
 * `keepOpen` (attestation follows), leaves that to the caller, keeping the device certificate.
 */
async function unlockTpm(tpm: Tpm, keepOpen = false): Promise<Secrets> {
  const policy = parsePolicy(
    readFileSync(`${SEAL_ROOT}/etc/policy.json`),
    'the signed TPM policy of the initrd',
  );
  if (policy.role !== 'production')
    throw new AgentError(
      'AGENT_BOOT',
      `the initrd carries a ${policy.role} policy, and the command line has no seal.management: a management initrd in a production UKI`,
    );
  try {
    const unlocked = await unlock(tpm, { policy, lockPcr7: !keepOpen });
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
      ...(keepOpen ? { deviceCert: Buffer.from(deviceCert) } : {}),
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

type EspEntries = { entries: BootEntries; loader: LoaderReport };

/** What the boot found so far; `esp` is null once read and found not started by systemd-boot. */
type Found = { disk?: DeviceDisk; esp?: EspEntries | null };

/** The counted try a failed boot came from (countedTry), reading the ESP if the boot had not. */
function failedTry(found: Found): BootEntry | undefined {
  try {
    const esp =
      found.esp !== undefined ? found.esp : found.disk && mountBootEntries(found.disk.partitions.esp.device);
    return esp ? countedTry(esp.entries, esp.loader) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The ESP's boot entries, when systemd-boot started this boot (a UKI that boots alone has none
 * to manage): the ESP mounted read-only (a change remounts it).
 */
function mountBootEntries(device: string): EspEntries | undefined {
  // systemd-boot's variables (which entry it started) are read from efivarfs (a module: loaded by now).
  if (!existsSync('/sys/firmware/efi')) return undefined;
  system().mount(
    'efivarfs',
    '/sys/firmware/efi/efivars',
    'efivarfs',
    MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.RDONLY,
    null,
  );
  const loader = loaderReport();
  return loader ? { entries: mountEsp(device), loader } : undefined;
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
  // The initramfs stays reachable only here, read-only: the kernel trusts its files (IPE's
  // boot_verified), and crun need not copy itself into memory to be safe from its containers.
  sys.mount(null, SEAL_ROOT, null, MS.REMOUNT | MS.BIND | MS.RDONLY, null);
}

/** How a target's image was opened, for the boot log. */
function describeOpened(o: OpenedLayers): string {
  const how = o.composefsDigest
    ? `composefs ${o.composefsDigest}, its files checked by fs-verity`
    : `${o.lowers.length} layers through dm-verity`;
  return o.kernelSigned ? `${how}, signatures checked by the kernel` : how;
}

/** Network boot: tmpfs for the store, the state and the volumes, and the system fetched into the store as `current`. */
async function fetchIntoMemory(source: string, transport: { plainHttp: boolean }): Promise<number> {
  for (const dir of ['store', 'config', 'data']) {
    mkdirSync(`${RUN}/${dir}`, { recursive: true });
    system().mount('tmpfs', `${RUN}/${dir}`, 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=0700');
  }
  const src = await openSource(source, transport);
  try {
    const dst = await openDestination(`oci:${RUN}/store:current`);
    try {
      const result = await syncImage(src, dst, { tag: 'current' });
      await dst.commit();
      return result.blobs.bytes;
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

/** Ends the boot the way the command line says; never returns. */
function end(how: AgentParameters['onFailure'], log: BootLog): never {
  log.say(`the boot ends: ${how}`);
  return system().reboot(how);
}

/**
 * The system to boot: the trial one while it has boots left, else the good one (`current`). A
 * trial with a new UKI is tried while systemd-boot starts that UKI (it counts the boots); when it
 * starts another, the trial is over.
 */
async function chooseSystem(device: Device, requested: string): Promise<{ tag: string; trial?: TrialState }> {
  const state = device.state;
  if (requested !== 'current' || !state.trial) return { tag: requested };
  const trial = state.trial;
  const current = await device.store.resolve('current').catch(() => undefined);
  if (current?.digest === trial.digest) {
    // The trial was confirmed, and the boot ended before the state said so: confirmed again below.
    recordEvent(state, `version ${trial.version} was confirmed as the last boot ended`);
    const booted = device.loader?.booted;
    if (trial.bootEntry && device.bootEntries && booted && booted.id !== trial.bootEntry) {
      // ...but systemd-boot started another UKI: the confirmed one is made the entry, and booted.
      const entry = trial.bootEntry;
      await device.writingEntries((e) => e.keepOnly(entry));
      await saveState(`${RUN}/config/device.json`, state);
      device.log.say(
        `version ${trial.version}'s UKI ${entry} was confirmed as the last boot ended; rebooting into it`,
      );
      end('reboot', device.log);
    }
    return { tag: 'current', trial: { ...trial, tag: 'current' } };
  }
  if (trial.bootEntry) {
    const booted = device.loader?.booted;
    if (booted?.id === trial.bootEntry) {
      const left = booted.triesLeft !== undefined ? `, ${booted.triesLeft} more after this` : '';
      recordEvent(state, `trying version ${trial.version} on its UKI (systemd-boot counts the boots${left})`);
      await saveState(`${RUN}/config/device.json`, state);
      return { tag: trial.tag, trial };
    }
    const entry = device.bootEntries?.find(trial.bootEntry);
    // Only a trial that failed is not tried again; one interrupted (no failure recorded) is
    // fetched again when followed.
    if (entry?.triesLeft === 0)
      await giveUpTrial(
        device,
        `did not come up within ${trial.tries} boot${trial.tries === 1 ? '' : 's'} of its UKI${lastFailureOf(trial)}`,
      );
    else
      await giveUpTrial(
        device,
        !entry
          ? 'was never staged on the ESP (the update was interrupted)'
          : `was not started by the boot manager (${booted ? `it started ${booted.id}` : "no entry of Seal's"})`,
        false,
      );
    return { tag: 'current' };
  }
  if (trial.triesLeft > 0) {
    trial.triesLeft--;
    recordEvent(
      state,
      `trying version ${trial.version} (boot ${trial.tries - trial.triesLeft} of ${trial.tries})`,
    );
    await saveState(`${RUN}/config/device.json`, state);
    return { tag: trial.tag, trial };
  }
  await giveUpTrial(
    device,
    `did not come up within ${trial.tries} boot${trial.tries === 1 ? '' : 's'}${lastFailureOf(trial)}`,
  );
  return { tag: 'current' };
}

const lastFailureOf = (trial: TrialState) =>
  trial.lastFailure
    ? ` (last: ${trial.lastFailure})`
    : ' (no failure was recorded: the power was lost or the boot hung)';

/**
 * Abandons the trial system: the good one stays `current`, and the device state says why. A
 * trial that failed is `remembered`, so a followed tag still naming it does not bring it back.
 */
async function giveUpTrial(device: Device, why: string, remember = true): Promise<void> {
  const trial = device.state.trial;
  if (!trial) return;
  recordEvent(
    device.state,
    `version ${trial.version} ${why}; back to version ${device.state.good?.version ?? 'current'}`,
  );
  device.log.say(
    `fallback: version ${trial.version} ${why}; booting version ${device.state.good?.version ?? 'current'}`,
  );
  device.state.trial = undefined;
  device.state.garbage = true;
  if (remember && trial.lastFailure) rememberRefused(device.state, trial.digest);
  await saveState(`${RUN}/config/device.json`, device.state);
  await device.writingStore(() => device.store.untag(trial.tag)).catch(() => {});
  const entry = trial.bootEntry;
  if (entry && device.bootEntries) await device.writingEntries((e) => e.remove(entry)).catch(() => {});
}

export async function boot(): Promise<void> {
  const log = new BootLog(`${RUN}/boot.json`);
  let params: AgentParameters | undefined;
  let device: Device | undefined;
  let trial: TrialState | undefined;
  // What a failure before the device's state is read needs to tell a counted try of a new UKI.
  const found: Found = {};
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
    await log.step('load kernel modules', loadModules, (n) => `${n} modules`);
    const kernelSigner = initrdKernelSigner();
    if (kernelSigner)
      await log.step(
        'trust the kernel signer for fs-verity',
        () => trustForFsverity(kernelSigner),
        (subject) => `${subject.replace(/\n/g, ', ')} in .fs-verity, closed`,
      );
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
    if (params.install !== undefined && !params.management) {
      await installOnDevice(params, log);
      log.record.result = 'running';
      log.save();
      end('poweroff', log);
    }
    const disk: DeviceDisk | undefined = params.boot
      ? undefined
      : await log.step(
          'find the disk',
          () => findDeviceDisk(),
          (d) => d.device,
        );
    found.disk = disk;
    const tpm = await Tpm.open(TPM_DEVICE);
    if (params.management) {
      if (!disk) throw new AgentError('AGENT_BOOT', 'the management image needs the device disk');
      await manage(params, log, disk, tpm);
      log.record.result = 'running';
      log.save();
      end('poweroff', log);
    }
    const attest = params.attest;
    const secrets = await log.step(
      attest ? 'unlock the TPM' : 'unlock the TPM and lock PCR 7',
      () => unlockTpm(tpm, attest !== undefined),
      (s) => `product ${s.product}, serial ${s.serial}, accepted version ${s.accepted}`,
    );
    let attested = false;
    if (attest) {
      // The verifier accepts this boot's PCR values, and the secrets open only in them: before the lock.
      try {
        await log.step(
          `attest to ${attest.url}`,
          async () => {
            const fetched = await fetchBootSecrets(tpm, attest.url, attest.secrets, secrets.deviceCert!);
            const summary = fetched.map((x) => `${x.name} (${x.value.length} bytes)`).join(', ');
            writeBootSecrets(fetched);
            return summary;
          },
          (summary) => `released ${summary} into ${SECRETS_DIR}`,
        );
        attested = true;
      } finally {
        secrets.deviceCert?.fill(0);
        secrets.deviceCert = undefined;
        if (!attested) await lockPcr7(tpm).catch(() => {});
      }
      await log.step('lock PCR 7', () => lockPcr7(tpm));
    }
    const transport = { plainHttp: params.registryInsecure };
    let esp: EspEntries | undefined;
    if (disk) {
      await log.step(
        'open the config partition',
        () =>
          openEncrypted(
            disk.partitions.config.device,
            'seal-config',
            secrets.luksPassphrase,
            `${RUN}/config`,
          ),
        (how) => how,
      );
      await log.step(
        'open the data partition',
        () => openEncrypted(disk.partitions.data.device, 'seal-data', secrets.luksPassphrase, `${RUN}/data`),
        (how) => how,
      );
      await log.step('mount the store', () => mountStore(disk.partitions.store.device));
      esp = await log.step(
        'read the boot entries',
        () => mountBootEntries(disk.partitions.esp.device),
        (e) =>
          e
            ? `${e.loader.loader}, started ${e.loader.booted?.file ?? "no entry of Seal's"}; entries: ${
                e.entries
                  .list()
                  .map((x) => x.file)
                  .join(', ') || 'none'
              }`
            : 'not started by systemd-boot: the UKI boots alone',
      );
      found.esp = esp ?? null;
    } else {
      // Network boot: the store, the state and the volumes live in memory for this boot.
      const source = params.boot!;
      await log.step(
        `fetch the system ${source} into memory`,
        () => fetchIntoMemory(source, transport),
        (n) => `${n} bytes`,
      );
    }
    secrets.luksPassphrase.fill(0);
    device = new Device({
      store: await LayoutStore.open(`${RUN}/store`),
      ca: initrdCa(),
      ...(kernelSigner ? { kernelSigner } : {}),
      product: secrets.product,
      tpm,
      versionAuth: secrets.versionAuth,
      log,
      ...(attested ? { secrets: SECRETS_DIR } : {}),
      state: loadState(`${RUN}/config/device.json`),
      ...(esp ? { esp } : {}),
    });
    const d = device;
    const chosen = await chooseSystem(d, params.tag);
    trial = chosen.trial;
    let tag = chosen.tag;
    let report: VerifyReport;
    try {
      report = await log.step(
        'verify the system manifest',
        () => d.verify(tag),
        (r) => `version ${r.document.version}, ${r.document.targets.length} targets, ${r.manifest.digest}`,
      );
    } catch (error) {
      if (!trial) throw error;
      // A trial that does not verify is given up at once: the good system boots instead.
      await giveUpTrial(d, `was refused: ${(error as Error).message}`);
      trial = undefined;
      tag = 'current';
      report = await log.step(
        'verify the system manifest',
        () => d.verify(tag),
        (r) => `version ${r.document.version}, ${r.document.targets.length} targets, ${r.manifest.digest}`,
      );
    }
    const document = report.document as SystemManifest;
    const targets = document.targets as SystemTarget[];
    const host = targets.find((t) => t.role === 'host');
    if (!host) throw new AgentError('AGENT_BOOT', 'the system manifest has no host target');
    const hostLayers: OpenedLayers = await log.step(
      `open the host target ${host.name}`,
      () => d.openImage(host),
      describeOpened,
    );
    const pinned = params.composefsDigest;
    if (pinned)
      await log.step(
        'check the host root against composefs.digest',
        () => {
          if (hostLayers.composefsDigest !== pinned)
            throw new AgentError(
              'AGENT_BOOT',
              hostLayers.composefsDigest
                ? `the host target's composefs digest is ${hostLayers.composefsDigest}, and the command line pins ${pinned}`
                : `the command line pins the composefs digest ${pinned}, and the host target is not a composefs image`,
            );
        },
        () => `composefs ${pinned}, as the command line pins`,
      );
    await log.step(
      'mount the host root',
      () => {
        mountOverlay(hostLayers, '/sysroot', `${RUN}/targets/${host.name}/rw`);
        return Device.osRelease('/sysroot');
      },
      (name) => name,
    );
    const services = targets.filter((t) => t.role === 'service');
    const opened = new Map<string, OpenedLayers>();
    for (const t of services) {
      opened.set(
        t.name,
        await log.step(`open the service image ${t.name}`, () => d.openImage(t), describeOpened),
      );
    }
    if (params.test === 'before-switch')
      throw new AgentError('AGENT_BOOT', 'stopped before the switch (seal.test)');
    if (existsSync(IPE_POLICY))
      await log.step(
        'activate the IPE policy',
        () => activateIpePolicy(),
        (name) => `${name}: only what the kernel verified may execute`,
      );
    await log.step('switch into the host root', () => switchRoot('/sysroot'));
    await log.step(
      'start the services',
      async () => {
        mkdirSync(`${RUN}/data/journal`, { recursive: true });
        for (const t of services) d.startService(t, opened.get(t.name)!);
        await d.servicesUp(services.map((t) => t.name));
      },
      () => `${services.length} running`,
    );
    await log.step(
      'confirm the system',
      () => d.confirm(report, tag),
      () => `version ${document.version} is good; accepted version ${securityVersionOf(document)}`,
    );
    trial = undefined;
    if (d.state.garbage) await d.collectGarbage();
    log.record.result = 'running';
    log.save();
    for (const e of d.state.events.slice(-3)) log.say(`history: ${e.at} ${e.event}`);
    const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) || 0;
    log.say(
      `boot complete: ${document.product} version ${document.version} is running (${uptime.toFixed(1)} s since the kernel started); agent peak memory ${peakMemory()}`,
    );
    // One checker for every update source: one check at a time, refused digests skipped.
    const checker = new UpdateChecker(d, { transport, trialBoots: params.trialBoots });
    if (params.follow) {
      const { source, intervalMs } = params.follow;
      log.say(`following ${source} every ${intervalMs / 1000} s`);
      follow(d, source, intervalMs, {}, checker);
    }
    if (params.media) {
      log.say(`looking for update media every ${params.media.intervalMs / 1000} s`);
      watchMedia(d, checker, disk ? basename(disk.device) : undefined, params.media.intervalMs);
    }
    if (params.push !== undefined) servePush(d, checker, params.push);
    const stop = async (signal: string) => {
      log.say(`${signal}: stopping the services`);
      for (const name of [...d.services.keys()]) await d.stopService(name);
      end('poweroff', log);
    };
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGINT', () => void stop('SIGINT'));
    if (watchPowerButton(() => void stop('the power button')) === 0)
      log.say('no power button found: the device stops on SIGTERM only');
  } catch (error) {
    log.record.result = 'refused';
    log.save();
    if (params?.debug && error instanceof Error) log.say(error.stack ?? String(error));
    if (device)
      for (const name of [...device.services.keys()]) await device.stopService(name).catch(() => {});
    if (device && trial) {
      // A trial that failed after it verified: noted, and rebooted until its boots run out.
      trial.lastFailure = (error as Error).message;
      await saveState(`${RUN}/config/device.json`, device.state).catch(() => {});
      end('reboot', log);
    }
    const tried = failedTry(found);
    if (tried) {
      // Before the device state is read (attestation, say), a failure can only be counted.
      log.say(
        `version ${tried.version}'s UKI is being tried (${tried.triesLeft} more boot${tried.triesLeft === 1 ? '' : 's'}): systemd-boot counts this failed boot`,
      );
      end('reboot', log);
    }
    end(params?.onFailure ?? 'poweroff', log);
  }
}
