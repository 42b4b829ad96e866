/**
 * Servers for the registry security tests, all plain node:http(s) on 127.0.0.1 and stopped by
 * the tests: a recording server (every request it gets, headers and all, to prove that no
 * credential reached it), a token server, and a small in-memory registry whose every answer a
 * test can take over to play the attacker.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/mediatypes.ts';
import { SEAL_BIN } from '../helpers/cli.ts';
import { MemoryImages } from '../registry/images.ts';

export const USER = 'alice';
export const PASSWORD = 'hunter2-very-secret-password';
export const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

export interface Recorded {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface Recorder {
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  /** `http://127.0.0.1:PORT` (or https). */
  origin: string;
  requests: Recorded[];
  /** What to answer; by default 404. */
  handler: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;
  stop(): Promise<void>;
}

export interface TlsFiles {
  cert: string;
  key: string;
}

const everyServer = new Set<Recorder>();

/** Stops every server the harness started (for an `after` hook). */
export async function stopAll(): Promise<void> {
  await Promise.all([...everyServer].map((s) => s.stop()));
}

/** A server that records every request (method, URL, all headers) before `handler` answers it. */
export async function startRecorder(handler?: Recorder['handler'], tls?: TlsFiles): Promise<Recorder> {
  const recorder: Recorder = {
    host: '',
    port: 0,
    origin: '',
    requests: [],
    handler:
      handler ??
      ((req, res) => {
        req.resume();
        res.writeHead(404).end();
      }),
    stop: async () => {},
  };
  const listener: http.RequestListener = (req, res) => {
    recorder.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    // A client that gave up may leave a half-sent answer behind: that is no failure of the test.
    res.on('error', () => {});
    req.on('error', () => {});
    Promise.resolve(recorder.handler(req, res, new URL(req.url ?? '/', 'http://x'))).catch(() =>
      res.destroy(),
    );
  };
  const server = tls
    ? https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, listener)
    : http.createServer(listener);
  server.on('clientError', (_, socket) => socket.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  recorder.port = port;
  recorder.host = `127.0.0.1:${port}`;
  recorder.origin = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  let stopped: Promise<void> | undefined;
  recorder.stop = () => {
    stopped ??= new Promise<void>((r) => {
      everyServer.delete(recorder);
      server.closeAllConnections();
      server.close(() => r());
    });
    return stopped;
  };
  everyServer.add(recorder);
  return recorder;
}

/** Every header value and URL a recorder got, as one text to search for secrets. */
function seenText(recorder: Recorder): string {
  return recorder.requests
    .map((r) => `${r.method} ${r.url}\n${Object.values(r.headers).flat().join('\n')}`)
    .join('\n');
}

/**
 * Asserts that none of `secrets` (a password, a Basic header, tokens) reached `recorder` in any
 * header or URL, and that no request it got carried `Authorization` at all.
 */
export function assertNoCredentials(recorder: Recorder, secrets: string[], what = recorder.origin): void {
  const text = seenText(recorder);
  for (const secret of secrets) assert.ok(!text.includes(secret), `${what} received a credential: ${secret}`);
  const carrying = recorder.requests.filter((r) => r.headers.authorization !== undefined);
  assert.deepEqual(
    carrying.map((r) => `${r.method} ${r.url}`),
    [],
    `${what} received Authorization`,
  );
}

/** A token server in the manner of Docker's: Basic credentials in, a fresh random token out. */
export async function startTokenServer(tls?: TlsFiles): Promise<Recorder & { tokens: Set<string> }> {
  const tokens = new Set<string>();
  const server = await startRecorder((req, res) => {
    req.resume();
    if (req.headers.authorization !== BASIC) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const token = `tok-${randomBytes(12).toString('hex')}`;
    tokens.add(token);
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ token, expires_in: 300 }));
  }, tls);
  return Object.assign(server, { tokens });
}

export type AuthMode = 'none' | 'basic' | 'bearer';

export interface FakeRegistry extends Recorder {
  images: MemoryImages;
  /** `repo:tag` → manifest digest. */
  tags: Map<string, string>;
  tokenServer: (Recorder & { tokens: Set<string> }) | undefined;
  /** The realm the challenge names (the token server's by default). */
  realm: string;
  /** Takes a request over before the registry answers it: returns true when it answered. */
  hook: ((req: http.IncomingMessage, res: http.ServerResponse, url: URL) => boolean) | undefined;
  /** Every credential a client of this registry holds: password, Basic header, tokens issued. */
  secrets(): string[];
  /** Whether a request carries this registry's credentials. */
  authorized(req: http.IncomingMessage): boolean;
}

const ROUTE = /^\/v2\/(.+?)\/(manifests|blobs|tags|referrers)\/(.*)$/;

