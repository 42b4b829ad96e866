/**
 * Pushing and pulling a several-layer Debian image over loopback through Debian's
 * docker-registry, with Seal (`bin/seal copy`, as a user runs it) and with `skopeo copy`, in one
 * run: median of seven rounds, the two tools taking turns in each round so that both see the
 * same machine, a fresh registry for every command so nothing is already there and skopeo's
 * blob cache cannot skip uploads. Times are of the whole command, process start included.
 * Prints time ratios.
 *   node bench/registry.ts [DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLayout } from '../test/helpers/layout.ts';
import { startRegistry } from '../test/registry/harness.ts';
import { median, timed } from './timing.ts';

const dir = process.argv[2] ?? execFileSync('bash', ['scripts/corpus.sh'], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'bench-registry-'));

type Registry = Awaited<ReturnType<typeof startRegistry>>;

/** A layer per part of the root filesystem: /usr, /var and /etc, the rest. */
function tarOf(...paths: string[]): Buffer {
  return execFileSync('tar', ['-C', dir, '--numeric-owner', '--sort=name', '-cf', '-', ...paths], {
    maxBuffer: 1 << 30,
  });
}

const ROUNDS = 7;

/** One timed command against a registry of its own (started and prepared outside the timing). */
async function once(prepare: (r: Registry) => void, run: (r: Registry) => void): Promise<number> {
  const registry = await startRegistry('none');
  try {
    prepare(registry);
    return await timed(() => run(registry));
  } finally {
    await registry.stop();
  }
}

const row = (name: string, seal: number, skopeo: number) =>
  console.log(
    `${name.padEnd(9)} ${seal.toFixed(2).padStart(8)} ${skopeo.toFixed(2).padStart(10)} ${(seal / skopeo).toFixed(2).padStart(7)}`,
  );

try {
  const layout = join(work, 'layout');
  const rest = execFileSync('ls', ['-A', dir], { encoding: 'utf8' })
    .split('\n')
    .filter((n) => n && !['usr', 'var', 'etc'].includes(n));
  writeLayout(layout, [tarOf('usr'), tarOf('var', 'etc'), tarOf(...rest)], 'debian');
  const seal = (...args: string[]) => execFileSync('bin/seal', args, { stdio: 'ignore' });
  const skopeo = (...args: string[]) => execFileSync('skopeo', args, { stdio: 'ignore' });
  const nothing = () => {};
  const push = (r: Registry) => seal('copy', `oci:${layout}:debian`, `docker://${r.host}/debian:1`);
  const fresh = (name: string) => {
    rmSync(join(work, name), { recursive: true, force: true });
    return join(work, name);
  };

  const cases: Record<string, [prepare: (r: Registry) => void, run: (r: Registry) => void]> = {
    sealPush: [nothing, push],
    skopeoPush: [
      nothing,
      (r) => skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:debian`, `docker://${r.host}/debian:1`),
    ],
    sealPull: [push, (r) => seal('copy', `docker://${r.host}/debian:1`, `oci:${fresh('pull-seal')}:x`)],
    skopeoPull: [
      push,
      (r) =>
        skopeo(
          'copy',
          '--src-tls-verify=false',
          `docker://${r.host}/debian:1`,
          `oci:${fresh('pull-skopeo')}:x`,
        ),
    ],
  };
  const times: Record<string, number[]> = { sealPush: [], skopeoPush: [], sealPull: [], skopeoPull: [] };
  for (let round = 0; round < ROUNDS; round++) {
    // Who goes first alternates, so that neither tool always inherits the other's aftermath.
    const pairs = [
      ['sealPush', 'skopeoPush'],
      ['sealPull', 'skopeoPull'],
    ].map((pair) => (round % 2 ? pair.reverse() : pair));
    for (const name of pairs.flat()) times[name]!.push(await once(...cases[name]!));
  }
  const [sealPush, skopeoPush, sealPull, skopeoPull] = [
    median(times.sealPush!),
    median(times.skopeoPush!),
    median(times.sealPull!),
    median(times.skopeoPull!),
  ];
  const size = execFileSync('du', ['-sb', join(layout, 'blobs')], { encoding: 'utf8' }).split('\t')[0];
  const start = process.hrtime.bigint();
  seal('--version');
  const startup = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(
    `input: ${dir} as 3 gzip layers, ${size} bytes of blobs; seal's process start alone ${startup.toFixed(2)} s`,
  );
  console.log('direction   seal s   skopeo s   ratio');
  row('push', sealPush, skopeoPush);
  row('pull', sealPull, skopeoPull);
} finally {
  rmSync(work, { recursive: true, force: true });
}
