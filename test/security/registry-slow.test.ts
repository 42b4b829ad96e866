/**
 * Slow servers: a registry trickling bytes (in its headers, a manifest, a blob, a token, a tag
 * list) or one that stops reading an upload is cut off with a typed TIMEOUT error, and a
 * destination store is left exactly as it was. The progress rate is counted only while Seal
 * waits on the server: a copy whose own destination (or source) is slow is not aborted. Windows
 * are tiny here so that the tests are quick; no assertion is about time.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageDestination } from '../../src/oci/transport.ts';
import type { Descriptor } from '../../src/oci/types.ts';
import {
  mirror,
  openRegistryDestination,
  openRegistrySource,
  RegistryClient,
  type RegistryOptions,
} from '../../src/registry/index.ts';
import { openDestination } from '../../src/store/index.ts';
import { MemoryImages, makeImage, writeLayout } from '../registry/images.ts';
import {
  assertCliFailure,
  type FakeRegistry,
  PASSWORD,
  runSealAsync,
  seed,
  snapshot,
  startFakeRegistry,
  stopAll,
  USER,
} from './registry-harness.ts';

let dir: string;
const source = new MemoryImages();
const root = makeImage(source, 33, [200_000, 5_000]);
/** Another image, already in every destination store before a copy is tried. */
const resident = new MemoryImages();
const residentRoot = makeImage(resident, 34, [10_000]);
const manifest = JSON.parse((source.blobs.get(root.digest) as Buffer).toString()) as { layers: Descriptor[] };
const bigLayer = manifest.layers[0] as Descriptor;

/**
 * Fewer than 64 bytes in 150 ms of waiting fails; a trickle of a byte every 30 ms gives about 5.
 * Five attempts are allowed for other failures: a stall is tried only once more.
 */
const SLOW: RegistryOptions = { lowSpeed: { bytes: 64, ms: 150 }, retries: 5, retryDelayMs: 1 };
const TRICKLE_MS = 30;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seal-sec-slow-'));
});
afterEach(stopAll);
after(() => rmSync(dir, { recursive: true, force: true }));

/** Sends `bytes` one at a time, a byte every TRICKLE_MS, until done or the client goes away. */
function trickle(socket: NodeJS.WritableStream & { destroyed: boolean }, bytes: Buffer, from = 0): void {
  let at = from;
  const timer = setInterval(() => {
    if (socket.destroyed || at >= bytes.length) {
      clearInterval(timer);
      return;
    }
    socket.write(bytes.subarray(at, at + 1));
    at++;
  }, TRICKLE_MS);
}

const isTimeout = (pattern?: RegExp) => (e: Error & { code?: string }) => {
  assert.equal(e.code, 'TIMEOUT', e.stack);
  if (pattern) assert.match(e.message, pattern);
  return true;
};

/** A layout store holding the resident image; returns its directory. */
function residentLayout(name: string): string {
  const layout = join(dir, name);
  writeLayout(resident, layout, residentRoot, 'resident');
  return layout;
}

/** Pulls `docker://registry/r:v1` into an existing layout store with `options`. */
async function pullInto(registry: FakeRegistry, layout: string, options: RegistryOptions): Promise<void> {
  const src = await openRegistrySource(`docker://${registry.host}/r:v1`, options);
  const dst = await openDestination(`oci:${layout}:v1`);
  try {
    await mirror(src, dst, { tag: 'v1', attempts: 1 });
    await dst.commit();
  } finally {
    await src.close();
    await dst.close();
  }
}

type Trickler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => boolean;

/** What is trickled, the requests it hits, how many tries each gets (see below), the trickle. */
const TRICKLERS: [string, RegExp, number, Trickler][] = [
  [
    'response headers',
    /manifests\/v1/,
    2,
    (req, res, url) => {
      if (!url.pathname.endsWith('/manifests/v1')) return false;
      req.resume();
      // The status line at once, then the headers a byte at a time.
      res.socket?.write('HTTP/1.1 200 OK\r\n');
      trickle(
        res.socket as never,
        Buffer.from(`content-type: application/json\r\ncontent-length: 2\r\n\r\n{}`),
      );
      return true;
    },
  ],
  [
    'manifest body',
    /manifests\/v1/,
    1,
    (req, res, url) => {
      if (!url.pathname.endsWith('/manifests/v1') || req.method !== 'GET') return false;
      req.resume();
      const bytes = source.blobs.get(root.digest) as Buffer;
      res.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'content-length': bytes.length,
      });
      trickle(res as never, bytes);
      return true;
    },
  ],
  [
    'blob body, after a fast start',
    /blobs\/sha256:/,
    2,
    (req, res, url) => {
      const digest = url.pathname.split('/').pop() ?? '';
      const bytes = source.blobs.get(digest);
      if (!url.pathname.includes('/blobs/') || req.method !== 'GET' || !bytes) return false;
      req.resume();
      res.writeHead(200, { 'content-length': bytes.length });
      // Half at full speed (so a resume with Range follows), then a trickle.
      const half = Math.floor(bytes.length / 2);
      res.write(bytes.subarray(0, half));
      trickle(res as never, bytes, half);
      return true;
    },
  ],
];

