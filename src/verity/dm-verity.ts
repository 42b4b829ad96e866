/**
 * dm-verity hash trees, byte-identical to `veritysetup format` (cryptsetup): format version 1
 * (salt before each block) and 0 (salt after), any hash of sha1/sha256/sha512, block sizes
 * 512..65536, with or without the 512-byte superblock, in a separate file or at an offset in
 * the same file (the stacker/atomfs layout). The data is hashed on every core through a fixed
 * window of buffers and the tree is written as it grows, so memory does not depend on the size
 * of the data.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { closeSync, constants, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { writeAtomic } from '../util/atomic.ts';
import { readFullySync } from '../util/read.ts';
import { writeFullySync } from '../util/write.ts';
import { TreeReader, TreeWriter } from './dm-verity-tree.ts';
import { VerityError } from './errors.ts';
import {
  type BlockHashing,
  DIGEST_SIZE,
  fileBlockDigests,
  type HashAlgorithm,
  hashBlocksInto,
} from './hashing.ts';

export const SUPERBLOCK_SIZE = 512;
const SIGNATURE = Buffer.from('verity\0\0', 'latin1');
const MAX_SALT = 256;
/** Hash blocks checked per step when verifying a stored tree. */
const CHECK_BYTES = 1 << 20;

export interface VerityParams {
  algorithm: HashAlgorithm;
  dataBlockSize: number;
  hashBlockSize: number;
  dataBlocks: number;
  salt: Uint8Array;
  /** Hash format: 1 (normal, salt first) or 0 (Chrome OS, salt last). */
  version: 0 | 1;
  uuid: string;
}

export interface VerityFormatOptions {
  algorithm?: HashAlgorithm;
  dataBlockSize?: number;
  hashBlockSize?: number;
  /** Number of data blocks (default: the whole data file). */
  dataBlocks?: number;
  /** Salt bytes; empty for none. Default: 32 random bytes. */
  salt?: Uint8Array;
  version?: 0 | 1;
  uuid?: string;
  /** Write the 512-byte superblock first (default true). */
  superblock?: boolean;
  /** Where the hash area starts in the hash file (default 0). */
  hashOffset?: number;
}

export interface VerityResult extends VerityParams {
  rootHash: Buffer;
  hashOffset: number;
  /** Hash blocks in the tree (without the superblock). */
  hashBlocks: number;
  /** Bytes of the hash area: the superblock's block (if any) and the tree. */
  hashAreaSize: number;
}

export interface TreeGeometry {
  /** Bytes per digest slot: the digest, rounded up to a power of two in format 1. */
  slot: number;
  hashesPerBlock: number;
  /** Blocks per level, leaves first. */
  levelBlocks: number[];
  /** Byte offset of each level from the start of the tree, leaves first (the top is stored first). */
  levelOffsets: number[];
  treeBlocks: number;
}

function powerOfTwoBetween(n: number, min: number, max: number): boolean {
  return Number.isInteger(n) && n >= min && n <= max && (n & (n - 1)) === 0;
}

export function geometry(
  p: Pick<VerityParams, 'algorithm' | 'hashBlockSize' | 'dataBlocks' | 'version'>,
): TreeGeometry {
  const digest = DIGEST_SIZE[p.algorithm];
  const slot = p.version === 1 ? 2 ** Math.ceil(Math.log2(digest)) : digest;
  const hashesPerBlock = 2 ** Math.floor(Math.log2(p.hashBlockSize / slot));
  const levelBlocks: number[] = [];
  for (let covered = 1; covered < p.dataBlocks; ) {
    covered *= hashesPerBlock;
    levelBlocks.push(Math.ceil(p.dataBlocks / covered));
  }
  // The top level is stored first, the leaves last.
  const levelOffsets = new Array<number>(levelBlocks.length);
  let position = 0;
  for (let i = levelBlocks.length - 1; i >= 0; i--) {
    levelOffsets[i] = position;
    position += levelBlocks[i]! * p.hashBlockSize;
  }
  return { slot, hashesPerBlock, levelBlocks, levelOffsets, treeBlocks: position / p.hashBlockSize };
}

function blockHashing(p: VerityParams, blockSize: number): BlockHashing {
  return {
    algorithm: p.algorithm,
    blockSize,
    prefix: p.version === 1 ? p.salt : new Uint8Array(0),
    suffix: p.version === 0 ? p.salt : new Uint8Array(0),
  };
}

