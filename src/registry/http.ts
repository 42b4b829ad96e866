/**
 * The HTTP layer of the registry client: keep-alive connections, TLS with the system CAs plus
 * a certificate directory, redirects that never carry `Authorization` to another origin, and
 * streamed request and response bodies.
 */
import { readdirSync, readFileSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
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

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;
const IDLE_TIMEOUT_MS = 120_000;

function tlsMaterial(options: TlsOptions): https.AgentOptions {
  const result: https.AgentOptions = { rejectUnauthorized: options.tlsVerify !== false };
  if (!options.certDir) return result;
  const ca = [...tls.getCACertificates('default'), ...tls.getCACertificates('system')];
  let names: string[];
  try {
    names = readdirSync(options.certDir).sort();
  } catch (cause) {
    throw new RegistryError('CREDENTIALS', `cannot read certificate directory ${options.certDir}`, {
      subject: options.certDir,
      cause,
    });
  }
  for (const name of names) {
    const path = join(options.certDir, name);
    if (name.endsWith('.crt')) ca.push(readFileSync(path, 'utf8'));
    if (name.endsWith('.cert')) {
      result.cert = readFileSync(path);
      result.key = readFileSync(join(options.certDir, `${name.slice(0, -'.cert'.length)}.key`));
    }
  }
  result.ca = ca;
  return result;
}

export class HttpTransport {
  #http: http.Agent;
  #https: https.Agent;

  constructor(options: TlsOptions & { maxSockets?: number } = {}) {
    const common = { keepAlive: true, maxSockets: options.maxSockets ?? 16 };
    this.#http = new http.Agent(common);
    this.#https = new https.Agent({ ...common, ...tlsMaterial(options) });
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
    const lib = secure ? https : http;
    return new Promise((resolve, reject) => {
      const fail = (cause: unknown) =>
        reject(
          cause instanceof RegistryError
            ? cause
            : new RegistryError('NETWORK', `${method} ${url}: ${(cause as Error)?.message ?? cause}`, {
                subject: String(url),
                cause,
              }),
        );
      let request: http.ClientRequest;
      try {
        request = lib.request(
          url,
          { method, headers, agent: secure ? this.#https : this.#http, timeout: IDLE_TIMEOUT_MS },
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

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}

async function pump(source: AsyncIterable<Uint8Array>, request: http.ClientRequest): Promise<void> {
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
