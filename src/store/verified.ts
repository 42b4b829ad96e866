/**
 * Blob streams that verify themselves. A stream marked with a digest promises to throw before
 * it ends unless its bytes have exactly that digest (and so that size), so whoever consumes it
 * may skip hashing the same bytes a second time (a copy used to hash every blob twice). A
 * consumer still counts the bytes and must not publish anything before the stream has ended.
 */
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
