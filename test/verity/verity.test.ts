/**
 * dm-verity trees against veritysetup and fs-verity digests against fsverity, byte for byte;
 * tamper detection naming the block; bad input.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  appendVerity,
  formatVerity,
  fsverityDigest,
  fsverityDigestFile,
  geometry,
  type HashAlgorithm,
  readSuperblock,
  VerityError,
  verifyVerity,
} from '../../src/verity/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-verity-'));
after(() => rm(work, { recursive: true, force: true }));
const UUID = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';

/** Deterministic data: byte i = (i % 11) + (i % 439) + (i % 1103), as REFERENCE.md's vectors. */
function pattern(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i % 11) + (i % 439) + (i % 1103);
  return b;
}

interface Case {
  size: number;
  algorithm: HashAlgorithm;
  dataBlockSize: number;
  hashBlockSize: number;
  salt: string;
  version: 0 | 1;
  superblock: boolean;
}

const cases: Case[] = [];
const base: Case = {
  size: 4096,
  algorithm: 'sha256',
  dataBlockSize: 4096,
  hashBlockSize: 4096,
  salt: 'aa55',
  version: 1,
  superblock: true,
};
for (const size of [4096, 4097, 8192, 4096 * 128, 4096 * 129, 4096 * 128 * 128 + 4096])
  cases.push({ ...base, size });
for (const algorithm of ['sha1', 'sha512'] as const)
  for (const version of [0, 1] as const) cases.push({ ...base, size: 4096 * 300, algorithm, version });
for (const [dataBlockSize, hashBlockSize] of [
  [512, 512],
  [1024, 65536],
  [65536, 1024],
  [2048, 8192],
])
  cases.push({ ...base, size: 70_000 * 3, dataBlockSize: dataBlockSize!, hashBlockSize: hashBlockSize! });
cases.push({ ...base, size: 512 * 300, dataBlockSize: 512, hashBlockSize: 512 }); // three levels
cases.push({ ...base, size: 4096 * 5, salt: '' });
cases.push({ ...base, size: 4096 * 5, salt: 'ff'.repeat(256) });
cases.push({ ...base, size: 4096 * 200, superblock: false });
cases.push({ ...base, size: 4096 * 200, superblock: false, version: 0, algorithm: 'sha1', salt: '' });