export function checkParams(p: VerityParams, subject: string): void {
  const bad = (what: string) => {
    throw new VerityError('VERITY_INVALID_OPTION', `${subject}: ${what}`, { subject });
  };
  if (!(p.algorithm in DIGEST_SIZE)) bad(`unsupported hash ${p.algorithm} (sha1, sha256, sha512)`);
  if (!powerOfTwoBetween(p.dataBlockSize, 512, 65536))
    bad(`data block size ${p.dataBlockSize} is not a power of two in 512..65536`);
  if (!powerOfTwoBetween(p.hashBlockSize, 512, 65536))
    bad(`hash block size ${p.hashBlockSize} is not a power of two in 512..65536`);
  if (p.salt.length > MAX_SALT) bad(`salt of ${p.salt.length} bytes is longer than ${MAX_SALT}`);
  if (p.version !== 0 && p.version !== 1) bad(`format ${p.version} is not 0 or 1`);
  if (!Number.isSafeInteger(p.dataBlocks) || p.dataBlocks < 1)
    bad(`needs at least one data block of ${p.dataBlockSize} bytes`);
  if (p.version === 1 && DIGEST_SIZE[p.algorithm] * 2 > p.hashBlockSize)
    bad('hash block too small for two digests');
}

export function encodeSuperblock(p: VerityParams): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  SIGNATURE.copy(b, 0);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(p.version, 12);
  Buffer.from(p.uuid.replace(/-/g, ''), 'hex').copy(b, 16);
  b.write(p.algorithm, 32, 'latin1');
  b.writeUInt32LE(p.dataBlockSize, 64);
  b.writeUInt32LE(p.hashBlockSize, 68);
  b.writeBigUInt64LE(BigInt(p.dataBlocks), 72);
  b.writeUInt16LE(p.salt.length, 80);
  Buffer.from(p.salt).copy(b, 88);
  return b;
}

/** Parses a verity superblock strictly: every field in range, every reserved byte zero. */
export function decodeSuperblock(b: Buffer, subject: string): VerityParams {
  const bad = (what: string): never => {
    throw new VerityError('VERITY_BAD_SUPERBLOCK', `${subject}: verity superblock ${what}`, {
      subject,
      block: { kind: 'superblock', index: 0 },
    });
  };
  if (b.length < SUPERBLOCK_SIZE) bad('is truncated');
  if (!b.subarray(0, 8).equals(SIGNATURE)) bad('has no "verity" signature');
  if (b.readUInt32LE(8) !== 1) bad(`has unknown version ${b.readUInt32LE(8)}`);
  const version = b.readUInt32LE(12);
  if (version > 1) bad(`has unknown hash type ${version}`);
  const nameEnd = b.indexOf(0, 32);
  const algorithm = b.toString('latin1', 32, nameEnd < 0 || nameEnd > 64 ? 64 : nameEnd) as HashAlgorithm;
  if (!(algorithm in DIGEST_SIZE)) bad(`names the unsupported hash ${JSON.stringify(algorithm)}`);
  if (b.subarray(32 + algorithm.length, 64).some((x) => x !== 0)) bad('has garbage after the algorithm name');
  const saltSize = b.readUInt16LE(80);
  if (saltSize > MAX_SALT) bad(`has a salt of ${saltSize} bytes (at most ${MAX_SALT})`);
  if (b.subarray(82, 88).some((x) => x !== 0)) bad('has non-zero padding');
  if (b.subarray(88 + saltSize, SUPERBLOCK_SIZE).some((x) => x !== 0))
    bad('has non-zero bytes after the salt');
  const dataBlocks = Number(b.readBigUInt64LE(72));
  const p: VerityParams = {
    algorithm,
    version: version as 0 | 1,
    uuid: b.toString('hex', 16, 32).replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'),
    dataBlockSize: b.readUInt32LE(64),
    hashBlockSize: b.readUInt32LE(68),
    dataBlocks,
    salt: Buffer.from(b.subarray(88, 88 + saltSize)),
  };
  try {
    checkParams(p, subject);
  } catch (error) {
    bad(`is invalid: ${(error as Error).message}`);
  }
  return p;
}

/** Reads the superblock at `offset` of `hashPath`. */
export function readSuperblock(hashPath: string, offset = 0): VerityParams {
  const fd = openSync(hashPath, 'r');
  try {
    const b = Buffer.alloc(SUPERBLOCK_SIZE);
    return decodeSuperblock(b.subarray(0, readFullySync(fd, b, offset)), hashPath);
  } finally {
    closeSync(fd);
  }
}

function fileSize(path: string): number {
  const fd = openSync(path, 'r');
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

export function resolveParams(dataPath: string, o: VerityFormatOptions): VerityParams {
  const dataBlockSize = o.dataBlockSize ?? 4096;
  const p: VerityParams = {
    algorithm: o.algorithm ?? 'sha256',
    dataBlockSize,
    hashBlockSize: o.hashBlockSize ?? 4096,
    dataBlocks: o.dataBlocks ?? Math.floor(fileSize(dataPath) / dataBlockSize),
    salt: o.salt ?? randomBytes(32),
    version: o.version ?? 1,
    uuid: o.uuid ?? randomUUID(),
  };
  checkParams(p, dataPath);
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(p.uuid)) {
    throw new VerityError('VERITY_INVALID_OPTION', `invalid UUID ${p.uuid}`, { subject: p.uuid });
  }
  return p;
}