test('a server trickling headers, a manifest or blobs: TIMEOUT, and the destination store is unchanged', async () => {
  for (const [what, subject, expectedTries, trickler] of TRICKLERS) {
    const registry = await startFakeRegistry('none');
    seed(registry, source, 'r', 'v1', root.digest);
    registry.hook = trickler;
    const layout = residentLayout(`trickle-${what.replace(/\W+/g, '-')}`);
    const before = snapshot(layout);
    await assert.rejects(pullInto(registry, layout, SLOW), isTimeout(subject), what);
    assert.deepEqual(snapshot(layout), before, `${what}: the store changed`);
    // A request stalled before its answer gets one fresh try, a blob one resume, the body of a
    // document none: never the whole retry budget, nor the copier's on top of it.
    const tries = new Map<string, number>();
    for (const r of registry.requests.filter((r) => r.method === 'GET' && subject.test(r.url)))
      tries.set(r.url, (tries.get(r.url) ?? 0) + 1);
    assert.equal(Math.max(...tries.values()), expectedTries, `${what}: ${JSON.stringify([...tries])}`);
  }
});

test('one stall (headers or body) is forgiven: the request is tried again on a fresh connection, a blob resumed', async () => {
  for (const stallOn of ['manifest headers', 'blob body'] as const) {
    const registry = await startFakeRegistry('none');
    seed(registry, source, 'r', 'v1', root.digest);
    let stalled = false;
    registry.hook = (req, res, url) => {
      if (stalled) return false;
      if (stallOn === 'manifest headers' && url.pathname.endsWith('/manifests/v1') && req.method === 'GET') {
        stalled = true;
        req.resume();
        return true; // never answered
      }
      if (stallOn === 'blob body' && url.pathname.endsWith(bigLayer.digest)) {
        stalled = true;
        req.resume();
        const bytes = source.blobs.get(bigLayer.digest) as Buffer;
        res.writeHead(200, { 'content-length': bytes.length });
        res.write(bytes.subarray(0, 50_000)); // then nothing
        return true;
      }
      return false;
    };
    const layout = residentLayout(`stall-once-${stallOn.replace(/\W+/g, '-')}`);
    await pullInto(registry, layout, SLOW);
    assert.ok(stalled);
    assert.ok(snapshot(layout).has(`blobs/sha256/${bigLayer.digest.slice(7)}`));
    if (stallOn === 'blob body') {
      const gets = registry.requests.filter((r) => r.url.endsWith(bigLayer.digest));
      assert.equal(gets.length, 2);
      assert.match(String(gets[1]?.headers.range), /^bytes=\d+-$/, 'resumed with Range');
    }
  }
});

test('a trickling token server or tag list: TIMEOUT', async () => {
  const registry = await startFakeRegistry('bearer');
  seed(registry, source, 'r', 'v1', root.digest);
  const tokenServer = registry.tokenServer as NonNullable<FakeRegistry['tokenServer']>;
  tokenServer.handler = (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 64 });
    trickle(res as never, Buffer.from(`{"token":"${'t'.repeat(50)}"}`.padEnd(64)));
  };
  const options = { ...SLOW, credentials: { username: USER, password: PASSWORD } };
  let client = new RegistryClient(registry.host, options);
  await assert.rejects(client.listTags('r'), isTimeout(/token/));
  client.close();

  const plain = await startFakeRegistry('none');
  plain.hook = (req, res, url) => {
    if (!url.pathname.endsWith('/tags/list')) return false;
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    trickle(
      res as never,
      Buffer.from('{"name":"r","tags":["a","b","c","d","e","f","g","h","i","j","k","l"]}'),
    );
    return true;
  };
  client = new RegistryClient(plain.host, SLOW);
  await assert.rejects(client.listTags('r'), isTimeout(/tags\/list/));
  client.close();
});

