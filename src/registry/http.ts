/**
 * The HTTP layer of the registry client: keep-alive connections, TLS with the system CAs plus
 * a containers-style certificate directory (extra CAs, a client certificate), TLS failures
 * reported as such, redirects that never carry `Authorization` to another origin, and
 * streamed request and response bodies.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import type * as Http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type * as Https from 'node:https';
import { join } from 'node:path';
import type * as Tls from 'node:tls';
import { RegistryError } from './errors.ts';

export interface TlsOptions {
  /** Verify server certificates (default true). */
  tlsVerify?: boolean;
  /** containers-style directory: `*.crt` extra CAs, `*.cert` + `*.key` a client certificate. */
  certDir?: string;
}

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A replayable buffer or a one-shot stream (then `Content-Length` should be set by the caller). */
  body?: Uint8Array | AsyncIterable<Uint8Array>;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The URL that answered, after redirects. */
  url: URL;
  body: IncomingMessage;
}

// Taken as CommonJS modules: the ESM facade of node:http evaluates every lazy export, which
// loads Node's bundled undici (some 25 ms of a short command) for nothing. TLS is loaded only
// when a connection needs it (another 13 ms), so plain HTTP to a loopback registry never pays.
const http = process.getBuiltinModule('node:http') as typeof Http;
const https = () => process.getBuiltinModule('node:https') as typeof Https;
const tls = () => process.getBuiltinModule('node:tls') as typeof Tls;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;
const IDLE_TIMEOUT_MS = 120_000;

/** Where distributions keep the system's CA bundle (`SSL_CERT_FILE` overrides). */
const SYSTEM_BUNDLES = [
  '/etc/ssl/certs/ca-certificates.crt',
  '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/ca-bundle.pem',
  '/etc/ssl/cert.pem',
];
let systemCas: string[] | undefined;

/**
 * The system's trusted CAs: its bundle file if there is one (so CAs an administrator added are
 * trusted, which Node's built-in Mozilla list alone would not do), else Node's list. Read once.
 */
function systemCertificates(): string[] {
  if (systemCas) return systemCas;
  for (const path of [process.env.SSL_CERT_FILE, ...SYSTEM_BUNDLES]) {
    if (!path) continue;
    try {
      systemCas = [readFileSync(path, 'utf8')];
      return systemCas;
    } catch {}
  }
  systemCas = [...tls().rootCertificates];
  return systemCas;
}

/**
 * The certificate directory containers tools use for `host` when none is given:
 * `$XDG_CONFIG_HOME/containers/certs.d/HOST`, `/etc/containers/certs.d/HOST`, `/etc/docker/certs.d/HOST`.
 */
export function defaultCertDir(host: string): string | undefined {
  const config = process.env.XDG_CONFIG_HOME || (process.env.HOME ? join(process.env.HOME, '.config') : '');
  const candidates = [
    ...(config ? [join(config, 'containers', 'certs.d', host)] : []),
    join('/etc/containers/certs.d', host),
    join('/etc/docker/certs.d', host),
  ];
  return candidates.find((dir) => {
    try {
      return statSync(dir).isDirectory();
    } catch {
      return false;
    }
  });
}

/** The TLS settings of the HTTPS agent: system CAs plus the certificate directory's, and a client certificate. */
function tlsMaterial(options: TlsOptions): Https.AgentOptions {
  const rejectUnauthorized = options.tlsVerify !== false;
  const ca = [...systemCertificates()];
  let cert: Buffer | undefined;
  let key: Buffer | undefined;
  const dir = options.certDir;
  if (dir) {
    const bad = (what: string, cause?: unknown) =>
      new RegistryError('TLS', `certificate directory ${dir}: ${what}`, { subject: dir, cause });
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch (cause) {
      throw bad(`cannot be read (${(cause as Error).message})`, cause);
    }
    try {
      for (const name of names) {
        if (name.endsWith('.crt')) ca.push(readFileSync(join(dir, name), 'utf8'));
        // The first client certificate (in name order) is presented; its key has the same stem.
        if (name.endsWith('.cert') && !cert) {
          const stem = name.slice(0, -'.cert'.length);
          if (!names.includes(`${stem}.key`)) throw bad(`${name} has no matching ${stem}.key`);
          cert = readFileSync(join(dir, name));
          key = readFileSync(join(dir, `${stem}.key`));
        }
        if (name.endsWith('.key') && !names.includes(`${name.slice(0, -'.key'.length)}.cert`))
          throw bad(`${name} has no matching ${name.slice(0, -'.key'.length)}.cert`);
      }
    } catch (cause) {
      if (cause instanceof RegistryError) throw cause;
      throw bad(`cannot be read (${(cause as Error).message})`, cause);
    }
  }
  try {
    // Built here, once, so that a malformed PEM file is reported as such and not per connection.
    const secureContext = tls().createSecureContext({ ca, ...(cert ? { cert, key } : {}) });
    return { rejectUnauthorized, secureContext };
  } catch (cause) {
    throw new RegistryError(
      'TLS',
      `${dir ? `certificate directory ${dir}` : 'system CA certificates'}: unusable (${(cause as Error).message})`,
      { subject: dir, cause },
    );
  }
}

