/** `seal status` from the agent's records: the good system, a trial and why, this boot, the history. */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { DeviceState } from '../../src/agent/state.ts';
import { formatStatus, readStatus } from '../../src/agent/status.ts';
import { runSeal } from '../helpers/cli.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-status-'));
after(() => rm(work, { recursive: true, force: true }));

const digest = (c: string) => `sha256:${c.repeat(64)}`;

function runDir(name: string, state: DeviceState | string | undefined, boot?: unknown): string {
  const dir = join(work, name);
  mkdirSync(join(dir, 'config'), { recursive: true });
  if (state !== undefined)
    writeFileSync(join(dir, 'config/device.json'), typeof state === 'string' ? state : JSON.stringify(state));
  if (boot !== undefined) writeFileSync(join(dir, 'boot.json'), JSON.stringify(boot));
  return dir;
}

test('a device trying a new UKI: the good system, the trial counted by systemd-boot, the failed step, the history', () => {
  const dir = runDir(
    'trial',
    {
      good: { digest: digest('a'), version: 12, bootEntry: 'seal-12' },
      trial: {
        digest: digest('b'),
        version: 13,
        tag: 'next',
        triesLeft: 1,
        tries: 1,
        reason: 'update from docker://10.0.2.100:5000/device/system:stable',
        bootEntry: 'seal-13',
        lastFailure: 'services not running: counter',
      },
      events: [
        { at: '2026-12-07T05:00:00.000Z', event: 'version 12 confirmed good (was 11); accepted version 12' },
        { at: '2026-12-07T05:01:00.000Z', event: 'version 13 staged (a new UKI): rebooting to try it' },
      ],
    },
    {
      nodeStartedAt: 6.2,
      agentLoadedMs: 1900,
      result: 'refused',
      steps: [
        { step: 'verify the system manifest', start: 10, ms: 500, status: 'ok' },
        {
          step: 'start the services',
          start: 600,
          ms: 3000,
          status: 'failed',
          error: { code: 'AGENT_SERVICE', message: 'services not running: counter' },
        },
      ],
    },
  );
  assert.deepEqual(formatStatus(readStatus(dir)), [
    `system: version 12 (${digest('a')}) is good, boots from seal-12`,
    `trial: version 13 (${digest('b')}), its UKI seal-13 counted by systemd-boot (1 boot); update from docker://10.0.2.100:5000/device/system:stable; last failure: services not running: counter`,
    'this boot: refused, 2 steps; failed at "start the services": services not running: counter',
    '  2026-12-07T05:00:00.000Z version 12 confirmed good (was 11); accepted version 12',
    '  2026-12-07T05:01:00.000Z version 13 staged (a new UKI): rebooting to try it',
  ]);
  const r = runSeal(['status', dir, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout);
  assert.equal(json.state.trial.version, 13);
  assert.equal(json.boot.result, 'refused');
  const text = runSeal(['status', dir, '--events', '1']);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /version 13 staged/);
  assert.doesNotMatch(text.stdout, /version 12 confirmed good/);
});

test('a first boot before any confirmation, and records that cannot be read, report as such', () => {
  assert.deepEqual(formatStatus(readStatus(runDir('empty', undefined))), ['system: none confirmed yet']);
  assert.deepEqual(formatStatus(readStatus(runDir('garbled', '{"good": 3', '[1, 2]'))), [
    'system: none confirmed yet',
  ]);
});
