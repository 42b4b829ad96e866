/**
 * fs-verity file digests (the kernel's and `fsverity digest`'s): a Merkle tree over the file's
 * blocks, the root hash in a 256-byte descriptor, the digest = hash of the descriptor.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { sourceUrl } from '../util/paths.ts';
import { sharedPool } from '../util/pool.ts';
import { VerityError } from './errors.ts';
import { type BlockHashing, DIGEST_SIZE, hashBlocksInto } from './hashing.ts';

const HASHING = sourceUrl('verity/hashing.ts').href;
const TASK_BLOCKS = 8192;

export type FsverityAlgorithm = 'sha256' | 'sha512';
const ALGORITHM_ID: Record<FsverityAlgorithm, number> = { sha256: 1, sha512: 2 };
/** The hash functions' own block sizes, to which the salt is padded. */
const HASH_BLOCK: Record<FsverityAlgorithm, number> = { sha256: 64, sha512: 128 };

export interface FsverityOptions {
  algorithm?: FsverityAlgorithm;
  /** Merkle tree block size, a power of two from 1024 to 65536 (default 4096). */
  blockSize?: number;
  /** Up to 32 bytes. */
  salt?: Uint8Array;
}

interface Resolved {
  algorithm: FsverityAlgorithm;
  blockSize: number;
  salt: Uint8Array;
  hashing: BlockHashing;
}

function resolve(o: FsverityOptions): Resolved {
  const algorithm = o.algorithm ?? 'sha256';
  const blockSize = o.blockSize ?? 4096;
  const salt = o.salt ?? new Uint8Array(0);
  if (!(algorithm in ALGORITHM_ID))
    throw new VerityError('VERITY_INVALID_OPTION', `unsupported fs-verity hash ${algorithm}`);
  if (
    !Number.isInteger(blockSize) ||
    blockSize < 1024 ||
    blockSize > 65536 ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new VerityError(
      'VERITY_INVALID_OPTION',
      `fs-verity block size ${blockSize} is not a power of two in 1024..65536`,
    );
  }
  if (salt.length > 32)
    throw new VerityError(
      'VERITY_INVALID_OPTION',
      `fs-verity salt of ${salt.length} bytes is longer than 32`,
    );
  const padded = new Uint8Array(
    salt.length === 0 ? 0 : Math.ceil(salt.length / HASH_BLOCK[algorithm]) * HASH_BLOCK[algorithm],
  );
  padded.set(salt);
  return {
    algorithm,
    blockSize,
    salt,
    hashing: { algorithm, blockSize, prefix: padded, suffix: new Uint8Array(0) },
  };
}

/** From the leaf digests up to the root hash; a one-block file's root is its block's digest. */
function rootOf(leaves: Buffer, r: Resolved): Buffer {
  const size = DIGEST_SIZE[r.algorithm];
  const perBlock = r.blockSize / size;
  let level = leaves;
  while (level.length > size) {
    const blocks = Math.ceil(level.length / size / perBlock);
    const packed = Buffer.alloc(blocks * r.blockSize);
    level.copy(packed);
    const next = Buffer.alloc(blocks * size);
    hashBlocksInto(r.hashing, packed, next, 0, size);
    level = next;
  }
  return level;
}

function descriptorDigest(root: Buffer, dataSize: number, r: Resolved): Buffer {
  const d = Buffer.alloc(256);
  d[0] = 1;
  d[1] = ALGORITHM_ID[r.algorithm];
  d[2] = Math.log2(r.blockSize);
  d[3] = r.salt.length;
  d.writeBigUInt64LE(BigInt(dataSize), 8);
  root.copy(d, 16);
  Buffer.from(r.salt).copy(d, 80);
  return createHash(r.algorithm).update(d).digest();
}

/** The fs-verity digest of data held in memory or streamed (hashed on this thread). */
export async function fsverityDigest(
  data: Uint8Array | AsyncIterable<Uint8Array>,
  options: FsverityOptions = {},
): Promise<Buffer> {
  const r = resolve(options);
  const size = DIGEST_SIZE[r.algorithm];
  const leaves: Buffer[] = [];
  let total = 0;
  let pending = Buffer.alloc(0);
  const take = (chunk: Uint8Array, final: boolean) => {
    let buf = pending.length
      ? Buffer.concat([pending, chunk])
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    if (final && buf.length % r.blockSize !== 0)
      buf = Buffer.concat([buf, Buffer.alloc(r.blockSize - (buf.length % r.blockSize))]);
    const whole = buf.length - (buf.length % r.blockSize);
    if (whole > 0) {
      const out = Buffer.alloc((whole / r.blockSize) * size);
      hashBlocksInto(r.hashing, buf.subarray(0, whole), out, 0, size);
      leaves.push(out);
    }
    pending = Buffer.from(buf.subarray(whole));
  };
  if (data instanceof Uint8Array) {
    total = data.length;
    take(data, true);
  } else {
    for await (const chunk of data) {
      total += chunk.length;
      take(chunk, false);
    }
    take(new Uint8Array(0), true);
  }
  const root = total === 0 ? Buffer.alloc(size) : rootOf(Buffer.concat(leaves), r);
  return descriptorDigest(root, total, r);
}

/** The fs-verity digest of a file, its blocks hashed on the worker pool. */
export async function fsverityDigestFile(path: string, options: FsverityOptions = {}): Promise<Buffer> {
  const r = resolve(options);
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
  const digestSize = DIGEST_SIZE[r.algorithm];
  if (size === 0) return descriptorDigest(Buffer.alloc(digestSize), 0, r);
  const blocks = Math.ceil(size / r.blockSize);
  const tasks: Promise<Uint8Array>[] = [];
  for (let b = 0; b < blocks; b += TASK_BLOCKS) {
    const n = Math.min(TASK_BLOCKS, blocks - b);
    tasks.push(
      sharedPool().run<Uint8Array>(HASHING, 'hashFileBlocks', [
        path,
        b * r.blockSize,
        n,
        r.hashing,
        digestSize,
      ]),
    );
  }
  return descriptorDigest(rootOf(Buffer.concat(await Promise.all(tasks)), r), size, r);
}

/** What kernel fs-verity signatures sign: "FSVerity", u16 algorithm, u16 digest size, digest. */
export function formattedDigest(digest: Uint8Array, algorithm: FsverityAlgorithm = 'sha256'): Buffer {
  const head = Buffer.alloc(12);
  head.write('FSVerity', 0, 'latin1');
  head.writeUInt16LE(ALGORITHM_ID[algorithm], 8);
  head.writeUInt16LE(digest.length, 10);
  return Buffer.concat([head, digest]);
}
