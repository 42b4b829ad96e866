/**
 * A running Seal device, as the agent holds it after the boot's unlock: its store, its CA and
 * product, its TPM (for the anti-rollback floor), the system it runs, the images it has open and
 * its services. Boot and updates both work through it, so a system is verified, mounted and run
 * the same way whichever brought it.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import type { SystemManifest, SystemTarget } from '../manifest/spec.ts';
import { securityVersionOf } from '../manifest/spec.ts';
import { type VerifyOptions, type VerifyReport, verifySystem } from '../manifest/verify.ts';
import { type Certificate, parseCertificates } from '../pki/index.ts';
import { collectComposefs } from '../seal/composefs-store.ts';
import { type ImageSignatures, verifyImageSignatures } from '../seal/sign.ts';
import { LayoutSource, type LayoutStore } from '../store/index.ts';
import { raiseAcceptedVersion, readAcceptedVersion, type Tpm } from '../tpm/index.ts';
import { type BootEntries, ESP_MOUNT, type LoaderReport } from './boot-entries.ts';
import { AgentError } from './errors.ts';
import { closeLayers, type OpenedLayers, openLayers } from './images.ts';
import type { BootLog } from './log.ts';
import { type ServiceHandle, superviseService } from './services.ts';
import { type DeviceState, recordEvent, saveState } from './state.ts';
import { MS, system } from './system.ts';
import { runProgram, SEAL_ROOT } from './tools.ts';

export const RUN = '/run/seal';

/** Mounts the store partition read-only at RUN/store (a change remounts it: `writingStore`). */
export function mountStore(partition: string): void {
  mkdirSync(`${RUN}/store`, { recursive: true });
  system().mount(partition, `${RUN}/store`, 'ext4', MS.RDONLY | MS.NOSUID | MS.NODEV, null);
}

/** The manifest CA the initrd carries: the one signer of systems this device accepts. */
export function initrdCa(): Certificate {
  return parseCertificates(
    readFileSync(`${SEAL_ROOT}/etc/manifest-ca.pem`, 'utf8'),
    'the manifest CA of the initrd',
  )[0]!;
}

/** Mounts `at` read-write for a change, and back read-only after it, whatever happened. */
async function writing<T>(at: string, change: () => Promise<T>): Promise<T> {
  const remount = (rw: boolean) =>
    system().mount(null, at, null, MS.REMOUNT | MS.NOSUID | MS.NODEV | (rw ? 0 : MS.RDONLY), null);
  remount(true);
  try {
    return await change();
  } finally {
    remount(false);
  }
}

export interface RunningSystem {
  digest: string;
  document: SystemManifest;
}

export interface RunningService {
  target: SystemTarget;
  layers: OpenedLayers;
  handle: ServiceHandle;
}

export class Device {
  readonly store: LayoutStore;
  readonly ca: Certificate;
  /** The product's kernel signer, when the initrd carries one: every image must carry its signatures. */
  readonly kernelSigner: Certificate | undefined;
  readonly product: string;
  readonly tpm: Tpm;
  readonly log: BootLog;
  readonly state: DeviceState;
  readonly #versionAuth: Buffer;
  /** The secrets attestation fetched at boot (a directory every service sees read-only). */
  readonly secrets: string | undefined;
  /** The UKIs on the ESP and what systemd-boot said of this boot (a device that boots through it). */
  readonly bootEntries: BootEntries | undefined;
  readonly loader: LoaderReport | undefined;
  /** The system running now (set once the boot verified it). */
  running: RunningSystem | undefined;
  readonly services = new Map<string, RunningService>();
  /** Images open through dm-verity, by manifest digest. */
  readonly #images = new Map<string, OpenedLayers>();

  constructor(options: {
    store: LayoutStore;
    ca: Certificate;
    kernelSigner?: Certificate;
    product: string;
    tpm: Tpm;
    versionAuth: Buffer;
    log: BootLog;
    state: DeviceState;
    esp?: { entries: BootEntries; loader?: LoaderReport };
    secrets?: string;
  }) {
    this.store = options.store;
    this.ca = options.ca;
    this.kernelSigner = options.kernelSigner;
    this.product = options.product;
    this.tpm = options.tpm;
    this.#versionAuth = options.versionAuth;
    this.log = options.log;
    this.state = options.state;
    this.bootEntries = options.esp?.entries;
    this.loader = options.esp?.loader;
    this.secrets = options.secrets;
  }

