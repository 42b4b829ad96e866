import { createHash, type Hash } from 'node:crypto';
import { SealError } from '../errors.ts';

export type DigestErrorCode = 'DIGEST_INVALID' | 'DIGEST_MISMATCH' | 'DIGEST_UNSUPPORTED';
export class DigestError extends SealError<DigestErrorCode> {}

export type DigestAlgorithm = 'sha256' | 'sha512';
const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** A parsed `algorithm:encoded` digest (OCI image-spec descriptor digest). */
export interface Digest {
  algorithm: DigestAlgorithm;
  hex: string;
}

const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function parseDigest(text: string): Digest {
  if (!DIGEST_GRAMMAR.test(text)) {
    throw new DigestError('DIGEST_INVALID', `not a digest: ${JSON.stringify(text)}`, { subject: text });
  }
  const [algorithm, hex] = text.split(':') as [string, string];
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new DigestError('DIGEST_UNSUPPORTED', `unsupported digest algorithm ${algorithm}`, {
      subject: text,
    });
  }
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new DigestError('DIGEST_INVALID', `malformed ${algorithm} digest ${text}`, { subject: text });
  }
  return { algorithm, hex };
}

export function isDigest(text: string): boolean {
  try {
    parseDigest(text);
    return true;
  } catch {
    return false;
  }
}

export function formatDigest(d: Digest): string {
  return `${d.algorithm}:${d.hex}`;
}

export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** Incremental digester with size tracking, for streams. */
export class Digester {
  readonly algorithm: DigestAlgorithm;
  #hash: Hash;
  size = 0;

  constructor(algorithm: DigestAlgorithm = 'sha256') {
    this.algorithm = algorithm;
    this.#hash = createHash(algorithm);
  }

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.size += chunk.length;
  }

  digest(): string {
    return `${this.algorithm}:${this.#hash.digest('hex')}`;
  }
}

/** Throws DIGEST_MISMATCH unless `data` has digest `expected`. */
export function verifyDigest(data: Uint8Array, expected: string, subject = expected): void {
  const { algorithm } = parseDigest(expected);
  const actual = digestOf(data, algorithm);
  if (actual !== expected) {
    throw new DigestError(
      'DIGEST_MISMATCH',
      `content of ${subject} has digest ${actual}, expected ${expected}`,
      {
        subject,
      },
    );
  }
}
