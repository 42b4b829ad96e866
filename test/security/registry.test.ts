/**
 * Credentials go only to the registry's own origin (scheme, host, port). Each test plays an
 * attacker who controls some answer of the registry — an upload Location, a Link to the next
 * page, a redirect, a challenge, a realm — and points it at recording servers on other origins;
 * the recorders then show that no password, Basic header or token reached them, and the
 * operation either succeeds without the credentials there or fails with a typed error.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import {
  mirror,
  openRegistrySource,
  RegistryClient,
  type RegistryOptions,
} from '../../src/registry/index.ts';
import { makeTestPki, type TestPki } from '../registry/harness.ts';
import { MemoryImages, makeImage, pushImages, writeLayout } from '../registry/images.ts';
import {
  type AuthMode,
  assertCliFailure,
  assertNoCredentials,
  BASIC,
  type FakeRegistry,
  PASSWORD,
  type Recorder,
  runSealAsync,
  seed,
  startFakeRegistry,
  startRecorder,
  startTokenServer,
  stopAll,
  type TlsFiles,
  USER,
} from './registry-harness.ts';

let dir: string;
let pki: TestPki;
let tls: TlsFiles;
let caDir: string;
const source = new MemoryImages();
const root = makeImage(source, 21, [40_000, 3_000]);
const MODES: AuthMode[] = ['basic', 'bearer'];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'seal-sec-registry-'));
  mkdirSync(join(dir, 'pki'));
  pki = makeTestPki(join(dir, 'pki'));
  tls = { cert: pki.serverCert, key: pki.serverKey };
  caDir = join(dir, 'ca');
  mkdirSync(caDir);
  copyFileSync(pki.caCert, join(caDir, 'ca.crt'));
});
afterEach(stopAll);
after(() => rmSync(dir, { recursive: true, force: true }));

const creds = (extra: RegistryOptions = {}): RegistryOptions => ({
  credentials: { username: USER, password: PASSWORD },
  retries: 2,
  retryDelayMs: 1,
  ...extra,
});

async function pull(ref: string, options: RegistryOptions): Promise<MemoryImages> {
  const src = await openRegistrySource(ref, options);
  const into = new MemoryImages();
  try {
    await mirror(src, into, {});
  } finally {
    await src.close();
  }
  return into;
}

function assertComplete(pulled: MemoryImages): void {
  assert.deepEqual([...pulled.blobs.keys()].sort(), [...source.blobs.keys()].sort());
}

const hasCode = (code: string, pattern?: RegExp) => (e: Error & { code?: string }) => {
  assert.equal(e.code, code, e.stack);
  if (pattern) assert.match(e.message, pattern);
  return true;
};

/** Every Authorization the registry got was its own (its Basic header, or a token its own server issued). */
function assertOnlyOwnCredentials(registry: FakeRegistry): void {
  for (const r of registry.requests) {
    const given = r.headers.authorization;
    if (given === undefined) continue;
    const own =
      given === BASIC || (given.startsWith('Bearer ') && registry.tokenServer?.tokens.has(given.slice(7)));
    assert.ok(own, `the registry got a foreign credential: ${given}`);
  }
}

/** A storage server on another origin: serves the registry's blobs, takes uploads, all without auth. */
async function startStorage(
  registry: FakeRegistry,
  tlsFiles?: TlsFiles,
): Promise<Recorder & { stored: Map<string, Buffer> }> {
  const stored = new Map<string, Buffer>();
  const parts: Buffer[] = [];
  const storage = await startRecorder((req, res, url) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'GET' || req.method === 'HEAD') {
        const bytes = registry.images.blobs.get(url.pathname.split('/').pop() ?? '');
        if (!bytes) return res.writeHead(404).end();
        res.writeHead(200, { 'content-length': bytes.length }).end(req.method === 'HEAD' ? undefined : bytes);
        return;
      }
      parts.push(Buffer.concat(chunks));
      if (req.method === 'PATCH')
        return res.writeHead(202, { location: url.pathname, 'content-length': 0 }).end();
      if (req.method === 'PUT') {
        stored.set(url.searchParams.get('digest') ?? '', Buffer.concat(parts.splice(0)));
        return res.writeHead(201, { 'content-length': 0 }).end();
      }
      res.writeHead(204).end();
    });
  }, tlsFiles);
  return Object.assign(storage, { stored });
}