/** OpenSSL verification results meaning "the server's certificate is not trusted". */
const UNTRUSTED =
  /^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED|CERT_|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME)/;
/** Alerts a server sends when it wants (another) client certificate. */
const CLIENT_CERT_REFUSED =
  /ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|HANDSHAKE_FAILURE|CERTIFICATE_UNKNOWN)/;

interface TlsCause {
  code?: string;
  reason?: string;
  message?: string;
}

/** Whether a failed TLS connection was answered in plain HTTP (the server does not speak TLS). */
function isPlainHttpAnswer(error: unknown): boolean {
  const cause = (error instanceof RegistryError ? error.cause : error) as TlsCause | undefined;
  return (
    (cause?.code === 'EPROTO' || cause?.code?.startsWith('ERR_SSL_') === true) &&
    /wrong version number|packet length too long|http request/i.test(`${cause.reason} ${cause.message}`)
  );
}

/** A clear typed error for a TLS failure, or undefined if `cause` is not one. */
function tlsFailure(
  cause: unknown,
  method: string,
  url: URL,
  options: TlsOptions,
): RegistryError | undefined {
  const e = (cause ?? {}) as TlsCause;
  const code = e.code ?? '';
  // Node's advice to run it with --use-system-ca does not apply: the system CAs are already trusted.
  const reason = (e.reason ?? e.message ?? String(cause)).replace(
    /; if the root CA is installed locally.*$/s,
    '',
  );
  const subject = String(url);
  if (UNTRUSTED.test(code)) {
    return new RegistryError(
      'TLS',
      `TLS: the certificate of ${url.host} is not trusted (${reason}); ` +
        `add its CA as a .crt file in --cert-dir${options.certDir ? ` (now ${options.certDir})` : ''}, or use --tls-verify=false`,
      { subject, cause },
    );
  }
  if (CLIENT_CERT_REFUSED.test(code)) {
    return new RegistryError(
      'TLS',
      `TLS: ${url.host} refused the connection (${reason}): it requires a client certificate it trusts; ` +
        `put NAME.cert and NAME.key in --cert-dir${options.certDir ? ` (now ${options.certDir})` : ''}`,
      { subject, cause },
    );
  }
  if (isPlainHttpAnswer(cause)) {
    return new RegistryError('TLS', `TLS: ${url.host} does not speak TLS (${reason})`, { subject, cause });
  }
  if (code === 'EPROTO' || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    return new RegistryError('TLS', `TLS: ${method} ${url} failed: ${reason}`, { subject, cause });
  }
  return undefined;
}

export class HttpTransport {
  readonly #options: TlsOptions;
  readonly #common: Http.AgentOptions;
  #http: Http.Agent;
  #https: Https.Agent | undefined;

  constructor(options: TlsOptions & { maxSockets?: number } = {}) {
    this.#options = options;
    this.#common = { keepAlive: true, maxSockets: options.maxSockets ?? 16 };
    this.#http = new http.Agent(this.#common);
  }

