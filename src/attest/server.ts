/**
 * The verifier service: HTTP (or HTTPS) with a challenge/response protocol, version 1.
 *
 *   POST /v1/challenge                 → 200 { "type": "seal-attest-challenge", "version": 1,
 *                                              "nonce": HEX (32 bytes), "expiresIn": SECONDS,
 *                                              "pcrs": [N, …] (the PCRs to quote) }
 *   POST /v1/attest { "secret": NAME, "evidence": EVIDENCE }
 *                                      → 200 the secret, protected for the device's TPM (secret.ts)
 *                                      → 4xx { "error": { "code": "ATTEST_…", "message": TEXT } }
 *
 * A nonce is issued once, expires (default 60 s) and is spent by the first evidence that
 * answers it, whatever the verdict: a replayed exchange, a stale nonce or a nonce this verifier
 * did not issue gets nothing. The evidence must verify (verify.ts) and carry a binding key; the
 * secret is then released protected with that key for the identity key's Name, so only that
 * TPM, in the attested PCR state, can open it — a captured answer is useless to anyone else.
 */
import { randomBytes } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { isSealError } from '../errors.ts';
import type { Certificate } from '../pki/index.ts';
import { DEFAULT_QUOTE_PCRS } from './device.ts';
import { AttestError, type AttestErrorCode } from './errors.ts';
import { evidenceFromJson, MAX_EVIDENCE } from './evidence.ts';
import type { Reference } from './reference.ts';
import { encodeSecret, MAX_SECRET, NAME, protectSecret } from './secret.ts';
import { ChainCache, type Verdict, verifyEvidence } from './verify.ts';

export const CHALLENGE_TYPE = 'seal-attest-challenge';
export const PROTOCOL_VERSION = 1;
const NONCE_SIZE = 32;

/** Outstanding nonces: issued once, spent once, forgotten when expired. */
export class NonceStore {
  readonly #nonces = new Map<string, number>();
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #now: () => number;

  constructor({
    ttlMs = 60_000,
    max = 65_536,
    now = Date.now,
  }: { ttlMs?: number; max?: number; now?: () => number } = {}) {
    this.#ttlMs = ttlMs;
    this.#max = max;
    this.#now = now;
  }

  get ttlMs(): number {
    return this.#ttlMs;
  }

  get size(): number {
    return this.#nonces.size;
  }

  #purge(): void {
    const now = this.#now();
    for (const [nonce, expires] of this.#nonces) if (expires < now) this.#nonces.delete(nonce);
  }