/** A server that answers everything with 401 and a challenge naming `realm`. */
function challenger(realm: string, scheme: 'bearer' | 'basic' = 'bearer'): Recorder['handler'] {
  return (req, res) => {
    req.resume();
    res
      .writeHead(401, {
        'www-authenticate':
          scheme === 'bearer'
            ? `Bearer realm="${realm}",service="evil-service",scope="repository:r:pull,push"`
            : 'Basic realm="evil"',
        'content-type': 'application/json',
      })
      .end('{"errors":[{"code":"UNAUTHORIZED"}]}');
  };
}

/** Only token requests the registry's own challenge asked for: its service, never the attacker's. */
function assertTokenRequestsAreOwn(registry: FakeRegistry): void {
  for (const r of registry.tokenServer?.requests ?? []) {
    const service = new URL(r.url, 'http://x').searchParams.get('service');
    assert.equal(service, 'fake-registry', `a token was asked for another challenge: ${r.url}`);
  }
}

test('control: Bearer and Basic pulls and pushes work; the realm on a third origin gets the password, the storage nothing', async () => {
  for (const mode of MODES) {
    const registry = await startFakeRegistry(mode);
    const storage = await startStorage(registry);
    seed(registry, source, 'r', 'v1', root.digest);
    // Blob downloads are redirected to the storage server, as registries on object stores do.
    registry.hook = (req, res, url) => {
      if (req.method !== 'GET' || !url.pathname.includes('/blobs/sha256:') || !registry.authorized(req))
        return false;
      req.resume();
      res.writeHead(307, { location: `${storage.origin}/bucket/${url.pathname.split('/').pop()}` }).end();
      return true;
    };
    assertComplete(await pull(`docker://${registry.host}/r:v1`, creds()));
    await pushImages(source, `docker://${registry.host}/pushed:v1`, creds());
    assert.equal(registry.tags.get('pushed:v1'), root.digest);
    assert.ok(storage.requests.length >= 2, 'blobs came from the storage server');
    assertNoCredentials(storage, registry.secrets());
    assertOnlyOwnCredentials(registry);
    if (mode === 'bearer') {
      const tokenServer = registry.tokenServer as Recorder;
      assert.ok(tokenServer.requests.length > 0);
      assert.ok(tokenServer.requests.every((r) => r.headers.authorization === BASIC));
      assert.ok(registry.requests.some((r) => r.headers.authorization?.startsWith('Bearer tok-')));
      // The token server is sent the password, never a token.
      for (const token of registry.tokenServer?.tokens ?? [])
        assert.ok(!JSON.stringify(tokenServer.requests).includes(token));
    }
  }
});

