/**
 * What a device remembers between boots, on its encrypted config partition (`device.json`,
 * replaced atomically): the system it runs and knows good, the system it is trying (with the
 * boots it has left before it falls back by itself), and a short history of what happened and
 * why — what `seal status` reports. The anti-rollback floor is not here: the TPM keeps it.
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomic.ts';

export interface SystemRef {
  digest: string;
  version: number;
  /** Its UKI's boot entry on the ESP (`seal-7`), on a device that boots through systemd-boot. */
  bootEntry?: string;
}

export interface TrialState extends SystemRef {
  /** The store tag the trial is under. */
  tag: string;
  /**
   * Boots the trial may still take; at 0 the next boot returns to the good system. A trial with a
   * new UKI (`bootEntry`) is counted by systemd-boot instead, on its entry.
   */
  triesLeft: number;
  /** Boots it was given. */
  tries: number;
  /** Why it is tried (the update's source). */
  reason: string;
  /** The last failure of a trial boot, reported when it is given up. */
  lastFailure?: string;
}

export interface DeviceEvent {
  at: string;
  event: string;
}

export interface DeviceState {
  good?: SystemRef;
  trial?: TrialState;
  /** Systems refused for good or given up after their trial (digests): a followed tag naming one is not tried again. */
  refused?: string[];
  /** The store may hold blobs no system needs (a system replaced, refused or given up): collected at the next chance. */
  garbage?: boolean;
  events: DeviceEvent[];
}

const KEEP_REFUSED = 20;

/** Remembers that the system `digest` is not to be tried again. */
export function rememberRefused(state: DeviceState, digest: string): void {
  state.refused = [...(state.refused ?? []).filter((d) => d !== digest), digest].slice(-KEEP_REFUSED);
}

const KEEP_EVENTS = 50;

export function loadState(path: string): DeviceState {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as DeviceState;
    if (typeof parsed !== 'object' || parsed === null || !Array.isArray(parsed.events))
      throw new Error('shape');
    return parsed;
  } catch {
    // A first boot, or a state file that cannot be read: the store's `current` system is the good one.
    return { events: [] };
  }
}

export async function saveState(path: string, state: DeviceState): Promise<void> {
  state.events = state.events.slice(-KEEP_EVENTS);
  await writeFileAtomic(path, `${JSON.stringify(state, null, 2)}\n`, 0o600);
}

export function recordEvent(state: DeviceState, event: string): DeviceEvent {
  const e = { at: new Date().toISOString(), event };
  state.events.push(e);
  return e;
}