  /** What the device accepts: its CA, its product, the TPM's floor. */
  async #accepts(): Promise<VerifyOptions> {
    return { ca: this.ca, product: this.product, minimumVersion: await readAcceptedVersion(this.tpm) };
  }

  /** Verifies the system under `tag` as the device accepts systems: CA, product, the TPM's floor, every target. */
  async verify(tag: string, deep = false): Promise<VerifyReport> {
    return verifySystem(`oci:${RUN}/store:${tag}`, { ...(await this.#accepts()), deep });
  }

  /**
   * Checks the system at `source` (not yet fetched) as far as it can without its images: the
   * signature, the product and the TPM's floor — so that nobody else's system fills the store.
   */
  async verifySigned(source: string, transport?: { plainHttp?: boolean }): Promise<VerifyReport> {
    return verifySystem(source, {
      ...(await this.#accepts()),
      targets: false,
      ...(transport ? { transport } : {}),
    });
  }

  /** Mounts the store read-write for a change, and back read-only after it, whatever happened. */
  writingStore<T>(change: () => Promise<T>): Promise<T> {
    return writing(`${RUN}/store`, change);
  }

  /** The same for the ESP's boot entries (only on a device that boots through systemd-boot). */
  writingEntries<T>(change: (entries: BootEntries) => T | Promise<T>): Promise<T> {
    const entries = this.bootEntries;
    if (!entries) throw new AgentError('AGENT_UPDATE', 'this device has no boot entries to change');
    return writing(ESP_MOUNT, async () => change(entries));
  }

  /** The layers of a target's image, opened once through dm-verity (shared by every user of the image). */
  async openImage(target: SystemTarget): Promise<OpenedLayers> {
    const open = this.#images.get(target.image.digest);
    if (open) return open;
    const id = target.image.digest.slice(7, 19);
    const signatures = this.kernelSigner ? await this.#signatures(target) : undefined;
    const layers = await openLayers(
      this.store,
      target.image,
      target.name,
      `seal-${id}`,
      `${RUN}/images/${id}`,
      {
        ...(signatures ? { signatures } : {}),
        writingStore: (change) => this.writingStore(change),
      },
    );
    this.#images.set(target.image.digest, layers);
    return layers;
  }

  /** The target's kernel signatures by the product's kernel signer: one accepted artifact, or the target is refused. */
  async #signatures(target: SystemTarget): Promise<ImageSignatures['signatures']> {
    const src = new LayoutSource(target.name, this.store, target.image.digest);
    try {
      return (await verifyImageSignatures(src, [this.kernelSigner!], { image: target.image })).signatures;
    } catch (error) {
      throw new AgentError(
        'AGENT_BOOT',
        `${target.name}: no signature of the product's kernel signer is accepted: ${(error as Error).message}`,
        { subject: target.name, cause: error },
      );
    }
  }

  /** Closes images no running service or the host uses. */
  async closeUnused(keep: Set<string>): Promise<void> {
    for (const [digest, layers] of this.#images) {
      if (keep.has(digest)) continue;
      await closeLayers(layers);
      this.#images.delete(digest);
    }
  }

  /**
   * Removes from the store every blob no tagged system needs — systems replaced, refused or given
   * up, and downloads a power loss cut short — once the images of other systems are closed (an
   * open, deleted blob would keep the store from going back read-only). Says what it freed; a
   * failure is said and left for the next time, never thrown.
   */
  async collectGarbage(): Promise<void> {
    const doc = this.running?.document;
    if (!doc) return;
    try {
      await this.closeUnused(
        new Set(
          doc.targets.filter((t) => t.role === 'host' || t.role === 'service').map((t) => t.image.digest),
        ),
      );
      const { blobs, composefs } = await this.writingStore(async () => ({
        blobs: await this.store.gc(),
        composefs: await collectComposefs(this.store),
      }));
      this.state.garbage = undefined;
      await saveState(`${RUN}/config/device.json`, this.state);
      if (blobs.removed.length > 0)
        this.log.say(
          `store: ${blobs.removed.length} blobs no system needs removed, ${blobs.freed} bytes freed`,
        );
      if (composefs.removed > 0)
        this.log.say(
          `store: ${composefs.removed} composefs images and objects no system needs removed, ${composefs.freed} bytes freed`,
        );
    } catch (error) {
      this.log.say(`store: garbage not collected: ${(error as Error).message}`);
    }
  }

  /** Starts a service target from its (already opened) image. */
  startService(target: SystemTarget, layers: OpenedLayers): RunningService {
    const handle = superviseService({
      name: target.name,
      image: layers,
      config: layers.config,
      spec: target.service ?? {},
      dir: `${RUN}/services/${target.name}`,
      volumes: `${RUN}/data/volumes`,
      journal: `${RUN}/data/journal/${target.name}.log`,
      ...(this.secrets ? { secrets: this.secrets } : {}),
      log: (line) => this.log.say(line),
    });
    const running = { target, layers, handle };
    this.services.set(target.name, running);
    return running;
  }

  async stopService(name: string): Promise<void> {
    const s = this.services.get(name);
    if (!s) return;
    await s.handle.stop();
    this.services.delete(name);
  }

  /**
   * Waits until the named services run (crun says so) and then stay up for `settleMs` without a
   * restart — a service that starts and dies at once has not come up. Throws naming those that
   * did not, within `ms`.
   */
  async servicesUp(names: string[], ms = 60_000, settleMs = 3_000): Promise<void> {
    const deadline = Date.now() + ms;
    const states = () =>
      Promise.all(
        names.map(async (name) => {
          const s = this.services.get(name);
          if (!s) return 'missing';
          const { stdout } = await runProgram('crun', ['state', name]).catch(() => ({ stdout: '' }));
          return /"status":\s*"running"/.test(stdout) && s.handle.state === 'running'
            ? 'running'
            : s.handle.state;
        }),
      );
    const fail = (current: string[]) =>
      new AgentError(
        'AGENT_SERVICE',
        `services not running: ${names.filter((_, i) => current[i] !== 'running').join(', ')}`,
      );
    for (;;) {
      const current = await states();
      if (current.every((s) => s === 'running')) break;
      if (current.some((s) => s === 'failed' || s === 'exited' || s === 'missing') || Date.now() > deadline)
        throw fail(current);
      await new Promise((r) => setTimeout(r, 100));
    }
    const starts = names.map((name) => this.services.get(name)?.handle.starts);
    await new Promise((r) => setTimeout(r, settleMs));
    const settled = await states();
    const restarted = names.filter((name, i) => this.services.get(name)?.handle.starts !== starts[i]);
    if (!settled.every((s) => s === 'running') || restarted.length > 0)
      throw fail(settled.map((s, i) => (restarted.includes(names[i]!) ? 'restarted' : s)));
  }

  /**
   * The system `report` (under `tag`) is good: it becomes `current` in the store, the TPM's floor
   * rises to its security version, and the device state says so. Until this, a power loss or a
   * failure leaves the previous good system in place.
   */
  async confirm(report: VerifyReport, tag: string): Promise<void> {
    const document = report.document as SystemManifest;
    if (tag !== 'current') {
      await this.writingStore(async () => {
        await this.store.tag(report.manifest, 'current');
        await this.store.untag(tag).catch(() => {});
      });
    }
    const raised = await raiseAcceptedVersion(this.tpm, this.#versionAuth, securityVersionOf(document));
    const previous = this.state.good;
    // The good system's UKI: a confirmed trial's own, else the one systemd-boot started, else the one it had.
    const bootEntry = this.state.trial?.bootEntry ?? this.loader?.booted?.id ?? previous?.bootEntry;
    this.state.good = {
      digest: report.manifest.digest,
      version: document.version,
      ...(bootEntry ? { bootEntry } : {}),
    };
    this.state.trial = undefined;
    if (previous?.digest !== report.manifest.digest) {
      // The system it replaces leaves the store at the next collection (collectGarbage).
      if (previous) this.state.garbage = true;
      recordEvent(
        this.state,
        `version ${document.version} confirmed good${previous ? ` (was ${previous.version})` : ''}; accepted version ${raised.to}`,
      );
    }
    await saveState(`${RUN}/config/device.json`, this.state);
    // Only now does its UKI lose its counter, and the others (older, or given up) leave the ESP.
    if (bootEntry && this.bootEntries) {
      const removed = await this.writingEntries((entries) => entries.keepOnly(bootEntry));
      if (removed.length > 0) this.log.say(`boot entries: ${bootEntry} kept, ${removed.join(', ')} removed`);
    }
    this.running = { digest: report.manifest.digest, document };
  }

  /** The host's os-release name (read through dm-verity: a refused block is an error here). */
  static osRelease(root: string): string {
    try {
      const text = readFileSync(`${root}/etc/os-release`, 'utf8');
      return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(text)?.[1] ?? 'no PRETTY_NAME';
    } catch (error) {
      throw new AgentError('AGENT_BOOT', `the host target cannot be read: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}