test('push: an upload Location on another origin gets the blob, never the credentials', async () => {
  for (const mode of MODES) {
    for (const variant of ['other port', 'scheme-relative', 'other host name', 'chunked', 'mount'] as const) {
      const registry = await startFakeRegistry(mode);
      const storage = await startStorage(registry);
      let redirected = 0;
      registry.hook = (req, res, url) => {
        // Blobs are kept per registry here, not per repository: the new repository must look empty.
        if (variant === 'mount' && req.method === 'HEAD' && url.pathname.startsWith('/v2/pushed/blobs/')) {
          res.writeHead(404, { 'content-length': 0 }).end();
          return true;
        }
        if (!registry.authorized(req) || req.method !== 'POST' || !url.pathname.endsWith('/blobs/uploads/')) {
          // The same server reached under another name: must be anonymous there.
          if (variant === 'other host name' && req.headers.host?.startsWith('localhost:')) {
            // Plays the storage there: takes the upload.
            req.resume();
            res.writeHead(req.method === 'PUT' ? 201 : 204, { 'content-length': 0 }).end();
            return true;
          }
          if (variant === 'chunked' && req.method === 'PATCH' && registry.authorized(req)) {
            req.resume();
            redirected++;
            res.writeHead(202, { location: `${storage.origin}/upload/patched`, 'content-length': 0 }).end();
            return true;
          }
          return false;
        }
        if (variant === 'chunked') return false;
        if (variant === 'mount' && !url.searchParams.has('mount')) return false;
        req.resume();
        redirected++;
        const location =
          variant === 'scheme-relative'
            ? `//${storage.host}/upload/${redirected}`
            : variant === 'other host name'
              ? `http://localhost:${registry.port}/elsewhere/${redirected}`
              : `${storage.origin}/upload/${redirected}`;
        res.writeHead(202, { location, 'content-length': 0 }).end();
        return true;
      };
      const options = creds(variant === 'chunked' ? { chunkSize: 16_384 } : {});
      if (variant === 'mount') {
        // A blob seen in another repository is mounted from it: the registry answers 202 and a Location.
        seed(registry, source, 'other', 'v1', root.digest);
        await pull(`docker://${registry.host}/other:v1`, options);
      }
      await pushImages(source, `docker://${registry.host}/pushed:v1`, options);
      assert.ok(redirected > 0, `${mode} ${variant}: the attack fired`);
      if (variant !== 'other host name')
        assert.ok(storage.requests.length > 0, `${mode} ${variant}: the upload went to the other origin`);
      assertNoCredentials(storage, registry.secrets(), `${mode} ${variant}: the storage`);
      const underOtherName = registry.requests.filter((r) => r.headers.host?.startsWith('localhost:'));
      assert.deepEqual(
        underOtherName.filter((r) => r.headers.authorization !== undefined).map((r) => r.url),
        [],
        `${mode} ${variant}: credentials sent to localhost:${registry.port}`,
      );
      if (variant === 'other host name') assert.ok(underOtherName.length > 0);
      assertOnlyOwnCredentials(registry);
    }
  }
});

test('push: a 401 from the upload Location is UNAUTHORIZED; neither its realm nor the registry realm is asked for it', async () => {
  for (const mode of MODES) {
    for (const realmOf of ['attacker', 'registry'] as const) {
      const registry = await startFakeRegistry(mode);
      const evilRealm = await startTokenServer();
      const realm = realmOf === 'attacker' || mode === 'basic' ? `${evilRealm.origin}/token` : registry.realm;
      const evil = await startRecorder(challenger(realm));
      registry.hook = (req, res, url) => {
        if (!registry.authorized(req) || req.method !== 'POST' || !url.pathname.endsWith('/blobs/uploads/'))
          return false;
        req.resume();
        res.writeHead(202, { location: `${evil.origin}/upload`, 'content-length': 0 }).end();
        return true;
      };
      await assert.rejects(
        pushImages(source, `docker://${registry.host}/pushed:v1`, creds()),
        hasCode('UNAUTHORIZED', /not by the registry/),
      );
      assert.ok(evil.requests.length > 0, 'the upload was tried');
      assertNoCredentials(evil, registry.secrets());
      assert.deepEqual(evilRealm.requests, [], 'the attacker realm was contacted');
      assertTokenRequestsAreOwn(registry);
      assertOnlyOwnCredentials(registry);
    }
  }
});

test('push to an HTTPS registry: an upload Location in plain HTTP is refused before anything is sent', async () => {
  for (const mode of MODES) {
    const registry = await startFakeRegistry(mode, tls);
    const evil = await startRecorder();
    registry.hook = (req, res, url) => {
      if (!registry.authorized(req) || req.method !== 'POST' || !url.pathname.endsWith('/blobs/uploads/'))
        return false;
      req.resume();
      // The same host and port, only the scheme differs: the blob would cross the network in the clear.
      const location = `http://127.0.0.1:${evil.port}/upload`;
      res.writeHead(202, { location, 'content-length': 0 }).end();
      return true;
    };
    await assert.rejects(
      pushImages(source, `docker://${registry.host}/pushed:v1`, creds({ certDir: caDir })),
      hasCode('PROTOCOL', /upload Location in plain HTTP/),
    );
    assert.deepEqual(evil.requests, []);
    assertOnlyOwnCredentials(registry);
  }
});

/** Link targets on other origins, given the registry and a recorder. */
function foreignLinks(registry: Recorder, evil: Recorder, path: string): [string, string][] {
  return [
    ['other port', `${evil.origin}${path}`],
    ['scheme-relative', `//${evil.host}${path}`],
    ['other host name', `http://localhost:${registry.port}${path}`],
    ['user info', `http://${USER}:x@${evil.host}${path}`],
    ['https on the same port', `https://localhost:${registry.port}${path}`],
  ];
}

