/**
 * Updates on the device: a new signed system manifest, from a registry, an OCI layout or archive
 * (removable media). Its signature, product and version are checked where it is; then it is
 * fetched into the store under the tag `next` — only the blobs the store lacks — and verified
 * exactly as at boot, every new layer included, before anything changes. Whatever a confirmation
 * or a refusal leaves behind is collected from the store at once.
 *
 *  - Only services changed: applied live. Changed and new services start from their new images,
 *    removed ones stop, unchanged ones keep running; when every new service runs, the system is
 *    confirmed (it becomes `current`, the TPM's floor rises). If one does not come up, the old
 *    services are started again and nothing is confirmed.
 *  - The host changed: staged. The device reboots into the new system as a trial with a few
 *    boots; the boot that brings every service up confirms it, and when the trial boots run out
 *    the device returns to the good system by itself (boot.ts).
 *
 * A power loss at any point leaves `current` as it was until the confirmation's one atomic
 * index.json rename; a refused update leaves the store's tags, the state and the TPM unchanged.
 */
import { join } from 'node:path';
import { ManifestError } from '../manifest/errors.ts';
import type { SystemManifest, SystemTarget } from '../manifest/spec.ts';
import { securityVersionOf } from '../manifest/spec.ts';
import type { VerifyReport } from '../manifest/verify.ts';
import { syncImage } from '../registry/sync.ts';
import { openDestination, openSource } from '../store/index.ts';
import { BOOT_IMAGE_UKI } from '../uki/boot-image.ts';
import { bootEntryName, ENTRIES_DIR } from './boot-entries.ts';
import type { Device } from './device.ts';
import { RUN } from './device.ts';
import { AgentError } from './errors.ts';
import type { OpenedLayers } from './images.ts';
import { peakMemory } from './log.ts';
import { recordEvent, rememberRefused, saveState } from './state.ts';
import { system } from './system.ts';

export interface UpdateOptions {
  /** Registry options (plain HTTP for a lab registry). */
  transport?: { plainHttp?: boolean };
  /** How long new services have to reach running (default 60 s). */
  serviceTimeoutMs?: number;
  /** Boots a new host gets before the device returns to the good system (default 3). */
  trialBoots?: number;
}

export type UpdateOutcome =
  | { result: 'unchanged'; digest: string }
  | { result: 'applied'; from: number; to: number; restarted: string[]; bytes: number }
  | { result: 'staged'; from: number; to: number; bytes: number }
  /** `final`: the same update will be refused again (only a transfer failure is worth retrying). */
  | { result: 'refused'; reason: string; final: boolean };

const sameService = (a: SystemTarget, b: SystemTarget) =>
  a.image.digest === b.image.digest && JSON.stringify(a.service ?? {}) === JSON.stringify(b.service ?? {});

/** Whether `next` may replace `current` (versions; the security floor is the TPM's, checked in verify). */
export function downgradeProblem(current: SystemManifest, next: SystemManifest): string | undefined {
  if (next.version >= current.version) return undefined;
  if (next.downgrade && securityVersionOf(next) >= securityVersionOf(current)) return undefined;
  return `version ${next.version} is older than the running ${current.version} and not signed as a permitted downgrade`;
}

/** Fetches `source` into the store as `next` (only the blobs it lacks); returns the bytes fetched. */
export async function fetchSystem(
  device: Device,
  source: string,
  options: UpdateOptions,
): Promise<{ bytes: number; blobs: number }> {
  return device.writingStore(async () => {
    const src = await openSource(source, options.transport);
    try {
      const dst = await openDestination(`oci:${RUN}/store:next`);
      try {
        const result = await syncImage(src, dst, { tag: 'next' });
        await dst.commit();
        return { bytes: result.blobs.bytes, blobs: result.blobs.copied };
      } finally {
        await dst.close();
      }
    } finally {
      await src.close();
    }
  });
}

/** Starts the new services, stops the removed and changed ones; on failure puts the old ones back. */
async function applyServices(
  device: Device,
  next: SystemManifest,
  options: UpdateOptions,
): Promise<string[]> {
  const current = device.running!.document;
  const before = new Map(current.targets.filter((t) => t.role === 'service').map((t) => [t.name, t]));
  const after = new Map(next.targets.filter((t) => t.role === 'service').map((t) => [t.name, t]));
  const changed = [...after.values()].filter(
    (t) => !before.has(t.name) || !sameService(before.get(t.name)!, t),
  );
  const removed = [...before.keys()].filter((name) => !after.has(name));
  // Every new image opens through dm-verity before any service stops.
  const opened = new Map<string, OpenedLayers>();
  for (const t of changed) opened.set(t.name, await device.openImage(t));
  const old = new Map<string, OpenedLayers>();
  for (const name of [...changed.map((t) => t.name), ...removed]) {
    const running = device.services.get(name);
    if (running) old.set(name, running.layers);
    await device.stopService(name);
  }
  try {
    for (const t of changed) device.startService(t, opened.get(t.name)!);
    await device.servicesUp(
      changed.map((t) => t.name),
      options.serviceTimeoutMs,
    );
  } catch (error) {
    for (const t of changed) await device.stopService(t.name);
    for (const [name, layers] of old) device.startService(before.get(name)!, layers);
    throw error;
  }
  return changed.map((t) => t.name);
}

