/**
 * Blob streams that verify themselves against a descriptor's size and digest.
 *
 * A stream marked with a digest (markVerified) promises to throw before it ends unless its bytes
 * have exactly that digest (and so that size), so whoever consumes it may skip hashing the same
 * bytes a second time (a copy used to hash every blob twice). A consumer still counts the bytes
 * and must not publish anything before the stream has ended.
 */
import { DigestError, Digester, parseDigest } from './digest.ts';

const VERIFIED = Symbol('seal.verifiedDigest');

type Marked = AsyncIterable<Uint8Array> & { [VERIFIED]?: string };

export function markVerified<T extends AsyncIterable<Uint8Array>>(stream: T, digest: string): T {
  (stream as Marked)[VERIFIED] = digest;
  return stream;
}

/** The digest `stream` verifies itself against, if it is marked. */
export function verifiedDigest(stream: AsyncIterable<Uint8Array>): string | undefined {
  return (stream as Marked)[VERIFIED];
}

/** What differed: the number of bytes, or (with the right number) their digest. */
export type VerifyFailure = 'size' | 'digest';

/**
 * Builds the error a verified stream throws; `message` already names the subject. The default
 * is a DigestError with code DIGEST_MISMATCH.
 */
export type VerifyErrorFactory = (failure: VerifyFailure, message: string) => Error;

/**
 * Passes `data` through, throwing before its last chunk if the size or digest differs from
 * `desc`: the digest is checked as soon as the declared size is reached, a byte too many is
 * refused before it is hashed or passed on. The result is marked verified. Chunks are passed on
 * as they come (never copied or held back) and each is hashed once; `data` that already verifies
 * itself against this digest is only counted. `subject` names the blob in error messages.
 */
export function verifiedStream(
  data: AsyncIterable<Uint8Array>,
  desc: { digest: string; size: number },
  subject: string,
  error: VerifyErrorFactory = (_, message) => new DigestError('DIGEST_MISMATCH', message, { subject }),
): AsyncGenerator<Uint8Array> {
  return markVerified(verifying(data, desc, subject, error), desc.digest);
}

async function* verifying(
  data: AsyncIterable<Uint8Array>,
  desc: { digest: string; size: number },
  subject: string,
  error: VerifyErrorFactory,
): AsyncGenerator<Uint8Array> {
  const digester =
    verifiedDigest(data) === desc.digest ? undefined : new Digester(parseDigest(desc.digest).algorithm);
  const check = () => {
    const actual = digester?.digest();
    if (actual !== undefined && actual !== desc.digest) {
      throw error('digest', `${subject} has digest ${actual}, expected ${desc.digest}`);
    }
  };
  let size = 0;
  for await (const chunk of data) {
    // Empty chunks are dropped, so that the digest is taken exactly once, when the size is reached.
    if (chunk.length === 0) continue;
    size += chunk.length;
    if (size > desc.size) {
      throw error('size', `${subject} is larger than its declared ${desc.size} bytes`);
    }
    digester?.update(chunk);
    if (size === desc.size) check();
    yield chunk;
  }
  if (size !== desc.size) {
    throw error('size', `${subject} has ${size} bytes, ${desc.size} declared`);
  }
  if (size === 0) check();
}