test('tags and referrers: a Link rel=next to another origin is refused, nothing of its answer is merged', async () => {
  for (const mode of MODES) {
    const registry = await startFakeRegistry(mode);
    const evil = await startRecorder((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"name":"r","tags":["planted"]}');
    });
    seed(registry, source, 'r', 'v1', root.digest);
    for (const [variant, link] of foreignLinks(registry, evil, '/v2/r/tags/list?last=v1')) {
      registry.hook = (req, res, url) => {
        if (!registry.authorized(req) || req.headers.host?.startsWith('localhost')) return false;
        if (url.pathname === '/v2/r/tags/list') {
          res.writeHead(200, { 'content-type': 'application/json', link: `<${link}>; rel="next"` });
          res.end('{"name":"r","tags":["v1"]}');
          return true;
        }
        if (url.pathname.startsWith('/v2/r/referrers/')) {
          res.writeHead(200, {
            'content-type': 'application/vnd.oci.image.index.v1+json',
            link: `<${link}>; rel="next"`,
          });
          res.end('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}');
          return true;
        }
        return false;
      };
      const client = new RegistryClient(registry.host, creds());
      try {
        await assert.rejects(
          client.listTags('r'),
          hasCode('PROTOCOL', /continues on another origin/),
          variant,
        );
        await assert.rejects(
          client.referrers('r', root.digest),
          hasCode('PROTOCOL', /continues on another origin/),
          variant,
        );
      } finally {
        client.close();
      }
    }
    assert.deepEqual(evil.requests, [], 'a foreign page was fetched');
    assert.deepEqual(
      registry.requests.filter((r) => r.headers.host?.startsWith('localhost')),
      [],
      'the registry was asked under another name',
    );
    assertOnlyOwnCredentials(registry);
  }
});

test('blob and manifest GETs redirected to another origin that answers 401: UNAUTHORIZED, no realm contacted, no foreign token', async () => {
  for (const mode of MODES) {
    for (const challenge of ['attacker realm', 'registry realm', 'basic'] as const) {
      for (const target of ['blob', 'manifest'] as const) {
        const registry = await startFakeRegistry(mode);
        seed(registry, source, 'r', 'v1', root.digest);
        const evilRealm = await startTokenServer();
        const realm =
          challenge === 'registry realm' && registry.realm ? registry.realm : `${evilRealm.origin}/token`;
        const evil = await startRecorder(challenger(realm, challenge === 'basic' ? 'basic' : 'bearer'));
        registry.hook = (req, res, url) => {
          const hit =
            target === 'blob'
              ? url.pathname.includes('/blobs/sha256:')
              : url.pathname.includes('/manifests/');
          if (!registry.authorized(req) || req.method !== 'GET' || !hit) return false;
          req.resume();
          res.writeHead(307, { location: `${evil.origin}${url.pathname}` }).end();
          return true;
        };
        await assert.rejects(
          pull(`docker://${registry.host}/r:v1`, creds()),
          hasCode('UNAUTHORIZED', /not by the registry/),
          `${mode} ${challenge} ${target}`,
        );
        assert.ok(evil.requests.length > 0);
        assertNoCredentials(evil, registry.secrets());
        assert.deepEqual(
          evilRealm.requests,
          [],
          `${mode} ${challenge} ${target}: the attacker realm was contacted`,
        );
        assert.deepEqual(evilRealm.tokens.size, 0);
        assertTokenRequestsAreOwn(registry);
        assertOnlyOwnCredentials(registry);
      }
    }
  }
});

