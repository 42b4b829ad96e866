/** Parsing and protocol details checked against small fake servers: references, challenges, credentials, pagination, referrers API, redirects. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MediaType } from '../../src/oci/mediatypes.ts';
import {
  loadCredentials,
  parseChallenges,
  parseRegistryReference,
  RegistryClient,
  removeCredentials,
  saveCredentials,
} from '../../src/registry/index.ts';
import { describe as describeBytes, randomBytesSeeded } from './images.ts';

const servers: http.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

/** A loopback server whose API root answers 200, as a registry's does; `handler` gets every other request. */
async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer((req, res) => (req.url === '/v2/' ? res.end() : handler(req, res)));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('references follow Docker rules', () => {
  assert.deepEqual(parseRegistryReference('docker://debian'), {
    registry: 'docker.io',
    repository: 'library/debian',
    tag: 'latest',
  });
  assert.deepEqual(parseRegistryReference('docker://127.0.0.1:5000/a/b:v1'), {
    registry: '127.0.0.1:5000',
    repository: 'a/b',
    tag: 'v1',
  });
  const d = `sha256:${'a'.repeat(64)}`;
  assert.deepEqual(parseRegistryReference(`localhost/x@${d}`), {
    registry: 'localhost',
    repository: 'x',
    digest: d,
  });
  assert.deepEqual(parseRegistryReference(`quay.io/x/y:t@${d}`), {
    registry: 'quay.io',
    repository: 'x/y',
    tag: 't',
    digest: d,
  });
  for (const bad of [
    'docker://UPPER/x:y',
    'docker://host.io/a:b:c',
    'docker://x@sha256:zz',
    'docker://',
    'docker://a/:t',
  ]) {
    assert.throws(
      () => parseRegistryReference(bad),
      (e: Error & { code?: string; subject?: string }) => e.code === 'REFERENCE_INVALID' && e.subject === bad,
      bad,
    );
  }
});

test('WWW-Authenticate challenges are parsed with quoting and several schemes', () => {
  assert.deepEqual(
    parseChallenges(
      'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example/token',
          service: 'registry.example',
          scope: 'repository:a/b:pull,push',
        },
      },
    ],
  );
  assert.deepEqual(parseChallenges('Basic realm="a \\"quoted\\" realm", Bearer realm=https://t/x'), [
    { scheme: 'basic', params: { realm: 'a "quoted" realm' } },
    { scheme: 'bearer', params: { realm: 'https://t/x' } },
  ]);
  assert.deepEqual(parseChallenges(''), []);
});

