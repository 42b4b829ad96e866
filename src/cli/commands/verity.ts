import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import { signFsverityDigest, signRootHash } from '../../seal/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import {
  appendVerity,
  type FsverityAlgorithm,
  formatVerity,
  fsverityDigestFile,
  type HashAlgorithm,
  type VerityResult,
  verifyVerity,
} from '../../verity/index.ts';
import type { Command, OptionSpec } from '../command.ts';
import { integerOption } from '../options.ts';
import { readSigner, signerOptions } from './kernel-signer.ts';

function hex(value: unknown, name: string): Buffer | undefined {
  if (value === undefined) return undefined;
  if (value === '-') return Buffer.alloc(0);
  if (typeof value !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(value))
    throw new UsageError(`--${name} takes hex bytes or "-"`);
  return Buffer.from(value, 'hex');
}

const treeOptions: Record<string, OptionSpec> = {
  'hash-offset': { type: 'string', value: 'N', description: 'where the hash area starts in HASH (bytes)' },
  salt: {
    type: 'string',
    value: 'HEX|-',
    description: 'salt as hex, or - for none (default: 32 random bytes)',
  },
  uuid: { type: 'string', value: 'UUID', description: 'UUID stored in the superblock (default: random)' },
  hash: { type: 'string', value: 'ALG', description: 'sha256 (default), sha512 or sha1' },
  'data-block-size': {
    type: 'string',
    value: 'N',
    description: 'data block size, 512..65536 (default 4096)',
  },
  'hash-block-size': {
    type: 'string',
    value: 'N',
    description: 'hash block size, 512..65536 (default 4096)',
  },
  'data-blocks': { type: 'string', value: 'N', description: 'number of data blocks (default: all of DATA)' },
  format: { type: 'string', value: 'N', description: 'hash format: 1 (default) or 0' },
  'no-superblock': { type: 'boolean', description: 'write no verity superblock' },
};

function treeParams(options: Record<string, unknown>) {
  const format = integerOption(options.format, 'format');
  if (format !== undefined && format !== 0 && format !== 1) throw new UsageError('--format is 0 or 1');
  return {
    algorithm: options.hash as HashAlgorithm | undefined,
    dataBlockSize: integerOption(options['data-block-size'], 'data-block-size'),
    hashBlockSize: integerOption(options['hash-block-size'], 'hash-block-size'),
    dataBlocks: integerOption(options['data-blocks'], 'data-blocks'),
    salt: hex(options.salt, 'salt'),
    version: format as 0 | 1 | undefined,
    uuid: options.uuid as string | undefined,
    superblock: options['no-superblock'] !== true,
    hashOffset: integerOption(options['hash-offset'], 'hash-offset'),
  };
}

/** The lines `veritysetup format` prints, label padding and all, then Seal's extra line for --append. */
function report(r: VerityResult, path: string, append: boolean): string[] {
  return [
    `VERITY header information for ${path}`,
    `UUID:            \t${r.uuid}`,
    `Hash type:       \t${r.version}`,
    `Data blocks:     \t${r.dataBlocks}`,
    `Data block size: \t${r.dataBlockSize}`,
    `Hash blocks:     \t${r.hashBlocks}`,
    `Hash block size: \t${r.hashBlockSize}`,
    `Hash algorithm:  \t${r.algorithm}`,
    `Salt:            \t${r.salt.length ? Buffer.from(r.salt).toString('hex') : '-'}`,
    `Root hash:      \t${r.rootHash.toString('hex')}`,
    // veritysetup reports the device size only for a hash device of its own.
    ...(r.hashOffset === 0 ? [`Hash device size: \t${r.hashAreaSize} [bytes]`] : []),
    ...(append ? [`Hash offset:     \t${r.hashOffset}`] : []),
  ];
}