test('a redirect that comes back to the registry after another origin carries no credentials there either', async () => {
  for (const mode of MODES) {
    for (const back of ['anonymous storage path', 'protected path'] as const) {
      const registry = await startFakeRegistry(mode);
      seed(registry, source, 'r', 'v1', root.digest);
      const evil = await startRecorder((req, res, url) => {
        req.resume();
        const to = back === 'protected path' ? url.pathname.replace('/hop', '') : `/storage${url.pathname}`;
        res.writeHead(307, { location: `http://${registry.host}${to}` }).end();
      });
      registry.hook = (req, res, url) => {
        if (url.pathname.startsWith('/storage/')) {
          // Served without auth, as a registry's own storage path could be.
          const bytes = registry.images.blobs.get(url.pathname.split('/').pop() ?? '');
          req.resume();
          res.writeHead(bytes ? 200 : 404, { 'content-length': bytes?.length ?? 0 }).end(bytes);
          return true;
        }
        if (!registry.authorized(req) || req.method !== 'GET' || !url.pathname.includes('/blobs/sha256:'))
          return false;
        req.resume();
        res.writeHead(307, { location: `${evil.origin}/hop${url.pathname}` }).end();
        return true;
      };
      if (back === 'anonymous storage path') {
        assertComplete(await pull(`docker://${registry.host}/r:v1`, creds()));
      } else {
        await assert.rejects(pull(`docker://${registry.host}/r:v1`, creds()), hasCode('UNAUTHORIZED'));
      }
      assertNoCredentials(evil, registry.secrets());
      // Every request the registry got after a hop elsewhere came without credentials.
      const afterHop = registry.requests.filter(
        (r) =>
          r.url.startsWith('/storage/') ||
          (back === 'protected path' && r.headers.authorization === undefined && r.url.includes('/blobs/')),
      );
      assert.ok(afterHop.length > 0, `${mode} ${back}: the hop back happened`);
      assert.ok(afterHop.every((r) => r.headers.authorization === undefined));
      assertOnlyOwnCredentials(registry);
    }
  }
});

test('an HTTPS registry whose Bearer realm is plain HTTP: refused, with or without credentials, the realm never contacted', async () => {
  for (const where of ['third origin', 'same host'] as const) {
    for (const withCreds of [true, false]) {
      const registry = await startFakeRegistry('bearer', tls);
      const plainRealm = await startTokenServer();
      registry.realm =
        where === 'third origin' ? `${plainRealm.origin}/token` : `http://127.0.0.1:${plainRealm.port}/token`;
      const options = withCreds ? creds({ certDir: caDir }) : { certDir: caDir, retries: 1 };
      await assert.rejects(
        pull(`docker://${registry.host}/r:v1`, options),
        hasCode('PROTOCOL', /token realm in plain HTTP/),
      );
      assert.deepEqual(plainRealm.requests, []);
    }
  }
  // The same registry with its HTTPS realm on a third origin works: that is how Bearer auth is meant.
  const registry = await startFakeRegistry('bearer', tls);
  seed(registry, source, 'r', 'v1', root.digest);
  assertComplete(await pull(`docker://${registry.host}/r:v1`, creds({ certDir: caDir })));
  assert.ok(registry.tokenServer?.origin.startsWith('https://'));
  assert.ok((registry.tokenServer?.requests.length ?? 0) > 0);
});

test('a copy between two registries: the source token and password never reach the destination, nor the reverse', async () => {
  for (const mode of MODES) {
    const a = await startFakeRegistry(mode);
    const b = await startFakeRegistry(mode === 'basic' ? 'bearer' : 'basic');
    seed(a, source, 'r', 'v1', root.digest);
    const src = await openRegistrySource(`docker://${a.host}/r:v1`, creds());
    const { openRegistryDestination } = await import('../../src/registry/index.ts');
    const dst = await openRegistryDestination(`docker://${b.host}/copied:v1`, {
      credentials: { username: USER, password: PASSWORD },
    });
    try {
      await mirror(src, dst, { tag: 'v1' });
    } finally {
      await src.close();
      await dst.close();
    }
    assert.equal(b.tags.get('copied:v1'), root.digest);
    // Same user and password on both sides (the worst case): only tokens could leak, and none does.
    const tokensOf = (r: FakeRegistry) => [...(r.tokenServer?.tokens ?? [])];
    assertOnlyOwnCredentials(a);
    assertOnlyOwnCredentials(b);
    const seenBy = (r: FakeRegistry) => JSON.stringify(r.requests);
    for (const token of tokensOf(a)) assert.ok(!seenBy(b).includes(token));
    for (const token of tokensOf(b)) assert.ok(!seenBy(a).includes(token));
  }
});