/**
 * Updates the device from `source`. Never throws for a refused update: the outcome says why, and
 * the device runs on as it was.
 */
export async function update(
  device: Device,
  source: string,
  options: UpdateOptions = {},
): Promise<UpdateOutcome> {
  const log = device.log;
  const running = device.running;
  if (!running) throw new AgentError('AGENT_BOOT', 'no system is running to update');
  const refuse = async (reason: string, final: boolean): Promise<UpdateOutcome> => {
    await device.writingStore(() => device.store.untag('next')).catch(() => {});
    recordEvent(device.state, `update from ${source} refused: ${reason}`);
    device.state.garbage = true;
    await saveState(`${RUN}/config/device.json`, device.state);
    // Whatever it brought leaves the store (a retry fetches it again, resuming within a check).
    await device.collectGarbage();
    return { result: 'refused', reason, final };
  };
  // Signed for this product, and not below the floor, before a byte of its images is fetched.
  let signed: VerifyReport;
  try {
    signed = await log.step(
      `check the update ${source}`,
      () => device.verifySigned(source, options.transport),
      (r) => `version ${r.document.version}, signed by "${r.signatures.find((s) => s.ok)?.signer}"`,
    );
  } catch (error) {
    return refuse((error as Error).message, error instanceof ManifestError);
  }
  const downgrade = downgradeProblem(running.document, signed.document as SystemManifest);
  if (downgrade) return refuse(downgrade, true);
  let fetched: { bytes: number; blobs: number };
  try {
    fetched = await log.step(
      `fetch the update ${source}`,
      () => fetchSystem(device, source, options),
      (f) => `${f.blobs} new blobs, ${f.bytes} bytes`,
    );
  } catch (error) {
    return refuse((error as Error).message, false);
  }
  let report: VerifyReport;
  try {
    report = await log.step(
      'verify the update',
      () => device.verify('next', true),
      (r) => `version ${r.document.version}, ${r.manifest.digest}, every layer verified`,
    );
  } catch (error) {
    return refuse((error as Error).message, true);
  }
  const next = report.document as SystemManifest;
  if (report.manifest.digest === running.digest) {
    await device.writingStore(() => device.store.untag('next')).catch(() => {});
    return { result: 'unchanged', digest: running.digest };
  }
  const problem = downgradeProblem(running.document, next);
  if (problem) return refuse(problem, true);
  const host = (doc: SystemManifest) => doc.targets.find((t) => t.role === 'host')?.image.digest;
  const bootTarget = next.targets.find((t) => t.role === 'boot');
  const bootOf = (doc: SystemManifest) => doc.targets.find((t) => t.role === 'boot')?.image.digest;
  const newUki = bootTarget !== undefined && bootTarget.image.digest !== bootOf(running.document);
  if (newUki && !device.bootEntries)
    return refuse(
      `version ${next.version} brings a new UKI, and this device does not boot through systemd-boot on its disk: it could not fall back from it`,
      true,
    );
  if (newUki && next.version <= running.document.version)
    return refuse(
      `version ${next.version} brings a new UKI without a version above the running ${running.document.version} (systemd-boot starts the highest)`,
      true,
    );
  if (newUki || host(next) !== host(running.document)) {
    // Tried over the next boots; the good system stays `current` until one of them succeeds.
    const tries = options.trialBoots ?? 3;
    const bootEntry = newUki ? bootEntryName(next.version) : undefined;
    device.state.trial = {
      digest: report.manifest.digest,
      version: next.version,
      tag: 'next',
      triesLeft: tries,
      tries,
      reason: `update from ${source}`,
      ...(bootEntry ? { bootEntry } : {}),
    };
    const what = newUki ? 'a new UKI' : 'a new host';
    recordEvent(device.state, `version ${next.version} staged (${what}): rebooting to try it`);
    // The state first: a power loss before the entry is whole leaves a trial the next boot gives up.
    await saveState(`${RUN}/config/device.json`, device.state);
    if (newUki) {
      const staged = await log
        .step(
          `stage the UKI of version ${next.version}`,
          async () => {
            const layers = await device.openImage(bootTarget);
            try {
              return await device.writingEntries((entries) =>
                entries.stage(next.version, join(layers.lowers[0]!, BOOT_IMAGE_UKI), tries),
              );
            } finally {
              await device.closeUnused(
                new Set([
                  host(running.document)!,
                  ...[...device.services.values()].map((s) => s.target.image.digest),
                ]),
              );
            }
          },
          (entry) => `${ENTRIES_DIR}/${entry.file}`,
        )
        .catch((error: Error) => error);
      if (staged instanceof Error) {
        device.state.trial = undefined;
        return refuse(`the UKI of version ${next.version} could not be staged: ${staged.message}`, false);
      }
    }
    log.say(
      `update: version ${next.version} brings ${what}; rebooting to try it (${tries} boot${tries === 1 ? '' : 's'})`,
    );
    for (const name of [...device.services.keys()]) await device.stopService(name);
    system().reboot('reboot');
    return { result: 'staged', from: running.document.version, to: next.version, bytes: fetched.bytes };
  }
  let restarted: string[];
  try {
    restarted = await log.step(
      'apply the update',
      () => applyServices(device, next, options),
      (names) => `restarted ${names.join(', ') || 'nothing'}`,
    );
  } catch (error) {
    return refuse(
      `version ${next.version} did not come up (${(error as Error).message}); version ${running.document.version} kept`,
      true,
    );
  }
  await log.step(
    'confirm the update',
    () => device.confirm(report, 'next'),
    () => `version ${next.version} is current`,
  );
  // The images of the replaced services close, and the system it replaced leaves the store.
  await device.collectGarbage();
  return {
    result: 'applied',
    from: running.document.version,
    to: next.version,
    restarted,
    bytes: fetched.bytes,
  };
}

