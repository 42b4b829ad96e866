/**
 * `seal status`: what a device runs and what happened to it, from the agent's own records under
 * /run/seal — the device state (the good system, a system on trial, the history of updates,
 * fallbacks and refusals with their reasons) and this boot's steps. The agent prints the same
 * report on the console when a boot completes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BootRecord } from './log.ts';
import { type DeviceState, loadState } from './state.ts';

export interface DeviceStatus {
  state: DeviceState;
  boot?: BootRecord;
}

/** The records under `run` (the agent's /run/seal, or a copy of it). */
export function readStatus(run = '/run/seal'): DeviceStatus {
  const state = loadState(join(run, 'config/device.json'));
  let boot: BootRecord | undefined;
  try {
    boot = JSON.parse(readFileSync(join(run, 'boot.json'), 'utf8')) as BootRecord;
    if (!Array.isArray(boot.steps)) boot = undefined;
  } catch {}
  return { state, ...(boot ? { boot } : {}) };
}

/** The report's lines: the system, a trial, this boot, the last `events` events. */
export function formatStatus(status: DeviceStatus, events = 10): string[] {
  const { state, boot } = status;
  const lines: string[] = [];
  const good = state.good;
  lines.push(
    good
      ? `system: version ${good.version} (${good.digest}) is good${good.bootEntry ? `, boots from ${good.bootEntry}` : ''}`
      : 'system: none confirmed yet',
  );
  const trial = state.trial;
  if (trial) {
    const counting = trial.bootEntry
      ? `its UKI ${trial.bootEntry} counted by systemd-boot (${trial.tries} boot${trial.tries === 1 ? '' : 's'})`
      : `${trial.triesLeft} of ${trial.tries} boot${trial.tries === 1 ? '' : 's'} left`;
    lines.push(
      `trial: version ${trial.version} (${trial.digest}), ${counting}; ${trial.reason}${trial.lastFailure ? `; last failure: ${trial.lastFailure}` : ''}`,
    );
  }
  if (boot) {
    const failed = boot.steps.find((s) => s.status === 'failed');
    lines.push(
      `this boot: ${boot.result ?? 'in progress'}, ${boot.steps.length} steps${failed ? `; failed at "${failed.step}": ${failed.error?.message ?? ''}` : ''}`,
    );
  }
  for (const e of state.events.slice(-events)) lines.push(`  ${e.at} ${e.event}`);
  return lines;
}