test('CLI: --creds and --authfile (shared and per side) keep the credentials on the registry under every attack', async () => {
  const layout = join(dir, 'layout');
  writeLayout(source, layout, root, 'v1');
  const authfile = join(dir, 'auth.json');
  writeFileSync(authfile, JSON.stringify({ auths: {} }));
  const withAuthfile = (registry: FakeRegistry) =>
    writeFileSync(
      authfile,
      JSON.stringify({
        auths: { [registry.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } },
      }),
    );
  const env = { REGISTRY_AUTH_FILE: join(dir, 'none.json'), DOCKER_CONFIG: join(dir, 'no-docker') };
  for (const mode of MODES) {
    // ls-tags with --creds: Link to another origin.
    let registry = await startFakeRegistry(mode);
    let evil = await startRecorder();
    seed(registry, source, 'r', 'v1', root.digest);
    registry.hook = (req, res, url) => {
      if (!registry.authorized(req) || url.pathname !== '/v2/r/tags/list') return false;
      res.writeHead(200, {
        'content-type': 'application/json',
        link: `<${evil.origin}/v2/r/tags/list?last=v1>; rel="next"`,
      });
      res.end('{"name":"r","tags":["v1"]}');
      return true;
    };
    let r = await runSealAsync(
      ['ls-tags', '--creds', `${USER}:${PASSWORD}`, `docker://${registry.host}/r`],
      env,
    );
    assertCliFailure(r, 'PROTOCOL', /another origin/);
    assert.deepEqual(evil.requests, []);

    // copy from the registry with --src-authfile: blob redirected to a 401 with a realm of the attacker's.
    registry = await startFakeRegistry(mode);
    seed(registry, source, 'r', 'v1', root.digest);
    const evilRealm = await startTokenServer();
    evil = await startRecorder(challenger(`${evilRealm.origin}/token`));
    registry.hook = (req, res, url) => {
      if (!registry.authorized(req) || !url.pathname.includes('/blobs/sha256:')) return false;
      req.resume();
      res.writeHead(307, { location: `${evil.origin}${url.pathname}` }).end();
      return true;
    };
    withAuthfile(registry);
    const out = join(dir, `pulled-${mode}`);
    r = await runSealAsync(
      ['copy', '--src-authfile', authfile, `docker://${registry.host}/r:v1`, `oci:${out}:v1`],
      env,
    );
    assertCliFailure(r, 'UNAUTHORIZED', /not by the registry/);
    assertNoCredentials(evil, registry.secrets());
    assert.deepEqual(evilRealm.requests, []);

    // push with --dest-creds: the upload Location on another origin gets the blobs without credentials.
    registry = await startFakeRegistry(mode);
    const storage = await startStorage(registry);
    registry.hook = (req, res, url) => {
      if (!registry.authorized(req) || req.method !== 'POST' || !url.pathname.endsWith('/blobs/uploads/'))
        return false;
      req.resume();
      res.writeHead(202, { location: `${storage.origin}/upload`, 'content-length': 0 }).end();
      return true;
    };
    r = await runSealAsync(
      [
        'copy',
        '--dest-creds',
        `${USER}:${PASSWORD}`,
        `oci:${layout}:v1`,
        `docker://${registry.host}/pushed:v1`,
      ],
      env,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.ok(storage.stored.size > 0);
    assertNoCredentials(storage, registry.secrets());

    // push with --authfile: the Location's 401 is not followed.
    registry = await startFakeRegistry(mode);
    evil = await startRecorder(challenger(`${evilRealm.origin}/token`));
    registry.hook = (req, res, url) => {
      if (!registry.authorized(req) || req.method !== 'POST' || !url.pathname.endsWith('/blobs/uploads/'))
        return false;
      req.resume();
      res.writeHead(202, { location: `${evil.origin}/upload`, 'content-length': 0 }).end();
      return true;
    };
    withAuthfile(registry);
    r = await runSealAsync(
      ['copy', '--authfile', authfile, `oci:${layout}:v1`, `docker://${registry.host}/pushed:v1`],
      env,
    );
    assertCliFailure(r, 'UNAUTHORIZED');
    assertNoCredentials(evil, registry.secrets());
    assert.deepEqual(evilRealm.requests, []);
    assertOnlyOwnCredentials(registry);
  }
});
