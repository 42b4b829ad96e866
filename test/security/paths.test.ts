/**
 * Paths from inputs stay inside the destination: tar entries that climb out with `..`, go
 * through a symlink, hardlink to a file outside, or hold a NUL — in ustar, GNU and pax form,
 * through every local transport — and EROFS and squashfs directory entries patched to `../x`,
 * `a/b` or a NUL are refused with typed errors, and nothing outside the destination changes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, test } from 'node:test';
import { ErofsImage } from '../../src/erofs/index.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  assertTyped,
  makeCanary,
  type PyMember,
  patchOnce,
  pythonTar,
  referenceImages,
  scratch,
} from './helpers.ts';
import { imageWithLayers, TRANSPORTS, unpack } from './images.ts';

const canary = makeCanary();
const work = scratch('paths');
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(canary.dir, { recursive: true, force: true });
});

/** How deep the destinations are below the filesystem root: enough `..` to reach the canary from any of them. */
const up = '../'.repeat(join(work, 'x', 'y').split('/').length);
const victimFromRoot = canary.victim.slice(1);

/** Layers an attacker writes, each with the typed codes a refusal may carry. */
const HOSTILE: [what: string, members: PyMember[], codes: string[]][] = [
  ['a file climbing out with ..', [{ name: `${up}${victimFromRoot}`, data: 'pwned' }], ['TREE_UNSAFE_PATH']],
  [
    '.. in the middle',
    [{ name: `a/b/../../../${up}${victimFromRoot}`, data: 'pwned' }],
    ['TREE_UNSAFE_PATH'],
  ],
  [
    'a directory climbing out',
    [
      { name: `${up}${canary.dir.slice(1)}/newdir`, type: 'dir' },
      { name: `${up}${canary.dir.slice(1)}/newdir/f`, data: 'x' },
    ],
    ['TREE_UNSAFE_PATH'],
  ],
  [
    'a file through a symlink to the canary',
    [
      { name: 'link', type: 'symlink', linkname: canary.dir },
      { name: 'link/victim', data: 'pwned' },
    ],
    ['TREE_SYMLINK_ESCAPE'],
  ],
  [
    'a file through a relative symlink climbing out',
    [
      { name: 'rel', type: 'symlink', linkname: `${up}${canary.dir.slice(1)}` },
      { name: 'rel/sub/inner', data: 'pwned' },
    ],
    ['TREE_SYMLINK_ESCAPE'],
  ],
  [
    'a directory through a symlink',
    [
      { name: 'dl', type: 'symlink', linkname: canary.dir },
      { name: 'dl/newdir', type: 'dir' },
    ],
    ['TREE_SYMLINK_ESCAPE'],
  ],
  [
    'a hardlink to a file outside (relative)',
    [{ name: 'h', type: 'hardlink', linkname: `${up}${victimFromRoot}` }],
    ['TREE_UNSAFE_PATH'],
  ],
  [
    'a hardlink to a file outside (absolute)',
    [{ name: 'h', type: 'hardlink', linkname: canary.victim }],
    ['TREE_HARDLINK_TARGET'],
  ],
  [
    'a hardlink through a symlink',
    [
      { name: 'l', type: 'symlink', linkname: canary.dir },
      { name: 'h', type: 'hardlink', linkname: 'l/victim' },
    ],
    ['TREE_SYMLINK_ESCAPE', 'TREE_HARDLINK_TARGET'],
  ],
  [
    'a device node beside a path climbing out',
    [{ name: `${up}tmp/seal-dev`, type: 'char' }],
    ['TREE_UNSAFE_PATH'],
  ],
];

for (const transport of TRANSPORTS) {
  test(`${transport}: hostile paths in ustar, GNU and pax layers are refused, nothing written anywhere`, async () => {
    let cases = 0;
    for (const [what, members, codes] of HOSTILE) {
      for (const format of ['ustar', 'gnu', 'pax'] as const) {
        // ustar cannot hold names over 255 bytes: those cases exist in GNU and pax form only.
        if (format === 'ustar' && members.some((m) => m.name.length > 250 || (m.linkname ?? '').length > 100))
          continue;
        const dest = join(work, `${transport}-${cases++}`);
        await assert.rejects(
          unpack(imageWithLayers(transport, [pythonTar(members, format)]), dest),
          (error) => {
            assertTyped(error, codes, `${transport}, ${format}, ${what}`);
            return true;
          },
          `${transport}, ${format}, ${what}: accepted`,
        );
        assert.ok(!existsSync(dest), `${what}: the destination was created`);
        canary.assertUntouched();
      }
    }
    assert.ok(cases >= 25, `${cases} cases`);
  });
}

