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

async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
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