test('credentials: config.json entries, credential helpers, login and logout', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'seal-creds-'));
  try {
    const file = join(dir, 'config.json');
    await saveCredentials('reg.example:5000', { username: 'u', password: 'p:w' }, file);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(await loadCredentials('reg.example:5000', file), { username: 'u', password: 'p:w' });
    assert.equal(await loadCredentials('other.example', file), undefined);
    assert.equal(await removeCredentials('reg.example:5000', file), true);
    assert.equal(await loadCredentials('reg.example:5000', file), undefined);

    // A helper, as Docker runs it: `docker-credential-NAME get` with the server on stdin.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'docker-credential-sealtest'),
      `#!/bin/sh\nread server\nif [ "$1" = get ] && [ "$server" = helped.example ]; then echo '{"ServerURL":"helped.example","Username":"hu","Secret":"hs"}'; exit 0; fi\necho "credentials not found in native keychain"; exit 1\n`,
    );
    chmodSync(join(bin, 'docker-credential-sealtest'), 0o755);
    writeFileSync(file, JSON.stringify({ credHelpers: { 'helped.example': 'sealtest' } }));
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      assert.deepEqual(await loadCredentials('helped.example', file), { username: 'hu', password: 'hs' });
      writeFileSync(file, JSON.stringify({ credsStore: 'sealtest' }));
      assert.equal(await loadCredentials('unknown.example', file), undefined);
    } finally {
      process.env.PATH = path;
    }
    writeFileSync(file, '{not json');
    await assert.rejects(
      loadCredentials('x.example', file),
      (e: Error & { code?: string }) => e.code === 'CREDENTIALS',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tag lists follow Link pagination; the referrers API is used when present', async () => {
  const pages: Record<string, { tags: string[]; next?: string }> = {
    '': { tags: ['z', 'b'], next: '/v2/r/tags/list?n=2&last=b' },
    b: { tags: ['a', 'c'], next: '/v2/r/tags/list?n=2&last=c' },
    c: { tags: ['d'] },
  };
  const ref1 = {
    mediaType: MediaType.ImageManifest,
    digest: `sha256:${'1'.repeat(64)}`,
    size: 10,
    artifactType: 'x/sig',
  };
  const ref2 = {
    mediaType: MediaType.ImageManifest,
    digest: `sha256:${'2'.repeat(64)}`,
    size: 11,
    artifactType: 'x/sbom',
  };
  const host = await serve((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v2/r/tags/list') {
      const page = pages[url.searchParams.get('last') ?? ''] as { tags: string[]; next?: string };
      res.writeHead(200, {
        'content-type': 'application/json',
        ...(page.next ? { link: `<${page.next}>; rel="next"` } : {}),
      });
      res.end(JSON.stringify({ name: 'r', tags: page.tags }));
    } else if (url.pathname.startsWith('/v2/r/referrers/')) {
      res.writeHead(200, { 'content-type': MediaType.ImageIndex });
      res.end(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [ref1, ref2] }));
    } else res.writeHead(404).end();
  });
  const client = new RegistryClient(host);
  assert.deepEqual(await client.listTags('r'), ['a', 'b', 'c', 'd', 'z']);
  assert.deepEqual(await client.referrers('r', `sha256:${'9'.repeat(64)}`), [ref1, ref2]);
  assert.deepEqual(await client.referrers('r', `sha256:${'9'.repeat(64)}`, 'x/sbom'), [ref2]);
  client.close();
});

test('redirects to another origin do not carry Authorization; blobs are verified', async () => {
  const blob = randomBytesSeeded(3, 5000);
  const desc = describeBytes('application/octet-stream', blob);
  const seen: (string | undefined)[] = [];
  const storage = await serve((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { 'content-length': String(blob.length) }).end(blob);
  });
  const host = await serve((req, res) => {
    if (req.headers.authorization !== 'Basic dTpw') {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
    } else if (req.url?.startsWith('/v2/r/blobs/')) {
      res.writeHead(307, { location: `http://${storage}/bucket/blob` }).end();
    } else if (req.url?.startsWith('/v2/bad/blobs/')) {
      res.writeHead(200, { 'content-length': String(blob.length) }).end(Buffer.alloc(blob.length));
    } else res.writeHead(404).end();
  });
  const client = new RegistryClient(host, { credentials: { username: 'u', password: 'p' } });
  const chunks: Uint8Array[] = [];
  for await (const chunk of client.getBlob('r', desc)) chunks.push(chunk);
  assert.ok(Buffer.concat(chunks).equals(blob));
  assert.deepEqual(seen, [undefined]);
  await assert.rejects(
    (async () => {
      for await (const _ of client.getBlob('bad', desc));
    })(),
    (e: Error & { code?: string }) => e.code === 'DIGEST_MISMATCH',
  );
  client.close();
});

