/**
 * The device's client of the verifier service (server.ts): asks for a nonce, quotes with a
 * binding key, sends the evidence, and opens the secret with its TPM. This is what the agent
 * calls at boot for `seal.attest=URL`:
 *
 *   const secret = await fetchSecret('https://verifier:7443/', tpm, 'NAME', {
 *     certificates: [deviceCertDer],            // from unlock(): secrets.deviceCert
 *     eventLogPath: EVENT_LOG_PATH,             // securityfs must be mounted
 *   });
 *
 * It must run before PCR 7 is locked: the verifier accepts the boot's PCR values, not the
 * locked ones, and the binding key opens only in the quoted PCR state.
 */
import type { IncomingMessage } from 'node:http';
import type { Tpm } from '../tpm/index.ts';
import { activateWithBinding, type QuoteOptions, quoteEvidence } from './device.ts';
import { AttestError } from './errors.ts';
import { NAME, openSecret, parseSecret } from './secret.ts';
import { CHALLENGE_TYPE, PROTOCOL_VERSION } from './server.ts';

export interface FetchOptions {
  /** The identity key's certificate (DER), then intermediates. */
  certificates: Uint8Array[];
  eventLog?: Uint8Array;
  eventLogPath?: string;
  /** CA certificates (PEM) the verifier's TLS certificate must chain to (default: the system's). */
  ca?: string | Buffer;
  /** The storage root key's Name as provisioned: another key is refused. */
  storageKeyName?: Buffer;
  /** The most one request may take (default 30 s). */
  timeoutMs?: number;
}

const MAX_ANSWER = 2 << 20;

async function post(
  url: URL,
  body: string,
  options: FetchOptions,
): Promise<{ status: number; json: unknown }> {
  // Loaded when used: the agent's V8 startup snapshot cannot hold node:http's state.
  const { request: send } =
    url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const request = send(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        ...(url.protocol === 'https:' && options.ca ? { ca: options.ca } : {}),
        timeout: options.timeoutMs ?? 30_000,
      },
      (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER) {
            response.destroy();
            reject(
              new AttestError('ATTEST_PROTOCOL', `${url.origin} answered more than ${MAX_ANSWER} bytes`),
            );
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', (e) =>
          reject(new AttestError('ATTEST_PROTOCOL', `${url.origin}: ${e.message}`)),
        );
        response.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            reject(
              new AttestError(
                'ATTEST_PROTOCOL',
                `${url.origin} answered ${response.statusCode} without JSON`,
              ),
            );
            return;
          }
          resolve({ status: response.statusCode ?? 0, json });
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (e) =>
      reject(new AttestError('ATTEST_PROTOCOL', `${url.origin}: ${e.message}`, { cause: e })),
    );
    request.end(body);
  });
}

function refusal(url: URL, status: number, json: unknown): AttestError {
  const error = (json as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof error?.code === 'string' ? error.code.slice(0, 64) : `HTTP ${status}`;
  const message = typeof error?.message === 'string' ? error.message.slice(0, 2000) : 'no reason given';
  return new AttestError('ATTEST_REFUSED', `${url.origin} refused with ${code}: ${message}`, {
    subject: url.origin,
    remoteCode: code,
  });
}

/** The verifier's base URL as given (`http(s)://host[:port][/path/]`), checked. */
export function verifierUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new AttestError('ATTEST_INVALID_OPTION', `${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new AttestError('ATTEST_INVALID_OPTION', `${url.protocol} is not http: or https:`);
  if (url.username || url.password)
    throw new AttestError('ATTEST_INVALID_OPTION', 'a verifier URL carries no credentials');
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  url.hash = '';
  return url;
}

/** Attests the device to the verifier at `url` and returns the secret `name` it releases. */
export async function fetchSecret(
  url: string,
  tpm: Tpm,
  name: string,
  options: FetchOptions,
): Promise<Buffer> {
  if (!NAME.test(name))
    throw new AttestError('ATTEST_INVALID_OPTION', `${JSON.stringify(name)} is not a secret name`);
  const base = verifierUrl(url);
  const challengeUrl = new URL('v1/challenge', base);
  const attestUrl = new URL('v1/attest', base);
  const challenge = await post(challengeUrl, '{}', options);
  if (challenge.status !== 200) throw refusal(base, challenge.status, challenge.json);
  const c = challenge.json as { type?: unknown; version?: unknown; nonce?: unknown; pcrs?: unknown };
  if (c?.type !== CHALLENGE_TYPE || c.version !== PROTOCOL_VERSION)
    throw new AttestError(
      'ATTEST_PROTOCOL',
      `${base.origin} is not a Seal verifier (protocol ${PROTOCOL_VERSION})`,
    );
  if (typeof c.nonce !== 'string' || !/^(?:[0-9a-f]{2}){16,64}$/.test(c.nonce))
    throw new AttestError('ATTEST_PROTOCOL', `${base.origin} sent a malformed nonce`);
  if (
    !Array.isArray(c.pcrs) ||
    c.pcrs.length === 0 ||
    !c.pcrs.every((p) => Number.isInteger(p) && p >= 0 && p <= 23)
  )
    throw new AttestError('ATTEST_PROTOCOL', `${base.origin} asked for malformed PCRs`);
  const nonce = Buffer.from(c.nonce, 'hex');
  const quoteOptions: QuoteOptions = {
    nonce,
    pcrs: c.pcrs as number[],
    certificates: options.certificates,
    bind: true,
    ...(options.eventLog ? { eventLog: options.eventLog } : {}),
    ...(options.eventLogPath ? { eventLogPath: options.eventLogPath } : {}),
    ...(options.storageKeyName ? { storageKeyName: options.storageKeyName } : {}),
  };
  const quoted = await quoteEvidence(tpm, quoteOptions);
  const binding = quoted.binding!;
  try {
    const body = `{"secret":${JSON.stringify(name)},"evidence":${quoted.evidence}}`;
    const answer = await post(attestUrl, body, options);
    if (answer.status !== 200) throw refusal(base, answer.status, answer.json);
    const secret = parseSecret(answer.json, base.origin);
    if (secret.name !== name || !secret.nonce.equals(nonce))
      throw new AttestError('ATTEST_PROTOCOL', `${base.origin} answered for another secret or nonce`);
    const credential = await activateWithBinding(
      tpm,
      binding,
      secret.credentialBlob,
      secret.encryptedSecret,
      options.storageKeyName,
    );
    try {
      return openSecret(credential, secret);
    } finally {
      credential.fill(0);
    }
  } finally {
    await binding.release().catch(() => {});
  }
}
