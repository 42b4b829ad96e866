/**
 * Test servers: Debian's docker-registry in three setups (no auth, htpasswd Basic, token auth
 * with a token server of ours), optionally over TLS with a throwaway CA (and client
 * certificates), and a fault-injecting proxy. Everything listens on 127.0.0.1
 * and is stopped by `stop()`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createSign, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export type AuthSetup = 'none' | 'basic' | 'token';

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  /** Its storage: blobs are at data/docker/registry/v2/blobs/sha256/XX/HEX/data. */
  dir: string;
  auth: AuthSetup;
  username: string;
  password: string;
  /** Scopes the token server was asked for, one entry per token request. */
  tokenRequests: string[][];
  stop(): Promise<void>;
}

export const USERNAME = 'sealtest';
export const PASSWORD = 'correct horse battery staple';

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  const port = await listen(server);
  await new Promise((r) => server.close(r));
  return port;
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/** A token server in the manner of Docker's: Basic credentials in, a signed JWT granting the asked scopes out. */
async function startTokenServer(
  dir: string,
  service: string,
  issuer: string,
  tokenRequests: string[][],
  user: { username: string; password: string },
) {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(dir, 'token.key'),
      '-out',
      join(dir, 'token.crt'),
      '-days',
      '2',
      '-subj',
      '/CN=seal test token issuer',
    ],
    { stdio: 'ignore' },
  );
  const key = readFileSync(join(dir, 'token.key'), 'utf8');
  const certDer = new X509Certificate(readFileSync(join(dir, 'token.crt'))).raw;
  const expected = `Basic ${Buffer.from(`${user.username}:${user.password}`).toString('base64')}`;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const scopes = url.searchParams.getAll('scope');
    tokenRequests.push(scopes);
    const access = scopes.map((scope) => {
      const [type, name, actions] = scope.split(':') as [string, string, string];
      return { type, name, actions: actions.split(',') };
    });
    const now = Math.floor(Date.now() / 1000);
    const head = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] }));
    const claims = b64url(
      JSON.stringify({
        iss: issuer,
        sub: user.username,
        aud: url.searchParams.get('service') ?? service,
        exp: now + 300,
        nbf: now - 10,
        iat: now,
        jti: randomBytes(8).toString('hex'),
        access,
      }),
    );
    const signature = createSign('RSA-SHA256').update(`${head}.${claims}`).sign(key).toString('base64url');
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ token: `${head}.${claims}.${signature}`, expires_in: 300 }));
  });
  const port = await listen(server);
  return { port, stop: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A throwaway PKI made with openssl: a CA, a server certificate for 127.0.0.1/localhost, a client certificate. */
export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

export function makeTestPki(dir: string): TestPki {
  const path = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    path('ca.key'),
    '-out',
    path('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=Seal test CA',
  );
  const issue = (name: string, subject: string, extensions: string) => {
    writeFileSync(path(`${name}.ext`), extensions);
    openssl('req', ...ec, '-keyout', path(`${name}.key`), '-out', path(`${name}.csr`), '-subj', subject);
    openssl(
      'x509',
      '-req',
      '-in',
      path(`${name}.csr`),
      '-CA',
      path('ca.pem'),
      '-CAkey',
      path('ca.key'),
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      path(`${name}.ext`),
      '-out',
      path(`${name}.pem`),
    );
  };
  issue(
    'server',
    '/CN=127.0.0.1',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  issue('client', '/CN=seal test client', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    caCert: path('ca.pem'),
    serverCert: path('server.pem'),
    serverKey: path('server.key'),
    clientCert: path('client.pem'),
    clientKey: path('client.key'),
  };
}

export interface RegistrySetup {
  /** Serve HTTPS with this certificate; with `clientCa`, demand client certificates it issued. */
  tls?: { certificate: string; key: string; clientCa?: string };
  /** The one user of basic or token auth (default USERNAME, PASSWORD). */
  user?: { username: string; password: string };
}

export async function startRegistry(auth: AuthSetup, setup: RegistrySetup = {}): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'seal-registry-'));
  const port = await freePort();
  const tokenRequests: string[][] = [];
  const { username, password } = setup.user ?? { username: USERNAME, password: PASSWORD };
  let authYaml = '';
  let tokenServer: { port: number; stop: () => Promise<void> } | undefined;
  if (auth === 'basic') {
    const line = execFileSync('htpasswd', ['-Bbn', username, password], { encoding: 'utf8' }).trim();
    writeFileSync(join(dir, 'htpasswd'), `${line}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: seal-test\n    path: ${join(dir, 'htpasswd')}\n`;
  } else if (auth === 'token') {
    tokenServer = await startTokenServer(dir, 'seal-test-registry', 'seal-test-issuer', tokenRequests, {
      username,
      password,
    });
    authYaml = `auth:\n  token:\n    realm: http://127.0.0.1:${tokenServer.port}/token\n    service: seal-test-registry\n    issuer: seal-test-issuer\n    rootcertbundle: ${join(dir, 'token.crt')}\n`;
  }
  const { tls } = setup;
  const tlsYaml = tls
    ? `  tls:\n    certificate: ${tls.certificate}\n    key: ${tls.key}\n${tls.clientCa ? `    clientcas:\n      - ${tls.clientCa}\n` : ''}`
    : '';
  const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, 'data')}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