function readAll(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * A small distribution-spec registry in memory (manifests, blobs, uploads with PATCH, tags,
 * an empty referrers API) behind Basic or Bearer auth, with a hook for hostile answers.
 */
export async function startFakeRegistry(auth: AuthMode, tls?: TlsFiles): Promise<FakeRegistry> {
  const tokenServer = auth === 'bearer' ? await startTokenServer(tls) : undefined;
  const images = new MemoryImages('fake');
  const tags = new Map<string, string>();
  const uploads = new Map<string, Buffer[]>();
  let nextUpload = 0;
  const recorder = await startRecorder(undefined, tls);
  const registry = Object.assign(recorder, {
    images,
    tags,
    tokenServer,
    realm: tokenServer ? `${tokenServer.origin}/token` : '',
    hook: undefined,
    secrets: () => [
      PASSWORD,
      BASIC,
      Buffer.from(`${USER}:${PASSWORD}`).toString('base64'),
      ...(tokenServer?.tokens ?? []),
    ],
    authorized: (req: http.IncomingMessage) => {
      const given = req.headers.authorization;
      if (auth === 'none') return true;
      if (auth === 'basic') return given === BASIC;
      return given?.startsWith('Bearer ') === true && (tokenServer?.tokens.has(given.slice(7)) ?? false);
    },
  }) as FakeRegistry;
  const challenge = () =>
    auth === 'basic' ? 'Basic realm="fake"' : `Bearer realm="${registry.realm}",service="fake-registry"`;
  const json = (res: http.ServerResponse, status: number, value: unknown, headers = {}) => {
    const body = Buffer.from(JSON.stringify(value));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length, ...headers });
    res.end(body);
  };
  registry.handler = async (req, res, url) => {
    if (registry.hook?.(req, res, url)) return;
    if (!registry.authorized(req)) {
      req.resume();
      json(
        res,
        401,
        { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] },
        {
          'www-authenticate': challenge(),
        },
      );
      return;
    }
    const body = await readAll(req);
    const path = url.pathname;
    if (path === '/v2/') return json(res, 200, {});
    const upload = /^\/v2\/(.+?)\/blobs\/uploads\/([^/]*)$/.exec(path);
    if (upload) {
      const [, repo, id] = upload as unknown as [string, string, string];
      if (req.method === 'POST' && id === '') {
        const fresh = String(nextUpload++);
        uploads.set(fresh, []);
        res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${fresh}`, 'content-length': 0 }).end();
        return;
      }
      const parts = uploads.get(id);
      if (!parts) return json(res, 404, { errors: [{ code: 'BLOB_UPLOAD_UNKNOWN' }] });
      parts.push(body);
      if (req.method === 'PATCH') {
        res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${id}`, 'content-length': 0 }).end();
        return;
      }
      if (req.method === 'PUT') {
        const data = Buffer.concat(parts);
        const digest = url.searchParams.get('digest');
        if (digest !== digestOf(data)) return json(res, 400, { errors: [{ code: 'DIGEST_INVALID' }] });
        images.blobs.set(digest, data);
        uploads.delete(id);
        res.writeHead(201, { location: `/v2/${repo}/blobs/${digest}`, 'content-length': 0 }).end();
        return;
      }
      if (req.method === 'DELETE') {
        uploads.delete(id);
        res.writeHead(204).end();
        return;
      }
    }
    const route = ROUTE.exec(path);
    if (!route) return json(res, 404, { errors: [{ code: 'NOT_FOUND' }] });
    const [, repo, kind, rest] = route as unknown as [string, string, string, string];
    if (kind === 'tags') {
      const list = [...tags.keys()]
        .filter((k) => k.startsWith(`${repo}:`))
        .map((k) => k.slice(repo.length + 1));
      return json(res, 200, { name: repo, tags: list.sort() });
    }
    if (kind === 'referrers') {
      return json(
        res,
        200,
        { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: [] },
        {
          'content-type': MediaType.ImageIndex,
        },
      );
    }
    if (kind === 'manifests') {
      const digest = rest.startsWith('sha256:') ? rest : tags.get(`${repo}:${rest}`);
      if (req.method === 'PUT') {
        const stored = digestOf(body);
        images.blobs.set(stored, body);
        if (!rest.startsWith('sha256:')) tags.set(`${repo}:${rest}`, stored);
        res.writeHead(201, { 'docker-content-digest': stored, 'content-length': 0 }).end();
        return;
      }
      const bytes = digest ? images.blobs.get(digest) : undefined;
      if (!bytes || !digest) return json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN' }] });
      const type =
        (JSON.parse(bytes.toString()) as { mediaType?: string }).mediaType ?? MediaType.ImageManifest;
      res.writeHead(200, {
        'content-type': type,
        'docker-content-digest': digest,
        'content-length': bytes.length,
      });
      res.end(req.method === 'HEAD' ? undefined : bytes);
      return;
    }
    const bytes = images.blobs.get(rest);
    if (!bytes) {
      res.writeHead(404, { 'content-length': 0 }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
    res.end(req.method === 'HEAD' ? undefined : bytes);
  };
  return registry;
}

/** Puts an image (every blob of `source`, `root` tagged) straight into a fake registry. */
export function seed(
  registry: FakeRegistry,
  source: MemoryImages,
  repo: string,
  tag: string,
  root: string,
): void {
  for (const [digest, bytes] of source.blobs) registry.images.blobs.set(digest, bytes);
  registry.tags.set(`${repo}:${tag}`, root);
}

/** Runs the real `seal` without blocking the event loop, so that in-process servers can answer it. */
export function runSealAsync(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(SEAL_BIN, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/** Every file under `dir` with its size and digest, to show that a failed command changed nothing. */
export function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = join(rel, name);
      const st = statSync(join(dir, path));
      if (st.isDirectory()) walk(path);
      else out.set(path, `${st.size} ${digestOf(readFileSync(join(dir, path)))}`);
    }
  };
  walk('');
  return out;
}

/** Asserts a one-line CLI failure ending in `[CODE]`. */
export function assertCliFailure(
  r: { status: number; stderr: string },
  code: string,
  pattern?: RegExp,
): void {
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`\\[${code}\\]$`, 'm'));
  if (pattern) assert.match(r.stderr, pattern);
}