test('trees and root hashes are byte-identical to veritysetup format', async () => {
  const data = join(work, 'data.img');
  for (const c of cases) {
    writeFileSync(data, pattern(c.size));
    const ours = join(work, 'ours.hash');
    const theirs = join(work, 'theirs.hash');
    rmSync(theirs, { force: true });
    const r = await formatVerity(data, ours, { ...c, salt: Buffer.from(c.salt, 'hex'), uuid: UUID });
    const out = execFileSync(
      'veritysetup',
      [
        'format',
        data,
        theirs,
        `--hash=${c.algorithm}`,
        `--data-block-size=${c.dataBlockSize}`,
        `--hash-block-size=${c.hashBlockSize}`,
        `--salt=${c.salt || '-'}`,
        `--format=${c.version}`,
        `--uuid=${UUID}`,
        ...(c.superblock ? [] : ['--no-superblock']),
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const label = JSON.stringify(c);
    assert.equal(r.rootHash.toString('hex'), /Root hash:\s+(\S+)/.exec(out)![1], label);
    assert.ok(readFileSync(ours).equals(readFileSync(theirs)), `hash file differs: ${label}`);
    // And each side verifies the other's.
    const verifyArgs = c.superblock
      ? []
      : [
          `--hash=${c.algorithm}`,
          `--data-block-size=${c.dataBlockSize}`,
          `--hash-block-size=${c.hashBlockSize}`,
          `--salt=${c.salt || '-'}`,
          `--format=${c.version}`,
          '--no-superblock',
        ];
    execFileSync('veritysetup', ['verify', data, ours, r.rootHash.toString('hex'), ...verifyArgs], {
      stdio: 'ignore',
    });
    await verifyVerity(
      data,
      theirs,
      r.rootHash.toString('hex'),
      c.superblock ? {} : { ...c, salt: Buffer.from(c.salt, 'hex') },
    );
  }
  // The three-level case really has three levels.
  assert.equal(
    geometry({ algorithm: 'sha256', hashBlockSize: 512, dataBlocks: 300, version: 1 }).levelBlocks.length,
    3,
  );
});

test('a few hundred MiB, through the CLI, in the same file at a hash offset', async () => {
  const data = join(work, 'big.img');
  writeFileSync(data, Buffer.alloc(0));
  truncateSync(data, 300 << 20);
  const fd = execFileSync('sh', [
    '-c',
    `head -c 50000000 /dev/urandom | dd of=${data} bs=1M seek=10 conv=notrunc status=none`,
  ]);
  void fd;
  const offset = String(300 << 20);
  const r = runSeal(['verity', 'format', data, data, '--hash-offset', offset, '--salt', '-', '--uuid', UUID]);
  assert.equal(r.status, 0, r.stderr);
  const copy = join(work, 'big-ref.img');
  execFileSync('cp', [data, copy]);
  truncateSync(copy, 300 << 20);
  const ref = execFileSync(
    'veritysetup',
    ['format', copy, copy, '--hash-offset', offset, '--salt=-', `--uuid=${UUID}`],
    { encoding: 'utf8' },
  );
  assert.equal(r.stdout.replace(data, copy), ref);
  assert.ok(readFileSync(data).equals(readFileSync(copy)));
  rmSync(copy);
});

test('trees whose upper levels outgrow the buffers they are built in equal the reference tools', async () => {
  // Small blocks make many levels and many hash blocks per level from a few tens of MiB.
  const data = join(work, 'levels.img');
  const random = prng(11);
  const bytes = Buffer.alloc(80 << 20);
  for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(Math.floor(random() * 2 ** 32), i);
  writeFileSync(data, bytes);
  const theirs = join(work, 'levels-theirs.hash');
  rmSync(theirs, { force: true });
  const r = await formatVerity(data, join(work, 'levels-ours.hash'), {
    dataBlockSize: 512,
    hashBlockSize: 512,
    salt: Buffer.from('0a', 'hex'),
    uuid: UUID,
  });
  execFileSync('veritysetup', [
    'format',
    data,
    theirs,
    '--data-block-size=512',
    '--hash-block-size=512',
    '--salt=0a',
    `--uuid=${UUID}`,
  ]);
  assert.ok(readFileSync(join(work, 'levels-ours.hash')).equals(readFileSync(theirs)));
  assert.ok(geometry(r).levelBlocks[1]! > 512, 'level 1 spans more than one buffer of 512 blocks');
  await verifyVerity(data, theirs, r.rootHash.toString('hex'));
  const args = ['--hash-alg=sha512', '--block-size=1024'];
  const expected = execFileSync('fsverity', ['digest', data, ...args], { encoding: 'utf8' }).split(/[: ]/)[1];
  const options = { algorithm: 'sha512', blockSize: 1024 } as const;
  assert.equal((await fsverityDigestFile(data, options)).toString('hex'), expected);
  assert.equal((await fsverityDigest(bytes, options)).toString('hex'), expected);
  rmSync(data);
});

test('a tree into an existing hash file at an offset keeps the bytes around it, as veritysetup does', async () => {
  const data = join(work, 'offset-data.img');
  writeFileSync(data, pattern(4096 * 700));
  const before = Buffer.alloc(20_000, 0xa5);
  const ours = join(work, 'offset-ours.hash');
  const theirs = join(work, 'offset-theirs.hash');
  writeFileSync(ours, before);
  writeFileSync(theirs, before);
  const r = await formatVerity(data, ours, { hashOffset: 16384, salt: Buffer.from('77', 'hex'), uuid: UUID });
  const out = execFileSync(
    'veritysetup',
    ['format', data, theirs, '--hash-offset=16384', '--salt=77', `--uuid=${UUID}`],
    { encoding: 'utf8' },
  );
  assert.equal(r.rootHash.toString('hex'), /Root hash:\s+(\S+)/.exec(out)![1]);
  assert.ok(readFileSync(ours).equals(readFileSync(theirs)));
  await verifyVerity(data, theirs, r.rootHash.toString('hex'), { hashOffset: 16384 });
});

test('seal verity format prints what veritysetup prints; fsverity digest output is identical', () => {
  const data = join(work, 'cli.img');
  writeFileSync(data, pattern(4096 * 10));
  rmSync(join(work, 'cli-ref.hash'), { force: true });
  const ours = runSeal(['verity', 'format', data, join(work, 'cli.hash'), '--salt', '0011', '--uuid', UUID]);
  const theirs = execFileSync(
    'veritysetup',
    ['format', data, join(work, 'cli-ref.hash'), '--salt=0011', `--uuid=${UUID}`],
    { encoding: 'utf8' },
  );
  assert.equal(ours.stdout.replace('cli.hash', 'cli-ref.hash'), theirs);
  const files = [data, join(work, 'cli.hash')];
  for (const args of [[], ['--hash-alg', 'sha512'], ['--block-size', '1024', '--salt', 'abcd']]) {
    const seal = runSeal(['fsverity', 'digest', ...args, ...files]);
    assert.equal(seal.status, 0, seal.stderr);
    assert.equal(seal.stdout, execFileSync('fsverity', ['digest', ...args, ...files], { encoding: 'utf8' }));
  }
});

test('fs-verity digests: the public vectors and fsverity digest on many sizes', async () => {
  assert.equal(
    (await fsverityDigest(new Uint8Array(0))).toString('hex'),
    '3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95',
  );
  assert.equal(
    (await fsverityDigest(Buffer.from('hello world'))).toString('hex'),
    '1e2eaa4202d750a41174ee454970b92c1bc2f925b1e35076d8c7d5f56362ba64',
  );
  const file = join(work, 'fsv.bin');
  for (const size of [1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 129 * 4096 * 128 + 7]) {
    for (const [algorithm, blockSize, salt] of [
      ['sha256', 4096, ''],
      ['sha512', 1024, '00'],
      ['sha256', 65536, 'ab'.repeat(32)],
    ] as const) {
      const data = pattern(size);
      writeFileSync(file, data);
      const args = [
        `--hash-alg=${algorithm}`,
        `--block-size=${blockSize}`,
        ...(salt ? [`--salt=${salt}`] : []),
      ];
      const expected = execFileSync('fsverity', ['digest', file, ...args], { encoding: 'utf8' })
        .split(' ')[0]!
        .split(':')[1];
      const options = { algorithm, blockSize, salt: Buffer.from(salt, 'hex') };
      assert.equal((await fsverityDigestFile(file, options)).toString('hex'), expected, `${size} ${args}`);
      // Streamed in chunks of odd and whole-block sizes: the same digest.
      for (const step of size < 100_000 ? [1, 7777, blockSize, blockSize + 1] : [7777, (1 << 20) + 3]) {
        const chunks = (async function* () {
          for (let i = 0; i < data.length; i += step) yield data.subarray(i, i + step);
        })();
        assert.equal((await fsverityDigest(chunks, options)).toString('hex'), expected, `${size} by ${step}`);
      }
    }
  }
});

test('any flipped byte of data, tree or superblock fails verification and names the block', async () => {
  const data = join(work, 'tamper.img');
  const size = 4096 * 300;
  writeFileSync(data, pattern(size));
  const r = await appendVerity(data, { salt: Buffer.from('5a5a', 'hex'), uuid: UUID });
  assert.equal(r.hashOffset, size);
  execFileSync('veritysetup', [
    'verify',
    data,
    data,
    r.rootHash.toString('hex'),
    '--hash-offset',
    String(r.hashOffset),
  ]);
  const pristine = readFileSync(data);
  const root = r.rootHash.toString('hex');
  const random = prng(7);
  const g = geometry(r);
  for (let i = 0; i < 60; i++) {
    const region = i % 3;
    let at: number;
    if (region === 0) at = Math.floor(random() * size);
    else if (region === 1) at = r.hashOffset + 4096 + Math.floor(random() * g.treeBlocks * 4096);
    else {
      // Superblock bytes other than the UUID, which no hash covers (veritysetup ignores it too).
      do at = Math.floor(random() * 512);
      while (at >= 16 && at < 32);
      at += r.hashOffset;
    }
    const bytes = Buffer.from(pristine);
    bytes[at]! ^= 1 << Math.floor(random() * 8);
    writeFileSync(data, bytes);
    await assert.rejects(verifyVerity(data, data, root, { hashOffset: r.hashOffset }), (e: unknown) => {
      assert.ok(e instanceof VerityError, String(e));
      if (region === 0) assert.deepEqual(e.block, { kind: 'data', index: Math.floor(at / 4096) });
      if (region === 1) assert.equal(e.block?.kind, 'hash');
      assert.ok(e.block, 'the failure names a block');
      return true;
    });
  }
  writeFileSync(data, pristine);
  await verifyVerity(data, data, root, { hashOffset: r.hashOffset, blocks: { first: 10, count: 5 } });
  // The CLI names the block and exits non-zero.
  const bytes = Buffer.from(pristine);
  bytes[4096 * 42 + 5]! ^= 0xff;
  writeFileSync(data, bytes);
  const cli = runSeal(['verity', 'verify', data, data, root, '--hash-offset', String(r.hashOffset)]);
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /data block 42 is corrupt/);
  // Slots that do not fill their blocks (format 0, SHA-1: 128 of 20 bytes in 4096) are
  // compared block by block: the culprit is still named.
  writeFileSync(data, pattern(4096 * 300));
  const hash = join(work, 'tamper-sha1.hash');
  const v0 = await formatVerity(data, hash, { algorithm: 'sha1', version: 0, uuid: UUID });
  for (const [at, expected] of [
    [4096 * 255 + 9, { kind: 'data', index: 255 }],
    [4096 * 299, { kind: 'data', index: 299 }],
  ] as const) {
    const bytes = pattern(4096 * 300);
    bytes[at]! ^= 0x10;
    writeFileSync(data, bytes);
    await assert.rejects(verifyVerity(data, hash, v0.rootHash.toString('hex')), (e: unknown) => {
      assert.ok(e instanceof VerityError, String(e));
      assert.deepEqual(e.block, expected);
      return true;
    });
  }
  const tree = readFileSync(hash);
  tree[4096 + 4096 * 1 + 7]! ^= 1; // the first of the three leaf-level hash blocks
  writeFileSync(hash, tree);
  writeFileSync(data, pattern(4096 * 300));
  await assert.rejects(verifyVerity(data, hash, v0.rootHash.toString('hex')), (e: unknown) => {
    assert.ok(e instanceof VerityError, String(e));
    assert.deepEqual(e.block, { kind: 'hash', level: 0, index: 0 });
    return true;
  });
});

test('bad input: truncated tree, absurd superblock, long salt, wrong root length, too little data', async () => {
  const data = join(work, 'bad.img');
  writeFileSync(data, pattern(4096 * 200));
  const hash = join(work, 'bad.hash');
  const r = await formatVerity(data, hash, { uuid: UUID });
  const root = r.rootHash.toString('hex');
  const full = readFileSync(hash);
  const expectCode = async (code: string, fn: () => Promise<unknown>) =>
    assert.rejects(fn, (e: unknown) => e instanceof VerityError && e.code === code);

  writeFileSync(hash, full.subarray(0, full.length - 100));
  await expectCode('VERITY_TRUNCATED', () => verifyVerity(data, hash, root));
  const absurd = Buffer.from(full);
  absurd.writeBigUInt64LE(1n << 60n, 72);
  writeFileSync(hash, absurd);
  await expectCode('VERITY_BAD_SUPERBLOCK', () => verifyVerity(data, hash, root));
  const badBlock = Buffer.from(full);
  badBlock.writeUInt32LE(3000, 64);
  writeFileSync(hash, badBlock);
  await expectCode('VERITY_BAD_SUPERBLOCK', () => verifyVerity(data, hash, root));
  assert.throws(() => readSuperblock(data), VerityError);
  await expectCode('VERITY_INVALID_OPTION', () => formatVerity(data, hash, { salt: new Uint8Array(257) }));
  writeFileSync(hash, full);
  await expectCode('VERITY_INVALID_OPTION', () => verifyVerity(data, hash, root.slice(2)));
  await expectCode('VERITY_INVALID_OPTION', () => verifyVerity(data, hash, 'zz'.repeat(32)));
  const tiny = join(work, 'tiny.img');
  writeFileSync(tiny, Buffer.from('x'));
  await expectCode('VERITY_INVALID_OPTION', () => formatVerity(tiny, join(work, 'tiny.hash')));
  assert.notEqual(
    spawnSync('veritysetup', ['format', tiny, join(work, 'tiny-ref.hash')]).status,
    0,
    'veritysetup refuses it too',
  );
  const cli = runSeal(['verity', 'verify', data, hash, 'abc']);
  assert.equal(cli.status, 1);
  assert.equal(cli.stderr.trim().split('\n').length, 1);
});