/** Computes the tree of `dataPath` and writes it (with the superblock) to `hashPath` at `hashOffset`. */
export async function formatVerity(
  dataPath: string,
  hashPath: string,
  options: VerityFormatOptions = {},
): Promise<VerityResult> {
  const p = resolveParams(dataPath, options);
  const hashOffset = options.hashOffset ?? 0;
  const withSuperblock = options.superblock ?? true;
  const samefile = hashPath === dataPath;
  if (
    !Number.isSafeInteger(hashOffset) ||
    hashOffset < 0 ||
    (samefile && hashOffset < p.dataBlocks * p.dataBlockSize)
  ) {
    throw new VerityError('VERITY_INVALID_OPTION', `hash offset ${hashOffset} overlaps the data`, {
      subject: hashPath,
    });
  }
  const g = geometry(p);
  // The superblock has a hash block to itself; like veritysetup, only its 512 bytes are written.
  const headSize = withSuperblock ? Math.max(p.hashBlockSize, SUPERBLOCK_SIZE) : 0;
  const areaEnd = hashOffset + headSize + g.treeBlocks * p.hashBlockSize;
  const build = async (fd: number): Promise<Buffer> => {
    // The file reaches the end of the hash area even where nothing is written (an empty tree).
    if (fstatSync(fd).size < areaEnd) ftruncateSync(fd, areaEnd);
    if (withSuperblock) writeFullySync(fd, encodeSuperblock(p), hashOffset);
    const treeStart = hashOffset + headSize;
    const tree = new TreeWriter(
      g,
      p.dataBlocks,
      blockHashing(p, p.hashBlockSize),
      DIGEST_SIZE[p.algorithm],
      (offset, blocks) => writeFullySync(fd, blocks, treeStart + offset),
    );
    const leaves = fileBlockDigests(dataPath, 0, 0, p.dataBlocks, blockHashing(p, p.dataBlockSize), g.slot);
    for await (const run of leaves) tree.add(0, run.digests, run.count);
    return tree.root;
  };
  let root: Buffer;
  if (!samefile && hashOffset === 0) {
    root = await writeAtomic(hashPath, (handle) => build(handle.fd));
  } else {
    // Into the data file past its data, or into a hash file at an offset, keeping what is around it.
    const fd = openSync(hashPath, samefile ? 'r+' : constants.O_RDWR | constants.O_CREAT, 0o644);
    try {
      root = await build(fd);
    } finally {
      closeSync(fd);
    }
  }
  return {
    ...p,
    rootHash: root,
    hashOffset,
    hashBlocks: g.treeBlocks,
    hashAreaSize: headSize + g.treeBlocks * p.hashBlockSize,
  };
}

/** The stacker/atomfs layout: the tree appended to the image at its 4 KiB-rounded end. */
export async function appendVerity(
  imagePath: string,
  options: Omit<VerityFormatOptions, 'hashOffset' | 'superblock' | 'dataBlockSize' | 'hashBlockSize'> & {
    dataSize?: number;
  } = {},
): Promise<VerityResult> {
  const size = options.dataSize ?? fileSize(imagePath);
  const hashOffset = Math.ceil(size / 4096) * 4096;
  // The filesystem's last block may be partial: pad the file so every data block is whole.
  const fd = openSync(imagePath, 'r+');
  try {
    if (fstatSync(fd).size < hashOffset) writeSync(fd, Buffer.alloc(1), 0, 1, hashOffset - 1);
  } finally {
    closeSync(fd);
  }
  return formatVerity(imagePath, imagePath, {
    ...options,
    dataBlocks: hashOffset / 4096,
    dataBlockSize: 4096,
    hashBlockSize: 4096,
    hashOffset,
    superblock: true,
  });
}

export interface VerifyOptions extends VerityFormatOptions {
  /** Verify only these data blocks (the tree is always checked from the root down). */
  blocks?: { first: number; count: number };
}

/**
 * Verifies data against a root hash like the kernel would: the tree from the root down, then
 * the data blocks. The first failure throws a VerityError naming the block.
 */