${tlsYaml}${authYaml}`;
  writeFileSync(join(dir, 'config.yml'), config);
  const child: ChildProcess = spawn('/usr/bin/docker-registry', ['serve', join(dir, 'config.yml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    await tokenServer?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  // Over TLS (perhaps demanding a client certificate) a listening socket is taken as ready.
  const ready = async () => {
    if (tls) {
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.destroy();
          resolve();
        });
        socket.on('error', reject);
      });
      return true;
    }
    const res = await fetch(`http://127.0.0.1:${port}/v2/`);
    await res.arrayBuffer();
    return res.status === 200 || res.status === 401;
  };
  for (let i = 0; ; i++) {
    try {
      if (await ready()) break;
    } catch {}
    if (i > 200 || child.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry did not start: ${stderr}`);
    }
    await sleep(50);
  }
  return { host: `127.0.0.1:${port}`, dir, auth, username, password, tokenRequests, stop };
}

export type FaultKind = 'reset' | 'truncate' | 'corrupt' | '429' | '500';

export interface Fault {
  kind: FaultKind;
  /** Requests it applies to, e.g. GET of blobs. */
  match: (method: string, path: string) => boolean;
  /** How many times it fires (default 1). */
  times?: number;
}

export interface FaultProxy {
  host: string;
  faults: Fault[];
  /** Faults that fired, in order. */
  fired: FaultKind[];
  /** Every request seen: `METHOD path range?`. */
  log: string[];
  /**
   * Every request forwarded faithfully (no fault fired): when it came (performance.now(), ms), its
   * status and the response body bytes the proxy passed on (counted as they go).
   */
  served: { request: string; at: number; status: number; bytes: number }[];
  stop(): Promise<void>;
}

/** A proxy in front of `target` (`host:port`) that misbehaves as the faults say, then forwards faithfully. */
export async function startFaultProxy(target: string, faults: Fault[] = []): Promise<FaultProxy> {
  const [targetHost, targetPort] = target.split(':') as [string, string];
  const fired: FaultKind[] = [];
  const log: string[] = [];
  const served: FaultProxy['served'] = [];
  const proxy: FaultProxy = { host: '', faults, fired, log, served, stop: async () => {} };
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    const at = performance.now();
    const request = `${req.method} ${path}${req.headers.range ? ` ${req.headers.range}` : ''}`;
    log.push(request);
    const fault = proxy.faults.find((f) => (f.times ?? 1) > 0 && f.match(req.method ?? 'GET', path));
    if (fault) {
      fault.times = (fault.times ?? 1) - 1;
      fired.push(fault.kind);
    }
    if (fault?.kind === '429' || fault?.kind === '500') {
      req.resume();
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (fault.kind === '429') headers['retry-after'] = '1';
      res
        .writeHead(Number(fault.kind), headers)
        .end('{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}');
      return;
    }
    const upstream = http.request(
      { host: targetHost, port: Number(targetPort), method: req.method, path, headers: req.headers },
      (up) => {
        const status = up.statusCode ?? 502;
        const length = Number(up.headers['content-length'] ?? 0);
        if (!fault || status >= 300 || length < 2) {
          const record = { request, at, status, bytes: 0 };
          served.push(record);
          res.writeHead(status, up.headers);
          up.pipe(res);
          up.on('data', (chunk: Buffer) => {
            record.bytes += chunk.length;
          });
          return;
        }
        const half = Math.floor(length / 2);
        const headers = { ...up.headers };
        if (fault.kind === 'truncate') headers['content-length'] = String(half);
        res.writeHead(status, headers);
        let seen = 0;
        up.on('data', (chunk: Buffer) => {
          let out = chunk;
          if (fault.kind === 'corrupt' && seen <= half && half < seen + chunk.length) {
            out = Buffer.from(chunk);
            out[half - seen] = (out[half - seen] as number) ^ 0xff;
          }
          if (fault.kind !== 'corrupt' && seen + chunk.length >= half) {
            res.write(out.subarray(0, half - seen));
            up.destroy();
            if (fault.kind === 'reset') res.socket?.destroy();
            else res.end();
            seen = length;
            return;
          }
          seen += chunk.length;
          res.write(out);
        });
        up.on('end', () => res.end());
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  const port = await listen(server);
  proxy.host = `127.0.0.1:${port}`;
  proxy.stop = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return proxy;
}
