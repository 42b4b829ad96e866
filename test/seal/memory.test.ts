/**
 * `seal image verify` — what a device runs on every layer before it boots or switches to it —
 * within the device memory budget on the real Debian image, sealed per layer as squashfs and
 * EROFS and flattened into one EROFS: the peak resident set of the whole process, measured
 * from outside. A layer three times the size does not cost more.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';
import { writeDebianLayout } from '../helpers/corpus.ts';
import { DEVICE_MEMORY_BUDGET, megabytes, runSealMeasured } from '../helpers/memory.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-memory-'));
after(() => rm(work, { recursive: true, force: true }));

test('image verify of the sealed Debian image stays within the device budget', (t) => {
  const layout = join(work, 'layout');
  writeDebianLayout(layout, 'debian');
  const cases = [
    ['squashfs', []],
    ['erofs', []],
    ['erofs', ['--flatten']],
  ] as const;
  const peaks: number[] = [];
  for (const [format, extra] of cases) {
    const tag = `${format}${extra.length ? '-flat' : ''}`;
    const sealed = runSeal([
      'image',
      'seal',
      `oci:${layout}:debian`,
      `oci:${layout}:${tag}`,
      '--format',
      format,
      ...extra,
    ]);
    assert.equal(sealed.status, 0, sealed.stderr);
    const r = runSealMeasured(['image', 'verify', `oci:${layout}:${tag}`, '--json'], {
      warmup: ['image', 'verify', `oci:${layout}:${tag}`],
    });
    assert.equal(r.status, 0, r.stderr);
    const layers = JSON.parse(r.stdout).layers as { dataBlocks: number }[];
    const blocks = layers.reduce((n, l) => n + l.dataBlocks, 0);
    assert.ok(blocks > 10_000, `${tag}: a real image (${blocks} blocks)`);
    t.diagnostic(`${tag}: ${megabytes(r.peakBytes)} verifying ${blocks} blocks`);
    assert.ok(
      r.peakBytes <= DEVICE_MEMORY_BUDGET,
      `${tag}: image verify peaked at ${megabytes(r.peakBytes)}, over ${megabytes(DEVICE_MEMORY_BUDGET)}`,
    );
    peaks.push(r.peakBytes);
  }
  // The EROFS layer is about three times the squashfs one: the peak does not follow it.
  assert.ok(
    Math.max(...peaks) - Math.min(...peaks) <= Math.min(...peaks) * 0.1,
    peaks.map(megabytes).join(', '),
  );
});
