/**
 * The acceptance case of sealing: the real Debian minimal root filesystem plus two layers that
 * add, replace, delete and make opaque. Sealed as squashfs, EROFS (per layer and flattened) and
 * composefs, each mounts — through the CLI, as a user would — into exactly the tree
 * `seal image unpack` gives for the original.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { treeFromDirectory } from '../../src/tree/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { corpusPath } from '../helpers/corpus.ts';
import { dirEntry, fileEntry, linkEntry, tarOf, writeLayout } from '../helpers/layout.ts';
import { assertTreesEqual } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-debian-'));
after(() => rm(work, { recursive: true, force: true }));

function seal(...args: string[]): string {
  const r = runSeal(args, { env: { SEAL_RUNTIME_DIR: join(work, 'runtime') } });
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('Debian plus two layers: every sealed format mounts into the unpacked tree', async () => {
  const corpus = corpusPath();
  const base = execFileSync('tar', ['-C', corpus, '--numeric-owner', '--sort=name', '-cf', '-', '.'], {
    maxBuffer: 1 << 30,
  });
  const layout = join(work, 'layout');
  writeLayout(layout, [
    base,
    await tarOf([
      fileEntry('etc/.wh.hostname', ''), // delete a file
      dirEntry('usr/share/doc/', { mode: 0o755 }),
      fileEntry('usr/share/doc/.wh..wh..opq', ''), // hide every package's docs
      fileEntry('usr/share/doc/README', 'docs live elsewhere on this appliance'),
      fileEntry('etc/motd', 'sealed by seal\n'), // replace a file
      linkEntry('usr/local/bin/sh-again', 'hardlink', 'usr/bin/dash'), // a hardlink into the base
      dirEntry('srv/app/', { mode: 0o750, uid: 1000, gid: 1000 }),
      fileEntry('srv/app/config', 'mode=prod\n', { uid: 1000, gid: 1000 }),
    ]),
    await tarOf([
      fileEntry('srv/.wh.app', ''), // delete a directory added above
      fileEntry('srv/app', 'now a file'), // and put a file in its place
      fileEntry('etc/.wh.motd', ''),
      fileEntry('etc/motd', 'replaced again\n'),
      linkEntry('usr/bin/sealed', 'symlink', '/usr/bin/dash'),
    ]),
  ]);
  const unpacked = join(work, 'unpacked');
  seal('image', 'unpack', `oci:${layout}:test`, unpacked);
  const expected = await treeFromDirectory(unpacked);
  const cases = [
    ['squashfs', []],
    ['erofs', []],
    ['erofs', ['--flatten']],
    ['composefs', []],
  ] as const;
  for (const [format, extra] of cases) {
    const tag = `${format}${extra.length ? '-flat' : ''}`;
    seal('image', 'seal', `oci:${layout}:test`, `oci:${layout}:${tag}`, '--format', format, ...extra);
    seal('image', 'verify', `oci:${layout}:${tag}`);
    const target = join(work, `mnt-${tag}`);
    seal('image', 'mount', `oci:${layout}:${tag}`, target);
    try {
      // Per-layer squashfs/EROFS: the hardlink into the base is a copy (layers are separate
      // filesystems); flattened and composefs keep it one inode.
      await assertTreesEqual(await treeFromDirectory(target), expected, {
        root: false,
        hardlinks: extra.length > 0 || format === 'composefs',
      });
    } finally {
      seal('image', 'umount', target);
    }
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(target), `${tag}: every mount is gone`);
  }
});
