/**
 * Every JSON document Seal reads from an input, fuzzed: index.json and oci-layout of a layout,
 * image manifests, indexes and configs, system manifests, Project Machine install manifests,
 * docker-save manifest.json, and registry credentials files. Mutants are byte flips,
 * truncations and structural swaps (a value replaced by null, a number, a string, an array, an
 * object, a huge or nested value). Each reader either accepts the document or throws its typed
 * error — never a SyntaxError or TypeError.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SealError } from '../../src/errors.ts';
import { parseMachineInstall } from '../../src/manifest/machine.ts';
import { parseSystemManifest } from '../../src/manifest/spec.ts';
import { parseConfig, parseManifestOrIndex } from '../../src/oci/validate.ts';
import { loadCredentials } from '../../src/registry/credentials.ts';
import { LayoutStore, openSource } from '../../src/store/index.ts';
import { fileEntry, tarOf, writeLayout } from '../helpers/layout.ts';
import { prng } from '../helpers/trees.ts';
import { scratch } from './helpers.ts';

const work = scratch('json-fuzz');
after(() => rmSync(work, { recursive: true, force: true }));
const random = prng(4242);

const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;

/** A random JSON value of the kinds that break readers assuming a shape. */
function randomValue(depth = 0): unknown {
  const kinds = [
    () => null,
    () => Math.floor(random() * 2 ** 53) * (random() < 0.5 ? -1 : 1),
    () => 1e308 * 10,
    () => random(),
    () => '',
    () => 'x'.repeat(Math.floor(random() * 300)),
    () => `sha256:${'a'.repeat(64)}`,
    () => '../../etc/passwd',
    () => '\u0000\n\u001b[2J',
    () => true,
    () => [],
    () => ({}),
    () => (depth < 3 ? [randomValue(depth + 1), randomValue(depth + 1)] : 0),
    () =>
      depth < 3
        ? { digest: randomValue(depth + 1), size: randomValue(depth + 1), mediaType: randomValue(depth + 1) }
        : 0,
  ];
  return pick(kinds)();
}

/** Every path to a value inside `doc`. */
function paths(doc: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(doc)) for (const [i, v] of doc.entries()) out.push(...paths(v, [...prefix, i]));
  else if (doc && typeof doc === 'object')
    for (const [k, v] of Object.entries(doc)) out.push(...paths(v, [...prefix, k]));
  return out;
}

/** One mutant of the JSON text of `doc`. */
function mutate(doc: unknown): Buffer {
  const text = JSON.stringify(doc);
  const r = random();
  if (r < 0.25) {
    const bytes = Buffer.from(text);
    for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++)
      bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
    return bytes;
  }
  if (r < 0.35) return Buffer.from(text.slice(0, Math.floor(random() * text.length)));
  const copy = JSON.parse(text) as unknown;
  const path = pick(paths(copy));
  if (path.length === 0) return Buffer.from(JSON.stringify(randomValue()));
  let parent = copy as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (random() < 0.2 && !Array.isArray(parent)) delete parent[last];
  else parent[last] = randomValue();
  return Buffer.from(JSON.stringify(copy));
}

/** Runs `read` on `cases` mutants of `doc`; every failure must be a SealError. Returns the refusal count. */
async function fuzz(
  what: string,
  doc: unknown,
  cases: number,
  read: (bytes: Buffer) => unknown,
): Promise<number> {
  let refused = 0;
  for (let i = 0; i < cases; i++) {
    const bytes = mutate(doc);
    try {
      await read(bytes);
    } catch (error) {
      assert.ok(
        error instanceof SealError,
        `${what} case ${i} (${bytes.toString('latin1').slice(0, 200)}): ${(error as Error).stack}`,
      );
      refused++;
    }
  }
  assert.ok(refused > cases / 10, `${what}: only ${refused} of ${cases} refused`);
  return refused;
}