test('an upload the server stops reading (or reads a trickle of): TIMEOUT, the upload cancelled, nothing stored', async () => {
  const big = new MemoryImages();
  // Larger than what the socket buffers of loopback take, so the wait is on a socket that accepts no more.
  makeImage(big, 35, [24 << 20]);
  for (const [what, images, reads] of [
    ['small blob, never read', source, 'never'],
    ['large blob, never read', big, 'never'],
    ['large blob, read a trickle', big, 'trickle'],
    ['chunked upload, never read', big, 'never'],
  ] as const) {
    const registry = await startFakeRegistry('basic');
    registry.hook = (req, _res, url) => {
      if (!registry.authorized(req) || !/^\/v2\/r\/blobs\/uploads\/\d+/.test(url.pathname)) return false;
      if (req.method !== 'PUT' && req.method !== 'PATCH') return false;
      // Neither read nor answered (or read a few bytes at a time): the client must give up.
      req.pause();
      if (reads === 'trickle') {
        const timer = setInterval(() => (req.destroyed ? clearInterval(timer) : req.read(16)), TRICKLE_MS);
      }
      return true;
    };
    const options: RegistryOptions = {
      ...SLOW,
      credentials: { username: USER, password: PASSWORD },
      ...(what.startsWith('chunked') ? { chunkSize: 8 << 20 } : {}),
    };
    const dst = await openRegistryDestination(`docker://${registry.host}/r:v1`, options);
    try {
      await assert.rejects(
        mirror(images, dst, { tag: 'v1', attempts: 1 }),
        isTimeout(/(PUT|PATCH) .*uploads/),
        what,
      );
    } finally {
      await dst.close();
    }
    assert.deepEqual([...registry.images.blobs.keys()], [], `${what}: a blob was stored`);
    assert.deepEqual([...registry.tags.keys()], [], `${what}: something was tagged`);
    assert.ok(
      registry.requests.some((r) => r.method === 'DELETE' && r.url.includes('/blobs/uploads/')),
      `${what}: the upload was not cancelled`,
    );
  }
});

test('the overall deadline stops a server that is steady but too slow', async () => {
  const registry = await startFakeRegistry('none');
  seed(registry, source, 'r', 'v1', root.digest);
  registry.hook = (req, res, url) => {
    if (!url.pathname.endsWith(`/blobs/${bigLayer.digest}`) || req.method !== 'GET') return false;
    req.resume();
    const bytes = source.blobs.get(bigLayer.digest) as Buffer;
    res.writeHead(200, { 'content-length': bytes.length });
    // 1 KiB every 30 ms: fast enough for any low-speed limit, 6 s for the whole blob.
    let at = 0;
    const timer = setInterval(() => {
      if (res.destroyed || at >= bytes.length) return clearInterval(timer);
      res.write(bytes.subarray(at, at + 1024));
      at += 1024;
    }, 30);
    return true;
  };
  const layout = residentLayout('deadline');
  const before = snapshot(layout);
  await assert.rejects(
    pullInto(registry, layout, { lowSpeed: false, timeoutMs: 400, retries: 3, retryDelayMs: 1 }),
    isTimeout(/deadline/),
  );
  const blobs = [...snapshot(layout).keys()].filter((k) => !before.has(k));
  // Smaller blobs may have arrived whole; the slow one did not, and nothing half-written remains.
  assert.ok(!blobs.some((k) => k.endsWith(bigLayer.digest.slice(7))), 'the slow blob was stored');
  for (const k of blobs) assert.ok(/^blobs\/sha256\/[0-9a-f]{64}$/.test(k), `stray file ${k}`);
  for (const k of ['index.json', 'oci-layout']) assert.equal(snapshot(layout).get(k), before.get(k));
});

test('a server that is slow but keeps moving more than the minimum is not cut off', async () => {
  const registry = await startFakeRegistry('none');
  seed(registry, source, 'r', 'v1', root.digest);
  registry.hook = (req, res, url) => {
    if (!url.pathname.endsWith(`/blobs/${bigLayer.digest}`) || req.method !== 'GET') return false;
    req.resume();
    const bytes = source.blobs.get(bigLayer.digest) as Buffer;
    res.writeHead(200, { 'content-length': bytes.length });
    let at = 0;
    const timer = setInterval(() => {
      if (res.destroyed || at >= bytes.length) return clearInterval(timer);
      res.write(bytes.subarray(at, at + 4096));
      at += 4096;
    }, 10);
    return true;
  };
  const layout = residentLayout('steady');
  // 4 KiB every 10 ms against a minimum of 1 KiB per 500 ms.
  await pullInto(registry, layout, { lowSpeed: { bytes: 1024, ms: 500 }, retries: 1 });
  assert.ok(snapshot(layout).has(`blobs/sha256/${bigLayer.digest.slice(7)}`));
  assert.equal(registry.requests.filter((r) => r.url.endsWith(bigLayer.digest)).length, 1, 'no retry');
});

