/**
 * The HTTP layer of the registry client: keep-alive connections, TLS with the system CAs plus
 * a containers-style certificate directory (extra CAs, a client certificate), TLS failures
 * reported as such, redirects that never carry `Authorization` to another origin (nor back
 * from there), streamed request and response bodies, and transfer limits (limits.ts): a
 * deadline and a minimum progress rate while waiting on the server.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import type * as Http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type * as Https from 'node:https';
import { join } from 'node:path';
import type * as Tls from 'node:tls';
import { quoted, RegistryError } from './errors.ts';
import { DEFAULT_LOW_SPEED, deadlineError, type LowSpeed, now, TransferWatch } from './limits.ts';

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
  /** `now()` (limits.ts) by which the exchange, response body included, must be over. */
  deadline?: number | undefined;
}

/** A response body: read it (async iteration), discard it, or give it up. */
export interface ResponseBody extends AsyncIterable<Buffer> {
  /** Reads and drops the rest, so that the connection can serve another request. */
  resume(): void;
  destroy(error?: Error): void;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The URL that answered, after redirects. */
  url: URL;
  body: ResponseBody;
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

export interface TransportOptions extends TlsOptions {
  maxSockets?: number;
  /** The minimum progress rate while waiting on a server (default DEFAULT_LOW_SPEED); false: none. */
  lowSpeed?: LowSpeed | false | undefined;
}

export class HttpTransport {
  readonly #options: TlsOptions;
  readonly #common: Http.AgentOptions;
  readonly #lowSpeed: LowSpeed | undefined;
  #http: Http.Agent;
  #https: Https.Agent | undefined;

  constructor(options: TransportOptions = {}) {
    this.#options = options;
    this.#common = { keepAlive: true, maxSockets: options.maxSockets ?? 16 };
    this.#lowSpeed = options.lowSpeed === false ? undefined : (options.lowSpeed ?? DEFAULT_LOW_SPEED);
    this.#http = new http.Agent(this.#common);
  }

  /** The HTTPS agent, made on first use: loading the CAs is not free and plain HTTP needs none. */
  #httpsAgent(): Https.Agent {
    this.#https ??= new (https().Agent)({ ...this.#common, ...tlsMaterial(this.#options) });
    return this.#https;
  }

  /**
   * Sends one request, following redirects for GET and HEAD. `Authorization` is dropped at the
   * first hop to another origin and not restored if a later hop comes back: the credentials
   * go only where the caller itself sent them, never to a URL another origin chose.
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    let url = req.url;
    let headers = { ...req.headers };
    for (let hop = 0; ; hop++) {
      if (req.deadline !== undefined && now() >= req.deadline) {
        throw deadlineError(`${req.method} ${url}`);
      }
      const res = await this.#send(req.method, url, headers, req.body, req.deadline);
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
        throw new RegistryError('PROTOCOL', `${url.host} redirected to an unusable URL ${quoted(location)}`, {
          subject: String(url),
          cause,
        });
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
    target: URL,
    headers: Record<string, string>,
    body: Uint8Array | AsyncIterable<Uint8Array> | undefined,
    deadline: number | undefined,
  ): Promise<HttpResponse> {
    // User info in a URL a server handed over would become an `Authorization` header of its choosing.
    const url = new URL(target);
    url.username = '';
    url.password = '';
    const secure = url.protocol === 'https:';
    const lib = secure ? https() : http;
    return new Promise((resolve, reject) => {
      let request: Http.ClientRequest | undefined;
      let response: IncomingMessage | undefined;
      // Aborts the exchange with a TIMEOUT error: the pending request, or the body being read.
      const watch = new TransferWatch(`${method} ${url}`, { deadline, lowSpeed: this.#lowSpeed }, (error) =>
        response ? response.destroy(error) : request?.destroy(error),
      );
      const fail = (failure: unknown) => {
        watch.stop();
        const cause = watch.error ?? failure;
        reject(
          cause instanceof RegistryError
            ? cause
            : ((secure ? tlsFailure(cause, method, url, this.#options) : undefined) ??
                new RegistryError('NETWORK', `${method} ${url}: ${(cause as Error)?.message ?? cause}`, {
                  subject: String(url),
                  cause,
                })),
        );
      };
      try {
        request = lib.request(
          url,
          { method, headers, agent: secure ? this.#httpsAgent() : this.#http, timeout: IDLE_TIMEOUT_MS },
          (res) => {
            response = res;
            watch.idle();
            // Failures surface through the body's iteration; none may go unhandled meanwhile.
            res.on('error', () => {});
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              url,
              body: watchedBody(res, watch),
            });
          },
        );
      } catch (cause) {
        // Header values a server handed us (tokens, locations) can be unsendable.
        fail(cause);
        return;
      }
      const sending = request;
      // Time spent in the agent's queue for a free connection is Seal's own, not the server's.
      sending.once('socket', () => watch.started());
      sending.on('error', fail);
      sending.on('timeout', () => sending.destroy(new Error('connection idle for too long')));
      if (body === undefined) {
        watch.waiting();
        sending.end();
      } else if (body instanceof Uint8Array) {
        watch.waiting();
        sending.end(body, () => watch.moved(body.length));
      } else {
        pump(body, sending, watch).catch((error) => {
          sending.destroy(error);
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
      const res = await this.#send('GET', new URL('/v2/', origin), {}, undefined, undefined);
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

/**
 * Streams a request body. The clock of the progress rate runs only while the socket does not
 * take more (and while the answer is awaited), never while the source is producing: a slow
 * source is Seal's side, not the server's.
 */
async function pump(
  source: AsyncIterable<Uint8Array>,
  request: Http.ClientRequest,
  watch: TransferWatch,
): Promise<void> {
  watch.idle();
  for await (const chunk of source) {
    if (request.destroyed) throw new Error('request closed by the server');
    const accepted = request.write(chunk, (error) => {
      if (!error) watch.moved(chunk.length);
    });
    if (!accepted) {
      watch.waiting();
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
    watch.idle();
  }
  watch.waiting();
  request.end();
}

/**
 * The body of `res` as Seal reads it: the clock of the progress rate runs while the reader
 * awaits the next bytes, and stops while the reader is busy with the last ones.
 */
function watchedBody(res: IncomingMessage, watch: TransferWatch): ResponseBody {
  res.once('close', () => watch.stop());
  return {
    async *[Symbol.asyncIterator]() {
      const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      try {
        for (;;) {
          watch.waiting();
          const next = await chunks.next();
          watch.idle();
          if (next.done) return;
          watch.moved(next.value.length);
          yield next.value;
        }
      } finally {
        watch.stop();
        await chunks.return?.();
      }
    },
    resume() {
      res.on('data', (chunk: Buffer) => watch.moved(chunk.length));
      watch.waiting();
      res.resume();
    },
    destroy(error?: Error) {
      watch.stop();
      res.destroy(error);
    },
  };
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
    for await (const chunk of res.body) {
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
