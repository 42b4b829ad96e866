/** Mutated registry answers (headers, JSON bodies, manifests) end in a typed error or a valid result: never a crash or a hang. */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { SealError } from '../../src/errors.ts';
import { MediaType } from '../../src/oci/mediatypes.ts';
import {
  mirror,
  openRegistrySource,
  parseChallenges,
  parseRegistryReference,
  RegistryClient,
} from '../../src/registry/index.ts';
import { MemoryImages, makeImage } from './images.ts';

/** xorshift32, so every run mutates the same way. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function mutate(input: Buffer, random: () => number): Buffer {
  const out = Buffer.from(input);
  const edits = 1 + Math.floor(random() * 4);
  let result = out;
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(random() * result.length);
    const kind = random();
    if (kind < 0.5) result[at] = Math.floor(random() * 256);
    else if (kind < 0.7) result = result.subarray(0, at);
    else if (kind < 0.85)
      result = Buffer.concat([
        result.subarray(0, at),
        result.subarray(at, at + Math.floor(random() * 16)),
        result.subarray(at),
      ]);
    else
      result = Buffer.concat([
        result.subarray(0, at),
        Buffer.from([[34, 44, 123, 125, 91, 93, 58][Math.floor(random() * 7)] as number]),
        result.subarray(at),
      ]);
  }
  return result;
}

function expectTyped(error: unknown): void {
  assert.ok(error instanceof SealError, `untyped failure: ${(error as Error)?.stack ?? error}`);
}

test('reference and challenge parsers on 3000 mutated inputs', () => {
  const random = prng(1);
  const refs = ['docker://127.0.0.1:5000/a/b:v1', `quay.io/x/y@sha256:${'a'.repeat(64)}`, 'localhost/z'];
  const challenges = [
    'Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"',
    'Basic realm="x", Bearer realm=y',
  ];
  for (let i = 0; i < 3000; i++) {
    const ref = mutate(Buffer.from(refs[i % refs.length] as string), random).toString('latin1');
    try {
      const parsed = parseRegistryReference(ref);
      assert.equal(typeof parsed.repository, 'string');
    } catch (error) {
      expectTyped(error);
    }
    const header = mutate(Buffer.from(challenges[i % challenges.length] as string), random).toString(
      'latin1',
    );
    for (const c of parseChallenges(header)) assert.equal(typeof c.scheme, 'string');
  }
});

let host: string;
let server: http.Server;
let body: Buffer = Buffer.alloc(0);
let wwwAuthenticate: string | undefined;
const images = new MemoryImages();
const root = makeImage(images, 9, [100]);

before(async () => {
  server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (wwwAuthenticate !== undefined && !req.headers.authorization && !url.startsWith('/token')) {
      res.writeHead(401, { 'www-authenticate': wwwAuthenticate }).end();
      return;
    }
    if (url.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    const type = url.includes('/referrers/')
      ? MediaType.ImageIndex
      : url.includes('/manifests/')
        ? MediaType.ImageManifest
        : 'application/json';
    const blob = url.match(/\/blobs\/(sha256:[0-9a-f]{64})/);
    const payload = blob ? (images.blobs.get(blob[1] as string) ?? Buffer.alloc(0)) : body;
    res.writeHead(200, { 'content-type': type, 'content-length': String(payload.length) }).end(payload);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

test('client on 1500 mutated tag lists, referrers indexes, manifests, challenges and token answers', async () => {
  const random = prng(2);
  const tagList = Buffer.from(JSON.stringify({ name: 'r', tags: ['a', 'b', 'c'] }));
  const referrers = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [root] }),
  );
  const manifest = images.blobs.get(root.digest) as Buffer;
  const token = Buffer.from(JSON.stringify({ token: 'abc', expires_in: 60 }));
  const client = new RegistryClient(host, { retries: 1, credentials: { username: 'u', password: 'p' } });
  for (let i = 0; i < 1500; i++) {
    const kind = i % 4;
    wwwAuthenticate = undefined;
    try {
      if (kind === 0) {
        body = mutate(tagList, random);
        await client.listTags('r');
      } else if (kind === 1) {
        body = mutate(referrers, random);
        await client.referrers('r', root.digest);
      } else if (kind === 2) {
        body = mutate(manifest, random);
        const src = await openRegistrySource(`docker://${host}/r:t`, { retries: 1 });
        try {
          await mirror(src, new MemoryImages());
        } finally {
          await src.close();
        }
      } else {
        // A fresh client each time, so the challenge is parsed and a token fetched anew.
        // The host stays intact so that no mutation sends the client to the outside world.
        wwwAuthenticate = `Bearer realm="http://${host}/${mutate(
          Buffer.from('token",service="s",scope="x"'),
          random,
        )
          .toString('latin1')
          // Only what HTTP can carry in a header.
          .replace(/[^\t\x20-\x7e\x80-\xff]/g, '?')}`;
        body = mutate(token, random);
        const fresh = new RegistryClient(host, { retries: 1 });
        try {
          await fresh.listTags('r');
        } finally {
          fresh.close();
        }
      }
    } catch (error) {
      expectTyped(error);
    }
  }
  client.close();
});