export async function verifyVerity(
  dataPath: string,
  hashPath: string,
  rootHex: string,
  options: VerifyOptions = {},
): Promise<VerityParams> {
  const hashOffset = options.hashOffset ?? 0;
  const withSuperblock = options.superblock ?? true;
  const p = withSuperblock
    ? readSuperblock(hashPath, hashOffset)
    : resolveParams(dataPath, { salt: new Uint8Array(0), ...options });
  const digestSize = DIGEST_SIZE[p.algorithm];
  if (!/^[0-9a-fA-F]*$/.test(rootHex) || rootHex.length !== digestSize * 2) {
    throw new VerityError(
      'VERITY_INVALID_OPTION',
      `root hash must be ${digestSize * 2} hex digits for ${p.algorithm}`,
      { subject: rootHex },
    );
  }
  const root = Buffer.from(rootHex, 'hex');
  const g = geometry(p);
  const treeStart = hashOffset + (withSuperblock ? Math.max(p.hashBlockSize, SUPERBLOCK_SIZE) : 0);
  const treeSize = g.treeBlocks * p.hashBlockSize;
  const available = fileSize(hashPath) - treeStart;
  if (available < treeSize) {
    throw new VerityError(
      'VERITY_TRUNCATED',
      `${hashPath}: hash area has ${Math.max(0, available)} bytes, the tree needs ${treeSize}`,
      {
        subject: hashPath,
      },
    );
  }
  if (fileSize(dataPath) < p.dataBlocks * p.dataBlockSize) {
    throw new VerityError('VERITY_TRUNCATED', `${dataPath}: shorter than its ${p.dataBlocks} data blocks`, {
      subject: dataPath,
    });
  }
  const first = options.blocks?.first ?? 0;
  const count = options.blocks?.count ?? p.dataBlocks - first;
  if (first < 0 || count < 0 || first + count > p.dataBlocks) {
    throw new VerityError(
      'VERITY_INVALID_OPTION',
      `blocks ${first}..${first + count} are outside the ${p.dataBlocks} data blocks`,
    );
  }
  const fd = openSync(hashPath, 'r');
  try {
    const tree = new TreeReader(fd, treeStart, g, p.hashBlockSize, digestSize, readFullySync);
    checkTree(tree, p, g, root, hashPath);
    const leaves = fileBlockDigests(dataPath, 0, first, count, blockHashing(p, p.dataBlockSize), g.slot);
    for await (const run of leaves) {
      if (g.levelBlocks.length === 0) {
        // A one-block image has no tree: its block is hashed straight into the root.
        if (!root.equals(run.digests.subarray(0, digestSize))) {
          throw new VerityError(
            'VERITY_ROOT_MISMATCH',
            `${dataPath}: data block 0 does not match the root hash`,
            {
              subject: dataPath,
              block: { kind: 'data', index: 0 },
            },
          );
        }
        continue;
      }
      const bad = tree.firstMismatch(0, run.digests, run.first, run.count);
      if (bad >= 0) {
        throw new VerityError(
          'VERITY_DATA_BLOCK_MISMATCH',
          `${dataPath}: data block ${run.first + bad} is corrupt`,
          {
            subject: dataPath,
            block: { kind: 'data', index: run.first + bad },
          },
        );
      }
    }
  } finally {
    closeSync(fd);
  }
  return p;
}

/** Checks a stored tree from the root down, a stretch of hash blocks at a time. */
function checkTree(tree: TreeReader, p: VerityParams, g: TreeGeometry, root: Buffer, hashPath: string): void {
  const levels = g.levelBlocks.length;
  if (levels === 0) return;
  const hashing = blockHashing(p, p.hashBlockSize);
  const perStep = Math.max(1, Math.floor(CHECK_BYTES / p.hashBlockSize));
  const digests = Buffer.alloc(perStep * g.slot);
  hashBlocksInto(hashing, tree.blocks(levels - 1, 0, 1), digests, 0, g.slot);
  if (!digests.subarray(0, DIGEST_SIZE[p.algorithm]).equals(root)) {
    throw new VerityError(
      'VERITY_ROOT_MISMATCH',
      `${hashPath}: the top hash block (level ${levels - 1}) does not match the root hash`,
      {
        subject: hashPath,
        block: { kind: 'hash', level: levels - 1, index: 0 },
      },
    );
  }
  for (let level = levels - 1; level > 0; level--) {
    const blocks = g.levelBlocks[level - 1]!;
    for (let first = 0; first < blocks; first += perStep) {
      const count = Math.min(perStep, blocks - first);
      hashBlocksInto(hashing, tree.blocks(level - 1, first, count), digests, 0, g.slot);
      const bad = tree.firstMismatch(level, digests, first, count);
      if (bad >= 0) {
        throw new VerityError(
          'VERITY_HASH_BLOCK_MISMATCH',
          `${hashPath}: hash block ${first + bad} of level ${level - 1} is corrupt`,
          {
            subject: hashPath,
            block: { kind: 'hash', level: level - 1, index: first + bad },
          },
        );
      }
    }
  }
}

/** The hash of a single buffer as dm-verity computes block hashes (for tests and tools). */
export function verityBlockHash(p: VerityParams, block: Uint8Array): Buffer {
  const h = createHash(p.algorithm);
  if (p.version === 1) h.update(p.salt);
  h.update(block);
  if (p.version === 0) h.update(p.salt);
  return h.digest();
}