  issue(): Buffer {
    if (this.#nonces.size >= this.#max) this.#purge();
    if (this.#nonces.size >= this.#max)
      throw new AttestError('ATTEST_CHALLENGE', 'too many outstanding challenges; try again later');
    const nonce = randomBytes(NONCE_SIZE);
    this.#nonces.set(nonce.toString('hex'), this.#now() + this.#ttlMs);
    return nonce;
  }

  /** Spends `nonce`: throws ATTEST_CHALLENGE when it was not issued, was spent, or expired. */
  spend(nonce: Uint8Array): void {
    const key = Buffer.from(nonce).toString('hex');
    const expires = this.#nonces.get(key);
    this.#nonces.delete(key);
    if (expires === undefined)
      throw new AttestError(
        'ATTEST_CHALLENGE',
        `nonce ${key || '(none)'} was not issued by this verifier or was already used: a replayed or foreign exchange`,
      );
    if (expires < this.#now())
      throw new AttestError(
        'ATTEST_CHALLENGE',
        `nonce ${key} expired ${Math.ceil((this.#now() - expires) / 1000)} s ago`,
      );
  }
}

export interface VerifierOptions {
  reference: Reference;
  deviceCa: Certificate;
  /** The secrets it releases, by name. */
  secrets: Map<string, Buffer>;
  /** `HOST:PORT` (default 127.0.0.1:0: any free port). */
  listen?: string;
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** The PCRs devices are asked to quote (default DEFAULT_QUOTE_PCRS with the reference's). */
  pcrs?: number[];
  nonces?: NonceStore;
  /** Each decision, for logs. */
  onDecision?: (decision: Decision) => void;
}

export type Decision =
  | { released: true; secret: string; verdict: Verdict }
  | { released: false; secret?: string; code: string; message: string };

export interface Verifier {
  /** The base URL, e.g. `http://127.0.0.1:41234/`. */
  url: string;
  server: Server;
  nonces: NonceStore;
  close(): Promise<void>;
}

const STATUS: Partial<Record<AttestErrorCode, number>> = {
  ATTEST_EVIDENCE: 400,
  ATTEST_PROTOCOL: 400,
  ATTEST_SECRET: 404,
};

class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function readBody(request: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > max) throw new HttpError(413, 'ATTEST_PROTOCOL', `a request is at most ${max} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function send(response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  response.end(body);
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[3]) > 65535)
    throw new AttestError('ATTEST_INVALID_OPTION', `--listen ${JSON.stringify(listen)} is not HOST:PORT`);
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

/** Starts the verifier service; resolves once it listens. */
export async function startVerifier(options: VerifierOptions): Promise<Verifier> {
  for (const [name, value] of options.secrets)
    if (value.length > MAX_SECRET)
      throw new AttestError('ATTEST_INVALID_OPTION', `secret ${name} is larger than ${MAX_SECRET} bytes`);
  for (const name of options.secrets.keys())
    if (!NAME.test(name))
      throw new AttestError(
        'ATTEST_INVALID_OPTION',
        `secret name ${JSON.stringify(name)} is not 1-64 letters, digits, dots, dashes or underscores`,
      );
  const nonces = options.nonces ?? new NonceStore();
  const chains = new ChainCache();
  const pcrs = [...new Set([...(options.pcrs ?? DEFAULT_QUOTE_PCRS), ...options.reference.pcrs])].sort(
    (a, b) => a - b,
  );
  const decide = (d: Decision) => options.onDecision?.(d);

  const attest = async (request: Record<string, unknown>, name: string): Promise<string> => {
    const secret = options.secrets.get(name);
    if (!secret)
      throw new AttestError('ATTEST_SECRET', `this verifier holds no secret ${JSON.stringify(name)}`);
    const evidence = evidenceFromJson(request.evidence, 'the evidence');
    // The nonce the TPM signed is the one spent, before anything else is believed.
    const nonce = evidence.quote.attest.extraData;
    nonces.spend(nonce);
    const verdict = await verifyEvidence(evidence, {
      deviceCa: options.deviceCa,
      reference: options.reference,
      nonce,
      chains,
    });
    if (!verdict.binding)
      throw new AttestError(
        'ATTEST_BINDING',
        'the evidence carries no binding key: a secret cannot be protected for its TPM',
      );
    let answer: string;
    try {
      answer = encodeSecret(
        protectSecret(verdict.binding.public, evidence.attestationKeyName, nonce, name, secret),
      );
    } catch (error) {
      if (error instanceof AttestError) throw error;
      throw new AttestError('ATTEST_BINDING', 'a secret cannot be protected with the binding key', {
        cause: error,
      });
    }
    decide({ released: true, secret: name, verdict });
    return answer;
  };

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '').split('?')[0];
    let secretName: string | undefined;
    try {
      if (path !== '/v1/challenge' && path !== '/v1/attest')
        throw new HttpError(404, 'ATTEST_PROTOCOL', `no such endpoint ${path}`);
      if (request.method !== 'POST') throw new HttpError(405, 'ATTEST_PROTOCOL', `${path} takes POST`);
      const body = await readBody(request, MAX_EVIDENCE + 4096);
      if (path === '/v1/challenge') {
        let nonce: Buffer;
        try {
          nonce = nonces.issue();
        } catch (error) {
          throw new HttpError(503, 'ATTEST_CHALLENGE', (error as Error).message);
        }
        send(
          response,
          200,
          JSON.stringify({
            type: CHALLENGE_TYPE,
            version: PROTOCOL_VERSION,
            nonce: nonce.toString('hex'),
            expiresIn: Math.floor(nonces.ttlMs / 1000),
            pcrs,
          }),
        );
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        throw new HttpError(400, 'ATTEST_PROTOCOL', 'the request is not JSON');
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw new HttpError(400, 'ATTEST_PROTOCOL', 'the request is not an object');
      const attestRequest = parsed as Record<string, unknown>;
      const name = attestRequest.secret;
      if (typeof name !== 'string' || !NAME.test(name))
        throw new HttpError(400, 'ATTEST_PROTOCOL', 'the request names no secret');
      secretName = name;
      send(response, 200, await attest(attestRequest, name));
    } catch (error) {
      const status =
        error instanceof HttpError
          ? error.status
          : error instanceof AttestError
            ? (STATUS[error.code] ?? 403)
            : isSealError(error)
              ? 400
              : 500;
      const code =
        error instanceof HttpError || isSealError(error) ? (error as { code: string }).code : 'INTERNAL';
      const message = status === 500 ? 'internal error' : (error as Error).message;
      if (path === '/v1/attest')
        decide({
          released: false,
          ...(typeof secretName === 'string' ? { secret: secretName } : {}),
          code,
          message,
        });
      if (!response.headersSent) send(response, status, JSON.stringify({ error: { code, message } }));
    }
  };

  const listener = (request: IncomingMessage, response: ServerResponse) => {
    handle(request, response).catch(() => response.destroy());
  };
  const server = options.tls
    ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, listener)
    : createHttpServer(listener);
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  const { host, port } = parseListen(options.listen ?? '127.0.0.1:0');
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(new AttestError('ATTEST_INVALID_OPTION', `cannot listen on ${host}:${port}: ${e.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `${options.tls ? 'https' : 'http'}://${shown}:${address.port}/`,
    server,
    nonces,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