/**
 * The one update check of a device, shared by every source it watches (a followed registry tag,
 * removable media): one runs at a time, and a source whose digest is the running system's, or
 * one refused before for good, is skipped without fetching anything.
 */
export class UpdateChecker {
  readonly #device: Device;
  readonly #options: UpdateOptions;
  #busy = false;

  constructor(device: Device, options: UpdateOptions = {}) {
    this.#device = device;
    this.#options = options;
  }

  /** Runs `task` unless another check runs (then it is skipped: false). */
  async exclusive(task: () => Promise<void>): Promise<boolean> {
    if (this.#busy) return false;
    this.#busy = true;
    try {
      await task();
      return true;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Resolves `source` and, when it names a system other than the running one and not refused
   * before, applies it with `update`, saying the outcome on the console. Call it inside
   * `exclusive`. Never throws: a source that cannot be resolved is `failed` (`onFailure` says
   * why; by default on the console). `seen` may skip a digest too (a medium tried already).
   */
  async check(
    source: string,
    options: {
      onFailure?: (message: string) => void;
      seen?: (digest: string) => boolean;
      /** Told what the update came to (not when the source names a system skipped). */
      onOutcome?: (outcome: UpdateOutcome) => void;
    } = {},
  ): Promise<'skipped' | 'updated' | 'failed'> {
    const device = this.#device;
    const onFailure =
      options.onFailure ??
      ((message: string) => device.log.say(`update check of ${source} failed: ${message}`));
    try {
      const src = await openSource(source, this.#options.transport);
      let digest: string;
      try {
        digest = (await src.resolve()).digest;
      } finally {
        await src.close();
      }
      if (digest === device.running?.digest || device.state.refused?.includes(digest)) return 'skipped';
      if (options.seen?.(digest)) return 'skipped';
      device.log.say(`update: ${source} is now ${digest}`);
      const outcome = await update(device, source, this.#options);
      options.onOutcome?.(outcome);
      if (outcome.result === 'refused') {
        if (outcome.final) {
          rememberRefused(device.state, digest);
          await saveState(`${RUN}/config/device.json`, device.state);
        }
        device.log.say(`update refused: ${outcome.reason}`);
      } else if (outcome.result === 'applied') {
        device.log.say(
          `update applied: version ${outcome.from} -> ${outcome.to}, restarted ${outcome.restarted.join(', ') || 'nothing'}, ${outcome.bytes} bytes fetched; agent peak memory ${peakMemory()}`,
        );
      }
      return 'updated';
    } catch (error) {
      onFailure((error as Error).message);
      return 'failed';
    }
  }
}

/**
 * Follows a tag: every `intervalMs`, resolves `source`; a digest other than the running one (and
 * not refused before) is applied with `update`. One check runs at a time (`checker`'s, shared
 * with the other sources the device watches).
 */
export function follow(
  device: Device,
  source: string,
  intervalMs: number,
  options: UpdateOptions = {},
  checker = new UpdateChecker(device, options),
): NodeJS.Timeout {
  return setInterval(
    () => void checker.exclusive(async () => void (await checker.check(source))),
    intervalMs,
  );
}