export const verityCommands: Command[] = [
  {
    path: ['verity', 'format'],
    summary: 'Build a dm-verity hash tree (like veritysetup format)',
    args: 'DATA [HASH]',
    arity: [1, 2],
    options: {
      ...treeOptions,
      append: {
        type: 'boolean',
        description: 'append the tree to DATA at its 4 KiB-rounded end (stacker/atomfs layout)',
      },
    },
    details: 'With --append, HASH is omitted and the offset of the hash area is printed too.',
    async run(ctx, [data, hash], options) {
      const params = treeParams(options);
      let result: VerityResult;
      if (options.append) {
        if (hash !== undefined) throw new UsageError('--append takes only DATA');
        result = await appendVerity(data!, params);
      } else {
        if (hash === undefined)
          throw new UsageError('usage: seal verity format DATA HASH (or DATA --append)');
        result = await formatVerity(data!, hash, params);
      }
      ctx.result({
        rootHash: result.rootHash.toString('hex'),
        salt: Buffer.from(result.salt).toString('hex'),
        uuid: result.uuid,
        algorithm: result.algorithm,
        version: result.version,
        dataBlocks: result.dataBlocks,
        dataBlockSize: result.dataBlockSize,
        hashBlocks: result.hashBlocks,
        hashBlockSize: result.hashBlockSize,
        hashOffset: result.hashOffset,
      });
      for (const line of report(result, hash ?? data!, options.append === true)) ctx.print(line);
      return 0;
    },
  },
  {
    path: ['verity', 'verify'],
    summary: 'Verify data against a dm-verity tree and root hash (like veritysetup verify)',
    args: 'DATA HASH ROOT_HASH',
    arity: [3, 3],
    options: treeOptions,
    async run(ctx, [data, hash, root], options) {
      const params = treeParams(options);
      await verifyVerity(data!, hash!, root!, params);
      ctx.result({ verified: true, data, hash, rootHash: root });
      ctx.print(`Verified ${data} against root hash ${root}`);
      return 0;
    },
  },
  {
    path: ['fsverity', 'digest'],
    summary: 'Compute fs-verity file digests (output as fsverity digest)',
    args: 'FILE...',
    arity: [1, Number.POSITIVE_INFINITY],
    options: {
      'hash-alg': { type: 'string', value: 'sha256|sha512', description: 'hash algorithm (default sha256)' },
      'block-size': { type: 'string', value: 'N', description: 'Merkle tree block size (default 4096)' },
      salt: { type: 'string', value: 'HEX', description: 'salt as hex' },
    },
    async run(ctx, files, options) {
      const opts = {
        algorithm: (options['hash-alg'] as FsverityAlgorithm | undefined) ?? 'sha256',
        blockSize: integerOption(options['block-size'], 'block-size'),
        salt: hex(options.salt, 'salt'),
      };
      const results = await Promise.all(
        files.map(async (file) => ({ file, digest: (await fsverityDigestFile(file, opts)).toString('hex') })),
      );
      ctx.result(results.map((r) => ({ ...r, algorithm: opts.algorithm })));
      for (const r of results) ctx.print(`${opts.algorithm}:${r.digest} ${r.file}`);
      return 0;
    },
  },
  {
    path: ['verity', 'sign'],
    summary: 'Sign a dm-verity root hash for the kernel (veritysetup open --root-hash-signature)',
    args: 'ROOT_HASH|@FILE OUT',
    arity: [2, 2],
    details:
      'Writes the PKCS#7 signature the kernel checks when a dm-verity device is opened with a signature\n' +
      '(DM_VERITY_VERIFY_ROOTHASH_SIG): over the root hash in lowercase hex, no attributes, no certificates\n' +
      'unless --chain is given (openssl smime -sign -noattr -nocerts -binary makes the same). @FILE reads the\n' +
      'root hash from a file.',
    options: signerOptions(),
    async run(ctx, [root, out], options) {
      const signer = readSigner(options);
      if (!signer) throw new UsageError('--key and --cert are required');
      const rootHash = root!.startsWith('@') ? readFileSync(root!.slice(1), 'utf8').trim() : root!;
      const signature = signRootHash(rootHash, signer);
      await writeFileAtomic(out!, signature);
      ctx.result({ rootHash: rootHash.toLowerCase(), signature: out, size: signature.length });
      ctx.print(`Signed root hash ${rootHash.toLowerCase()} into ${out}`);
      return 0;
    },
  },
  {
    path: ['fsverity', 'sign'],
    summary: "Sign a file's fs-verity digest for the kernel (as fsverity sign)",
    args: 'FILE OUT',
    arity: [2, 2],
    details:
      'Writes the PKCS#7 built-in signature FS_IOC_ENABLE_VERITY takes (fsverity enable --signature):\n' +
      'byte for byte what `fsverity sign` writes for the same key, certificate and file.',
    options: {
      ...signerOptions(),
      'hash-alg': { type: 'string', value: 'sha256|sha512', description: 'hash algorithm (default sha256)' },
      'block-size': { type: 'string', value: 'N', description: 'Merkle tree block size (default 4096)' },
      salt: { type: 'string', value: 'HEX', description: 'salt as hex' },
    },
    async run(ctx, [file, out], options) {
      const signer = readSigner(options);
      if (!signer) throw new UsageError('--key and --cert are required');
      const algorithm = (options['hash-alg'] as FsverityAlgorithm | undefined) ?? 'sha256';
      const digest = await fsverityDigestFile(file!, {
        algorithm,
        blockSize: integerOption(options['block-size'], 'block-size'),
        salt: hex(options.salt, 'salt'),
      });
      const signature = signFsverityDigest(digest, signer, algorithm);
      await writeFileAtomic(out!, signature);
      ctx.result({
        file,
        digest: `${algorithm}:${digest.toString('hex')}`,
        signature: out,
        size: signature.length,
      });
      ctx.print(`Signed file '${file}' (${algorithm}:${digest.toString('hex')})`);
      return 0;
    },
  },
];
