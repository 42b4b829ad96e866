/**
 * composefs: the public bit-exact vectors, dumpfile round trips on a large generated tree,
 * images of real trees mounted by the kernel over the object store, and bad input.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  ComposefsError,
  composefsTree,
  formatDumpfile,
  mountComposefs,
  parseDumpfile,
  readComposefsImage,
  unmountComposefs,
  writeComposefsImage,
} from '../../src/composefs/index.ts';
import { ErofsError } from '../../src/erofs/index.ts';
import { treeFromDirectory, writeTreeToDirectory } from '../../src/tree/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { generatedComposefsTree as generatedTree } from '../helpers/composefs.ts';
import { corpusPath } from '../helpers/corpus.ts';
import { assertTreesEqual, generateEdgeCaseTree, prng } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-composefs-'));
after(() => rm(work, { recursive: true, force: true }));

// The public vectors (REFERENCE.md): fs-verity digests of the images mkcomposefs makes.
const ROOT_ONLY = '/ 0 40755 2 0 0 0 0.0 - - -\n';
const SIMPLE = `/ 0 40755 2 0 0 0 0.0 - - -
/blkdev 0 60000 1 0 0 123 0.0 - - -
/chrdev 0 20000 1 0 0 123 0.0 - - -
/fifo 0 10000 1 0 0 0 0.0 - - -
/regular-external 1234 100000 1 0 0 0 0.0 5a/${'5a'.repeat(31)} - ${'5a'.repeat(32)}
/regular-inline 4 100000 1 0 0 0 0.0 - hihi -
/socket 0 140000 1 0 0 0 0.0 - - -
/symlink 7 120000 1 0 0 0 0.0 /target - -
`;
const VECTORS = [
  ['root only', ROOT_ONLY, 0, '8f589e8f57ecb88823736b0d857ddca1e1068a23e264fad164b28f7038eb3682'],
  ['root only', ROOT_ONLY, 1, '14a26c957c84f6eb774b91205476adc13196c7c33b9dd97d08d43725ecb90b63'],
  ['simple', SIMPLE, 0, '9f3f5620ee0c54708516467d0d58741e7963047c7106b245d94c298259d0fa01'],
  ['simple', SIMPLE, 1, 'ad6db6427568a1e4fdc772cbab7b6063f5eb4b33cb62982a740ba9213e5962b5'],
] as const;

for (const [name, dump, version, digest] of VECTORS) {
  test(`the ${name} vector, format ${version}, is bit-identical to mkcomposefs`, async () => {
    const result = await writeComposefsImage(parseDumpfile(dump), { version });
    assert.equal(result.digest.toString('hex'), digest);
    // The reference tool agrees on the digest of the bytes Seal wrote.
    const image = join(work, `vector-${name.replace(' ', '-')}-${version}.cfs`);
    writeFileSync(image, result.image);
    assert.equal(
      execFileSync('fsverity', ['digest', image], { encoding: 'utf8' }).split(' ')[0],
      `sha256:${digest}`,
    );
  });
}

test('seal composefs create dumpfile:PATH --print-digest prints the vector digest', async () => {
  const dump = join(work, 'simple.dump');
  writeFileSync(dump, SIMPLE);
  for (const [version, digest] of [
    ['0', VECTORS[2][3]],
    ['1', VECTORS[3][3]],
  ] as const) {
    const out = join(work, `simple-${version}.cfs`);
    const r = await runSeal([
      'composefs',
      'create',
      `dumpfile:${dump}`,
      out,
      '--format-version',
      version,
      '--print-digest',
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), digest);
  }
  const r = await runSeal(['composefs', 'dump', join(work, 'simple-1.cfs')]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.split('\n')[5], '/regular-inline 4 100000 1 0 0 0 0.0 - hihi -');
  assert.match(
    r.stdout,
    new RegExp(
      `^/regular-external 1234 100000 1 0 0 0 0\\.0 5a/${'5a'.repeat(31)} - ${'5a'.repeat(32)}$`,
      'm',
    ),
  );
});

test('dumpfile → image → dump is the identity on a large generated tree (both formats)', async () => {
  for (const version of [0, 1] as const) {
    // A dump names as a hardlink's target its first path; start from a tree where that holds.
    const image = join(work, `generated-${version}.cfs`);
    writeFileSync(image, (await writeComposefsImage(generatedTree(1, 4000), { version })).image);
    const canonical = formatDumpfile(readComposefsImage(image).root);
    const first = await writeComposefsImage(parseDumpfile(canonical), { version });
    writeFileSync(image, first.image);
    const dump = formatDumpfile(readComposefsImage(image).root);
    assert.equal(dump, canonical);
    assert.ok(dump.split('\n').length > 3000);
    const second = await writeComposefsImage(parseDumpfile(dump), { version });
    assert.ok(second.image.equals(first.image), 'the image of the dump differs from the original image');
    writeFileSync(image, second.image);
    assert.equal(formatDumpfile(readComposefsImage(image).root), dump);
  }
});

test('a directory becomes an image whose kernel mount over the object store equals it', async () => {
  const source = join(work, 'edge');
  await writeTreeToDirectory(generateEdgeCaseTree(21, { sockets: true }), source);
  const expected = await treeFromDirectory(source);
  const objects = join(work, 'objects');
  const image = join(work, 'edge.cfs');
  const r = await runSeal(['composefs', 'create', source, image, '--objects', objects, '--json']);
  assert.equal(r.status, 0, r.stderr);
  // Every object is named by its fs-verity digest, as the reference tool computes it.
  const names: string[] = [];
  for (const dir of readdirSync(objects))
    for (const f of readdirSync(join(objects, dir))) names.push(`${dir}/${f}`);
  assert.ok(names.length > 10);
  const digests = execFileSync('fsverity', ['digest', ...names.map((n) => join(objects, n))], {
    encoding: 'utf8',
  });
  for (const [i, line] of digests.trim().split('\n').entries())
    assert.equal(line.split(' ')[0], `sha256:${names[i]!.replace('/', '')}`);
  const mnt = join(work, 'mnt');
  await mkdir(mnt, { recursive: true });
  await mountComposefs(image, mnt, objects);
  try {
    await assertTreesEqual(await treeFromDirectory(mnt), expected, { root: false });
  } finally {
    await unmountComposefs(mnt);
  }
  // A second image of the same files adds no objects.
  const again = await runSeal([
    'composefs',
    'create',
    source,
    join(work, 'edge-again.cfs'),
    '--objects',
    objects,
  ]);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(
    readdirSync(objects).reduce((n, d) => n + readdirSync(join(objects, d)).length, 0),
    names.length,
  );
});

test('the Debian root filesystem as composefs mounts and reads back', async () => {
  const corpus = corpusPath();
  const tree = await treeFromDirectory(corpus);
  const objects = join(work, 'debian-objects');
  const result = await writeComposefsImage(await composefsTree(tree, { objects }));
  const image = join(work, 'debian.cfs');
  writeFileSync(image, result.image);
  const mnt = join(work, 'mnt-debian');
  await mkdir(mnt, { recursive: true });
  await mountComposefs(image, mnt, objects);
  try {
    await assertTreesEqual(await treeFromDirectory(mnt), tree, { root: false });
  } finally {
    await unmountComposefs(mnt);
  }
  await rm(objects, { recursive: true });
});

test('malformed dumpfiles give typed errors naming the line', () => {
  const cases: [string, RegExp][] = [
    ['', /no root/],
    ['/a 0 100644 1 0 0 0 0.0 - - -\n', /root must come first/],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0.0 - - abcd\n`, /line 2: digest must be 64 hex digits/],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0.0 - - ${'zz'.repeat(32)}\n`, /digest/],
    [`${ROOT_ONLY}/x 0 170644 1 0 0 0 0.0 - - -\n`, /invalid mode/],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0 - - -\n`, /invalid mtime/],
    [`${ROOT_ONLY}/x 3 100644 1 0 0 0 0.0 - ab -\n`, /content is 2 bytes but the size is 3/],
    [`${ROOT_ONLY}/a/b 0 100644 1 0 0 0 0.0 - - -\n`, /parent directory missing/],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0.0 - - - user.a\n`, /xattr without =/],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0.0 \\q - -\n`, /unsupported escape/],
    [`${ROOT_ONLY}/x 0 @100644 1 0 0 0 0.0 /nope - -\n`, /no target at \/nope/],
    [
      `${ROOT_ONLY}/d 0 40755 1 0 0 0 0.0 - - -\n/x 0 @100644 1 0 0 0 0.0 /d - -\n`,
      /hardlink to the directory/,
    ],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0.0 - - -\n/x 0 100644 1 0 0 0 0.0 - - -\n`, /already exists/],
    [`${ROOT_ONLY}/l 0 120777 1 0 0 0 0.0 - - -\n`, /symlink without a target/],
    [`${ROOT_ONLY}/x 0 100644 1 0 0 0 0.0 - - -\n\n`, /line 3: empty path/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseDumpfile(text),
      (e: unknown) =>
        e instanceof ComposefsError && e.code === 'COMPOSEFS_BAD_DUMPFILE' && message.test(e.message),
      JSON.stringify(text),
    );
  }
});

test('the dumpfile parser and the image reader are fuzzed', async () => {
  const random = prng(5);
  const dump = formatDumpfile(generatedTree(2, 120));
  const alphabet = ' \\\n=@-/0123456789abcdefx.';
  let parsed = 0;
  for (let i = 0; i < 1500; i++) {
    const chars = [...dump];
    for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++) {
      const at = Math.floor(random() * chars.length);
      const r = random();
      if (r < 0.4) chars[at] = alphabet[Math.floor(random() * alphabet.length)]!;
      else if (r < 0.7) chars.splice(at, 1 + Math.floor(random() * 10));
      else chars.splice(at, 0, alphabet[Math.floor(random() * alphabet.length)]!);
    }
    try {
      const root = parseDumpfile(chars.join(''));
      if (i % 10 === 0) await writeComposefsImage(root);
      parsed++;
    } catch (error) {
      assert.ok(
        error instanceof ComposefsError || error instanceof ErofsError,
        `case ${i}: ${(error as Error).stack}`,
      );
    }
  }
  assert.ok(parsed > 100 && parsed < 1400, `${parsed} of 1500 mutated dumpfiles parsed`);

  const base = (await writeComposefsImage(generatedTree(3, 200))).image;
  const mutant = join(work, 'mutant.cfs');
  let refused = 0;
  for (let i = 0; i < 600; i++) {
    const data = Buffer.from(base);
    if (random() < 0.1) writeFileSync(mutant, data.subarray(0, Math.floor(random() * data.length)));
    else {
      for (let k = 0, n = 1 + Math.floor(random() * 6); k < n; k++)
        data[Math.floor(random() * data.length)] = Math.floor(random() * 256);
      writeFileSync(mutant, data);
    }
    try {
      formatDumpfile(readComposefsImage(mutant).root);
    } catch (error) {
      assert.ok(
        error instanceof ComposefsError || error instanceof ErofsError,
        `case ${i}: ${(error as Error).stack}`,
      );
      refused++;
    }
  }
  assert.ok(refused > 60, `only ${refused} mutants were refused`);
});

test('garbage instead of an image is refused with a typed error', () => {
  const file = join(work, 'garbage.cfs');
  writeFileSync(file, Buffer.alloc(8192, 7));
  assert.throws(
    () => readComposefsImage(file),
    (e: unknown) => e instanceof ErofsError && e.code === 'EROFS_BAD_MAGIC',
  );
  writeFileSync(file, readFileSync(join(work, 'generated-1.cfs')).fill(0, 0, 4));
  assert.throws(
    () => readComposefsImage(file),
    (e: unknown) => e instanceof ComposefsError && e.code === 'COMPOSEFS_BAD_IMAGE',
  );
});