const descriptor = (n: number) => ({
  mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
  digest: `sha256:${String(n).repeat(64).slice(0, 64)}`,
  size: 100 + n,
});
const MANIFEST = {
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: `sha256:${'c'.repeat(64)}`,
    size: 7,
  },
  layers: [descriptor(1), descriptor(2)],
  subject: descriptor(3),
  annotations: { 'org.opencontainers.image.title': 'x' },
};
const INDEX = {
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.index.v1+json',
  manifests: [
    { ...descriptor(4), mediaType: MANIFEST.mediaType, platform: { architecture: 'amd64', os: 'linux' } },
  ],
};
const CONFIG = {
  architecture: 'amd64',
  os: 'linux',
  config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], User: '0:0' },
  rootfs: { type: 'layers', diff_ids: [`sha256:${'d'.repeat(64)}`] },
  history: [{ created_by: 'x' }],
};

test('image manifests, indexes and configs', async () => {
  await fuzz('manifest', MANIFEST, 1500, (b) => parseManifestOrIndex(b, 'm'));
  await fuzz('index', INDEX, 1500, (b) => parseManifestOrIndex(b, 'i'));
  await fuzz('config', CONFIG, 1500, (b) => parseConfig(b, 'c'));
});

test('system manifests and Project Machine install manifests', async () => {
  const system = {
    schemaVersion: 1,
    product: '6f1c3d2e-0000-4000-8000-000000000001',
    version: 7,
    update_type: 'upgrade',
    targets: [
      { name: 'host', role: 'host', image: descriptor(5) },
      {
        name: 'web',
        role: 'service',
        image: descriptor(6),
        service: { command: ['/bin/httpd'], volumes: [{ name: 'data', path: '/srv' }] },
      },
    ],
  };
  await fuzz('system manifest', system, 1500, (b) => parseSystemManifest(b, 's'));
  const machine = { version: 3, product: 'p', targets: [{ service_name: 'a', ...descriptor(7) }] };
  await fuzz('install.json', machine, 1000, (b) => parseMachineInstall(b, 'i'));
});

test('index.json and oci-layout of a layout', async () => {
  const dir = join(work, 'layout');
  writeLayout(dir, [await tarOf([fileEntry('f', 'x')])], 't');
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        ...descriptor(8),
        mediaType: MANIFEST.mediaType,
        annotations: { 'org.opencontainers.image.ref.name': 't' },
      },
    ],
  };
  await fuzz('index.json', index, 1500, async (b) => {
    writeFileSync(join(dir, 'index.json'), b);
    const store = await LayoutStore.open(dir);
    await store.list();
    await store.resolve('t').catch((error) => {
      if (!(error instanceof SealError)) throw error;
    });
  });
  await fuzz('oci-layout', { imageLayoutVersion: '1.0.0' }, 500, async (b) => {
    writeFileSync(join(dir, 'oci-layout'), b);
    await LayoutStore.open(dir);
  });
});

test('registry credentials files', async () => {
  const file = join(work, 'auth.json');
  const auth = {
    auths: {
      'r.example': { auth: Buffer.from('u:p').toString('base64') },
      'other.example': { username: 'a', password: 'b' },
    },
    credHelpers: { 'h.example': 'pass' },
  };
  await fuzz('auth.json', auth, 1500, async (b) => {
    writeFileSync(file, b);
    // Hosts whose entries are plain: a mutant never makes Seal run a program it names.
    await loadCredentials('r.example', file);
    await loadCredentials('other.example', file);
  });
});

test('docker-save manifest.json', async () => {
  const layer = (await tarOf([fileEntry('f', 'x')])).toString('latin1');
  const config = JSON.stringify({ ...CONFIG, rootfs: { type: 'layers', diff_ids: [] } });
  const doc = [{ Config: 'c.json', RepoTags: ['a:b'], Layers: ['l/layer.tar'] }];
  const dir = join(work, 'save');
  mkdirSync(join(dir, 'l'), { recursive: true });
  writeFileSync(join(dir, 'c.json'), config);
  writeFileSync(join(dir, 'l/layer.tar'), layer, 'latin1');
  await fuzz('manifest.json', doc, 150, async (b) => {
    writeFileSync(join(dir, 'manifest.json'), b);
    const archive = join(work, 'save.tar');
    const { execFileSync } = await import('node:child_process');
    execFileSync('tar', ['-C', dir, '-cf', archive, '.']);
    const src = await openSource(`docker-archive:${archive}`);
    await src.close();
  });
});