test('chunked uploads honour OCI-Chunk-Min-Length, send contiguous Content-Ranges and follow every new Location', async () => {
  const blob = randomBytesSeeded(5, 100_000);
  const desc = describeBytes('application/octet-stream', blob);
  const minChunk = 30_000;
  const received: Buffer[] = [];
  const patches: { size: number; range: string | undefined }[] = [];
  let current = '/uploads/0';
  let stored: Buffer | undefined;
  const host = await serve((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      const data = Buffer.concat(body);
      if (req.method === 'HEAD') return res.writeHead(stored ? 200 : 404).end();
      if (req.method === 'POST' && url.pathname === '/v2/r/blobs/uploads/') {
        return res.writeHead(202, { location: current, 'oci-chunk-min-length': String(minChunk) }).end();
      }
      // Only the newest Location is valid: a client reusing an old one gets 404.
      if (url.pathname !== current) return res.writeHead(404).end();
      if (req.method === 'PATCH') {
        patches.push({ size: data.length, range: req.headers['content-range'] });
        received.push(data);
        const end = Buffer.concat(received).length - 1;
        current = `/uploads/${patches.length}`;
        // Absolute this time, relative the next: both must be followed.
        const location = patches.length % 2 ? `http://${req.headers.host}${current}` : current;
        return res.writeHead(202, { location, range: `0-${end}` }).end();
      }
      if (req.method === 'PUT' && url.searchParams.get('digest') === desc.digest) {
        stored = Buffer.concat([...received, data]);
        return res.writeHead(201, { location: `/v2/r/blobs/${desc.digest}` }).end();
      }
      res.writeHead(400).end();
    });
  });
  const client = new RegistryClient(host, { chunkSize: 10_000 });
  const chunks = (async function* () {
    for (let i = 0; i < blob.length; i += 7_000) yield blob.subarray(i, i + 7_000);
  })();
  assert.equal(await client.putBlob('r', desc, chunks), 'uploaded');
  client.close();
  assert.ok(stored?.equals(blob));
  assert.ok(patches.length >= 2, 'uploaded in several chunks');
  let offset = 0;
  for (const [i, p] of patches.entries()) {
    if (i < patches.length - 1) assert.ok(p.size >= minChunk, `chunk ${i} has ${p.size} bytes`);
    assert.equal(p.range, `${offset}-${offset + p.size - 1}`);
    offset += p.size;
  }
  assert.equal(offset, blob.length);
});

test('an interrupted download is resumed with Range, also from a server that ignores Range', async () => {
  const blob = randomBytesSeeded(6, 200_000);
  const desc = describeBytes('application/octet-stream', blob);
  for (const honoursRange of [true, false]) {
    const ranges: (string | undefined)[] = [];
    const host = await serve((req, res) => {
      ranges.push(req.headers.range);
      const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      if (ranges.length === 1) {
        // Half the blob, then the connection drops.
        res.writeHead(200, { 'content-length': String(blob.length) });
        res.write(blob.subarray(0, 80_000), () => res.socket?.destroy());
      } else if (honoursRange && from > 0) {
        res
          .writeHead(206, {
            'content-length': String(blob.length - from),
            'content-range': `bytes ${from}-${blob.length - 1}/${blob.length}`,
          })
          .end(blob.subarray(from));
      } else {
        res.writeHead(200, { 'content-length': String(blob.length) }).end(blob);
      }
    });
    const client = new RegistryClient(host, { retryDelayMs: 1 });
    const chunks: Uint8Array[] = [];
    for await (const chunk of client.getBlob('r', desc)) chunks.push(chunk);
    client.close();
    assert.ok(Buffer.concat(chunks).equals(blob), `range honoured: ${honoursRange}`);
    assert.equal(ranges.length, 2);
    assert.equal(ranges[0], undefined);
    assert.match(ranges[1] ?? '', /^bytes=[1-9]\d*-$/);
  }
});

test('a loopback registry is asked in plain HTTP once, without credentials, and then spoken to in plain HTTP', async () => {
  const seen: string[] = [];
  const expected = `Basic ${Buffer.from('u:p').toString('base64')}`;
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? '-'}`);
    if (req.headers.authorization !== expected)
      res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
    else res.end('{}');
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = new RegistryClient(`127.0.0.1:${(server.address() as AddressInfo).port}`, {
    credentials: { username: 'u', password: 'p' },
  });
  await client.ping();
  client.close();
  assert.deepEqual(seen, ['GET /v2/ -', 'GET /v2/ -', `GET /v2/ ${expected}`]);
});