test('a NUL in a pax path or link name is a typed error', async () => {
  for (const pax of [{ path: 'a\0/../../x' }, { linkpath: 'target\0evil' }] as Record<string, string>[]) {
    const layer = pythonTar([{ name: 'f', type: pax.path ? 'file' : 'symlink', linkname: 't', pax }], 'pax');
    // Python writes pax records as UTF-8: a NUL survives.
    assert.ok(layer.includes(Buffer.from('\0evil')) || layer.includes(Buffer.from('a\0/')));
    await assert.rejects(unpack(imageWithLayers('oci', [layer]), join(work, 'nul')), (error) => {
      assertTyped(error, ['TAR_INVALID_NAME'], JSON.stringify(pax));
      return true;
    });
  }
  canary.assertUntouched();
});

test('absolute and dot-prefixed paths land inside the destination', async () => {
  const layer = pythonTar(
    [
      { name: '/abs/file', data: 'a' },
      { name: './dot/file', data: 'b' },
      { name: 'plain//double', data: 'c' },
      { name: 'sym', type: 'symlink', linkname: canary.victim },
    ],
    'pax',
  );
  for (const transport of TRANSPORTS) {
    const dest = join(work, `inside-${transport}`);
    await unpack(imageWithLayers(transport, [layer]), dest);
    assert.equal(readFileSync(join(dest, 'abs/file'), 'utf8'), 'a');
    assert.equal(readFileSync(join(dest, 'dot/file'), 'utf8'), 'b');
    assert.equal(readFileSync(join(dest, 'plain/double'), 'utf8'), 'c');
    // A symlink is written as a symlink: its target is data, never followed while extracting.
    assert.equal(execFileSync('readlink', [join(dest, 'sym')], { encoding: 'utf8' }).trim(), canary.victim);
    canary.assertUntouched();
  }
});

/** An EROFS (or squashfs) image of a directory holding `names`, each a regular file. */
function imageWithNames(format: 'erofs' | 'squashfs', names: string[]): string {
  const src = join(work, `names-${Math.random().toString(36).slice(2)}`);
  mkdirSync(src);
  mkdirSync(join(src, 'dir'));
  names.forEach((name, i) => {
    writeFileSync(join(src, 'dir', name), `file ${i}`);
  });
  const images = referenceImages(src);
  return format === 'erofs' ? images.erofs : images.squashfs;
}

test('EROFS and squashfs directory entries patched to climb out, hold "/" or a NUL are refused by ls, cat and extract', () => {
  const variants: [string, string][] = [
    ['QQQQ', '../x'],
    ['WWWW', 'a/bc'],
    ['EEEE', 'e\0ee'],
    ['RRRRRRRRRRRRRRRRRRRR', `../../../../../../..`],
  ];
  for (const format of ['erofs', 'squashfs'] as const) {
    for (const [placeholder, hostile] of variants) {
      const image = imageWithNames(format, [placeholder, 'ordinary']);
      patchOnce(image, placeholder, hostile);
      const code = format === 'erofs' ? 'EROFS_CORRUPT' : 'SQUASHFS_CORRUPT';
      const dest = join(work, `ex-${format}-${Math.random().toString(36).slice(2)}`);
      for (const args of [
        [format, 'extract', image, dest],
        [format, 'ls', image],
        [format, 'cat', image, 'dir/ordinary'],
      ]) {
        const r = runSeal(args);
        assert.equal(
          r.status,
          1,
          `${args.join(' ')} with ${JSON.stringify(hostile)}: ${r.stdout} ${r.stderr}`,
        );
        assert.ok(r.stderr.endsWith(`[${code}]\n`) && r.stderr.split('\n').length === 2, r.stderr);
        assert.ok(!/erofs-root\/\.\.|squashfs-root\/\.\./.test(r.stdout), r.stdout);
      }
      assert.ok(!existsSync(dest));
      canary.assertUntouched();
    }
  }
});

test('the EROFS library reader refuses such an entry with a typed error (no TypeError, no moved file)', () => {
  const image = imageWithNames('erofs', ['ZZZZ']);
  patchOnce(image, 'ZZZZ', '../z');
  const opened = ErofsImage.open(image);
  try {
    assert.throws(
      () => opened.toTree(),
      (error) => {
        assertTyped(error, ['EROFS_CORRUPT'], 'toTree');
        return true;
      },
    );
  } finally {
    opened.close();
  }
  assert.ok(relative(work, image).length > 0);
});
