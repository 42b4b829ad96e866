/**
 * Pushing and pulling the Debian root filesystem over loopback through Debian's docker-registry,
 * in one run, with Seal (`bin/seal copy`, as a user runs it), with `skopeo copy`, and with the
 * least any Node.js program does for the same (bench/registry-floor.mjs), which shows what of
 * Seal's time is Node.js itself. Two images: the root filesystem as four layers of comparable
 * size (/usr/share, /usr/lib, the rest of /usr, the rest), and as one layer, the shape of
 * Docker's official debian image. Seven rounds, the tools taking turns in each (who goes first
 * rotates), a fresh registry for every command so nothing is already there and skopeo's blob
 * cache cannot skip uploads. Times are of the whole command, process start included. Prints the
 * medians and the median of the per-round ratios to skopeo.
 *   node bench/registry.ts [DIR]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLayout } from '../test/helpers/layout.ts';
import { startRegistry } from '../test/registry/harness.ts';
import { median, timed } from './timing.ts';

const dir = process.argv[2] ?? execFileSync('bash', ['scripts/corpus.sh'], { encoding: 'utf8' }).trim();
const work = mkdtempSync(join(tmpdir(), 'bench-registry-'));

type Registry = Awaited<ReturnType<typeof startRegistry>>;

/** A tar of `paths` (relative to the root filesystem). */
function tarOf(...paths: string[]): Buffer {
  return execFileSync('tar', ['-C', dir, '--numeric-owner', '--sort=name', '-cf', '-', ...paths], {
    maxBuffer: 1 << 30,
  });
}

const entries = (sub: string) => readdirSync(join(dir, sub)).sort();

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

const run = (command: string, ...args: string[]) => execFileSync(command, args, { stdio: 'ignore' });
const TOOLS = ['seal', 'skopeo', 'floor'] as const;
type Tool = (typeof TOOLS)[number];

/**
 * Median times of pushing `layout` and pulling it back with each tool, and each one's median
 * ratio to skopeo over the rounds (the machine's speed drifts between rounds; one round's ratio
 * is steadier).
 */
async function measure(layout: string) {
  const ref = (r: Registry) => `${r.host}/debian:1`;
  const fresh = (name: string) => {
    rmSync(join(work, name), { recursive: true, force: true });
    return join(work, name);
  };
  const push: Record<Tool, (r: Registry) => void> = {
    seal: (r) => run('bin/seal', 'copy', `oci:${layout}:debian`, `docker://${ref(r)}`),
    skopeo: (r) =>
      run('skopeo', 'copy', '--dest-tls-verify=false', `oci:${layout}:debian`, `docker://${ref(r)}`),
    floor: (r) => run(process.execPath, 'bench/registry-floor.mjs', 'push', layout, ref(r)),
  };
  const pull: Record<Tool, (r: Registry) => void> = {
    seal: (r) => run('bin/seal', 'copy', `docker://${ref(r)}`, `oci:${fresh('pull-seal')}:x`),
    skopeo: (r) =>
      run('skopeo', 'copy', '--src-tls-verify=false', `docker://${ref(r)}`, `oci:${fresh('pull-skopeo')}:x`),
    floor: (r) => run(process.execPath, 'bench/registry-floor.mjs', 'pull', ref(r), fresh('pull-floor')),
  };
  const noTimes = () => Object.fromEntries(TOOLS.map((t) => [t, [] as number[]])) as Record<Tool, number[]>;
  const times = { push: noTimes(), pull: noTimes() };
  for (let round = 0; round < ROUNDS; round++) {
    // Who goes first rotates, so that no tool always inherits another's aftermath.
    const order = TOOLS.map((_, i) => TOOLS[(i + round) % TOOLS.length]!);
    for (const tool of order) times.push[tool].push(await once(() => {}, push[tool]));
    for (const tool of order) times.pull[tool].push(await once(push.seal, pull[tool]));
  }
  return Object.entries(times).map(([direction, byTool]) => ({
    direction,
    ...Object.fromEntries(
      TOOLS.map((tool) => [
        tool,
        {
          time: median(byTool[tool]),
          ratio: median(byTool[tool].map((t, i) => t / byTool.skopeo[i]!)),
        },
      ]),
    ),
  })) as ({ direction: string } & Record<Tool, { time: number; ratio: number }>)[];
}

try {
  const rest = (sub: string, but: string[]) => entries(sub).filter((n) => !but.includes(n));
  const shapes: [name: string, layers: Buffer[]][] = [
    [
      '4 layers',
      [
        tarOf('usr/share'),
        tarOf('usr/lib'),
        tarOf(...rest('usr', ['share', 'lib']).map((n) => `usr/${n}`)),
        tarOf(...rest('', ['usr'])),
      ],
    ],
    ['1 layer', [tarOf(...entries(''))]],
  ];
  const start = process.hrtime.bigint();
  run('bin/seal', '--version');
  const startup = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`input: ${dir}; seal's process start alone ${startup.toFixed(2)} s`);
  console.log('floor: the least any Node.js program does (bench/registry-floor.mjs); ratios are to skopeo');
  console.log('image      direction     bytes   skopeo s   seal s  ratio   floor s  ratio');
  for (const [name, layers] of shapes) {
    const layout = join(work, name.replace(' ', '-'));
    writeLayout(layout, layers, 'debian');
    const size = execFileSync('du', ['-sb', join(layout, 'blobs')], { encoding: 'utf8' }).split('\t')[0]!;
    for (const { direction, skopeo, seal, floor } of await measure(layout)) {
      const cell = (x: { time: number; ratio: number }) =>
        `${x.time.toFixed(2).padStart(8)} ${x.ratio.toFixed(2).padStart(6)}`;
      console.log(
        `${name.padEnd(10)} ${direction.padEnd(9)} ${size.padStart(9)} ${skopeo.time.toFixed(2).padStart(10)} ${cell(seal)}  ${cell(floor)}`,
      );
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
