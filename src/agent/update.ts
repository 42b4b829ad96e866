/**
 * Updates on the device: a new signed system manifest, from a registry, an OCI layout or archive
 * (removable media), fetched into the store under the tag `next` — only the blobs the store
 * lacks — and verified exactly as at boot, every new layer included, before anything changes.
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
import type { SystemManifest, SystemTarget } from '../manifest/spec.ts';
import { securityVersionOf } from '../manifest/spec.ts';
import type { VerifyReport } from '../manifest/verify.ts';
import { syncImage } from '../registry/sync.ts';
import { openDestination, openSource } from '../store/index.ts';
import type { Device } from './device.ts';
import { RUN } from './device.ts';
import { AgentError } from './errors.ts';
import type { OpenedLayers } from './images.ts';
import { recordEvent, saveState } from './state.ts';
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
function downgradeProblem(current: SystemManifest, next: SystemManifest): string | undefined {
  if (next.version >= current.version) return undefined;
  if (next.downgrade && securityVersionOf(next) >= securityVersionOf(current)) return undefined;
  return `version ${next.version} is older than the running ${current.version} and not signed as a permitted downgrade`;
}

/** Fetches `source` into the store as `next`; returns the bytes fetched. */
async function fetch(
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
    await saveState(`${RUN}/config/device.json`, device.state);
    return { result: 'refused', reason, final };
  };
  let fetched: { bytes: number; blobs: number };
  try {
    fetched = await log.step(
      `fetch the update ${source}`,
      () => fetch(device, source, options),
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
  if (host(next) !== host(running.document)) {
    // A new host: tried over the next boots; the good system stays `current` until one succeeds.
    const tries = options.trialBoots ?? 3;
    device.state.trial = {
      digest: report.manifest.digest,
      version: next.version,
      tag: 'next',
      triesLeft: tries,
      tries,
      reason: `update from ${source}`,
    };
    recordEvent(device.state, `version ${next.version} staged (new host): rebooting to try it`);
    await saveState(`${RUN}/config/device.json`, device.state);
    log.say(`update: version ${next.version} changes the host; rebooting to try it (${tries} boots)`);
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
  await device.closeUnused(
    new Set([host(next)!, ...[...device.services.values()].map((s) => s.target.image.digest)]),
  );
  return {
    result: 'applied',
    from: running.document.version,
    to: next.version,
    restarted,
    bytes: fetched.bytes,
  };
}

/**
 * Follows a tag: every `intervalMs`, resolves `source`; a digest other than the running one (and
 * not refused before) is applied with `update`. One check runs at a time.
 */
export function follow(
  device: Device,
  source: string,
  intervalMs: number,
  options: UpdateOptions = {},
): NodeJS.Timeout {
  const refused = new Set<string>();
  let busy = false;
  const check = async () => {
    if (busy) return;
    busy = true;
    try {
      const src = await openSource(source, options.transport);
      let digest: string;
      try {
        digest = (await src.resolve()).digest;
      } finally {
        await src.close();
      }
      if (digest === device.running?.digest || refused.has(digest)) return;
      device.log.say(`update: ${source} is now ${digest}`);
      const outcome = await update(device, source, options);
      if (outcome.result === 'refused') {
        if (outcome.final) refused.add(digest);
        device.log.say(`update refused: ${outcome.reason}`);
      } else if (outcome.result === 'applied') {
        device.log.say(
          `update applied: version ${outcome.from} -> ${outcome.to}, restarted ${outcome.restarted.join(', ') || 'nothing'}, ${outcome.bytes} bytes fetched`,
        );
      }
    } catch (error) {
      device.log.say(`update check of ${source} failed: ${(error as Error).message}`);
    } finally {
      busy = false;
    }
  };
  return setInterval(() => void check(), intervalMs);
}