  /** The HTTPS agent, made on first use: loading the CAs is not free and plain HTTP needs none. */
  #httpsAgent(): Https.Agent {
    this.#https ??= new (https().Agent)({ ...this.#common, ...tlsMaterial(this.#options) });
    return this.#https;
  }

  /** Sends one request, following redirects for GET and HEAD. */
  async request(req: HttpRequest): Promise<HttpResponse> {
    let url = req.url;
    let headers = { ...req.headers };
    for (let hop = 0; ; hop++) {
      const res = await this.#send(req.method, url, headers, req.body);
      const location = res.headers.location;
      if (!REDIRECTS.has(res.status) || !location || (req.method !== 'GET' && req.method !== 'HEAD'))
        return res;
      res.body.resume();
      if (hop >= MAX_REDIRECTS) {
        throw new RegistryError('PROTOCOL', `too many redirects from ${req.url}`, {
          subject: String(req.url),
        });
      }
      let next: URL;
      try {
        next = new URL(location, url);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new Error('not http(s)');
      } catch (cause) {
        throw new RegistryError(
          'PROTOCOL',
          `${url.host} redirected to an unusable URL ${JSON.stringify(location)}`,
          { subject: String(url), cause },
        );
      }
      // Credentials are for the registry: never hand them to a storage backend on another origin.
      if (next.origin !== url.origin) {
        const { authorization: _dropped, Authorization: _dropped2, ...rest } = headers;
        headers = rest;
      }
      url = next;
    }
  }

  #send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body: Uint8Array | AsyncIterable<Uint8Array> | undefined,
  ): Promise<HttpResponse> {
    const secure = url.protocol === 'https:';
    const lib = secure ? https() : http;
    return new Promise((resolve, reject) => {
      const fail = (cause: unknown) =>
        reject(
          cause instanceof RegistryError
            ? cause
            : ((secure ? tlsFailure(cause, method, url, this.#options) : undefined) ??
                new RegistryError('NETWORK', `${method} ${url}: ${(cause as Error)?.message ?? cause}`, {
                  subject: String(url),
                  cause,
                })),
        );
      let request: Http.ClientRequest;
      try {
        request = lib.request(
          url,
          { method, headers, agent: secure ? this.#httpsAgent() : this.#http, timeout: IDLE_TIMEOUT_MS },
          (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, url, body: res }),
        );
      } catch (cause) {
        // Header values a server handed us (tokens, locations) can be unsendable.
        fail(cause);
        return;
      }
      request.on('error', fail);
      request.on('timeout', () => request.destroy(new Error('connection idle for too long')));
      if (body === undefined) {
        request.end();
      } else if (body instanceof Uint8Array) {
        request.end(body);
      } else {
        pump(body, request).catch((error) => {
          request.destroy(error);
          fail(error);
        });
      }
    });
  }

  /**
   * Whether `origin` speaks plain HTTP, asked with a GET of `/v2/` in the clear on a connection
   * that is kept for the requests that follow. A TLS server closes the connection or answers 400
   * (Go's and nginx's reply to plain HTTP on a TLS port); a registry in plain HTTP answers
   * anything else. Only for loopback, where nothing in the clear leaves the machine.
   */
  async speaksPlainHttp(origin: URL): Promise<boolean> {
    try {
      const res = await this.#send('GET', new URL('/v2/', origin), {}, undefined);
      res.body.resume();
      return res.status !== 400;
    } catch {
      return false;
    }
  }

  close(): void {
    this.#http.destroy();
    this.#https?.destroy();
  }
}

async function pump(source: AsyncIterable<Uint8Array>, request: Http.ClientRequest): Promise<void> {
  for await (const chunk of source) {
    if (request.destroyed) throw new Error('request closed by the server');
    if (!request.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const done = (error?: Error) => {
          request.off('drain', done);
          request.off('close', closed);
          error ? reject(error) : resolve();
        };
        const closed = () => done(new Error('request closed by the server'));
        request.once('drain', done);
        request.once('close', closed);
      });
    }
  }
  request.end();
}

/** Reads a whole (small) response body, refusing more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit = 8 << 20): Promise<Buffer> {
  const declared = Number(res.headers['content-length'] ?? -1);
  if (declared > limit) {
    res.body.destroy();
    throw new RegistryError('TOO_LARGE', `response of ${declared} bytes from ${res.url} exceeds ${limit}`, {
      subject: String(res.url),
    });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) {
        res.body.destroy();
        throw new RegistryError('TOO_LARGE', `response from ${res.url} exceeds ${limit} bytes`, {
          subject: String(res.url),
        });
      }
      chunks.push(chunk);
    }
  } catch (cause) {
    if (cause instanceof RegistryError) throw cause;
    throw new RegistryError('NETWORK', `reading ${res.url}: ${(cause as Error).message}`, {
      subject: String(res.url),
      cause,
    });
  }
  if (declared >= 0 && size !== declared) {
    throw new RegistryError('NETWORK', `truncated response from ${res.url}: ${size} of ${declared} bytes`, {
      subject: String(res.url),
    });
  }
  return Buffer.concat(chunks);
}

export function header(res: HttpResponse, name: string): string | undefined {
  const value = res.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