/** Passes a blob stream on, sleeping before each of its first `slowChunks` chunks: Seal's own side is slow. */
async function* dawdle(
  data: AsyncIterable<Uint8Array>,
  slowChunks: number,
  ms: number,
): AsyncGenerator<Uint8Array> {
  let n = 0;
  for await (const chunk of data) {
    if (n++ < slowChunks) await sleep(ms);
    yield chunk;
  }
}

/** A destination that takes its time with every blob (a slow disk, a slow second registry). */
function slowDestination(inner: ImageDestination, ms: number): ImageDestination {
  return {
    name: `slow ${inner.name}`,
    hasBlob: (desc) => inner.hasBlob(desc),
    putBlob: (desc, data) => inner.putBlob(desc, dawdle(data, 3, ms)),
    putManifest: (desc, bytes, tag) => inner.putManifest(desc, bytes, tag),
    commit: () => inner.commit(),
    close: () => inner.close(),
  };
}

test('back-pressure: a slow destination does not make the registry source look slow, nor a slow source the registry destination', async () => {
  // Any byte restarts the window; Seal's side pauses three times as long as the window, three times.
  const strict: RegistryOptions = { lowSpeed: { bytes: 1, ms: 300 }, retries: 1 };
  const registry = await startFakeRegistry('none');
  seed(registry, source, 'r', 'v1', root.digest);
  const layout = residentLayout('back-pressure');
  const src = await openRegistrySource(`docker://${registry.host}/r:v1`, strict);
  const dst = await openDestination(`oci:${layout}:v1`);
  try {
    await mirror(src, slowDestination(dst, 900), { tag: 'v1', attempts: 1 });
    await dst.commit();
  } finally {
    await src.close();
    await dst.close();
  }
  assert.ok(snapshot(layout).has(`blobs/sha256/${bigLayer.digest.slice(7)}`));
  assert.equal(registry.requests.filter((r) => r.url.endsWith(bigLayer.digest)).length, 1, 'no retry');

  // The other way: a slow source feeding an upload.
  const slowSource = Object.assign(Object.create(source) as MemoryImages, {
    getBlob: (desc: Descriptor) => dawdle(source.getBlob(desc), 3, 900),
  });
  const target = await startFakeRegistry('none');
  const up = await openRegistryDestination(`docker://${target.host}/r:v1`, strict);
  try {
    await mirror(slowSource, up, { tag: 'v1', attempts: 1 });
  } finally {
    await up.close();
  }
  assert.equal(target.tags.get('r:v1'), root.digest);
  assert.equal(
    target.requests.filter((r) => r.method === 'PUT' && decodeURIComponent(r.url).includes(bigLayer.digest))
      .length,
    1,
  );
});

test('CLI: --timeout and --low-speed (shared or per side) cut a trickling registry off with one TIMEOUT line', async () => {
  const registry = await startFakeRegistry('none');
  seed(registry, source, 'r', 'v1', root.digest);
  registry.hook = TRICKLERS[1]?.[3];
  const env = { REGISTRY_AUTH_FILE: join(dir, 'none.json'), DOCKER_CONFIG: join(dir, 'no-docker') };
  for (const flags of [
    ['--timeout', '1s', '--low-speed', '64/150ms'],
    ['--src-timeout', '1s', '--src-low-speed', '64/150ms', '--dest-low-speed', 'off'],
    ['--timeout=800ms', '--low-speed', 'off'],
  ]) {
    const layout = residentLayout(`cli-${flags.join('').replace(/\W+/g, '')}`);
    const before = snapshot(layout);
    const r = await runSealAsync(
      ['copy', ...flags, `docker://${registry.host}/r:v1`, `oci:${layout}:v1`],
      env,
    );
    assertCliFailure(r, 'TIMEOUT', /manifests\/v1/);
    assert.deepEqual(snapshot(layout), before);
  }
  for (const [flag, value] of [
    ['--timeout', 'soon'],
    ['--timeout', '-1s'],
    ['--low-speed', '16KiB'],
    ['--low-speed', 'x/1s'],
    ['--low-speed', '1KiB/0s'],
    ['--src-low-speed', '0/1s'],
  ] as const) {
    const r = await runSealAsync(
      ['copy', flag, value, `docker://${registry.host}/r:v1`, `oci:${join(dir, 'never')}`],
      env,
    );
    assert.equal(r.status, 2, `${flag} ${value}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(flag));
  }
});
