/**
 * Tree fidelity of sealed images, checked with the kernel (loop mounts on this host) and the
 * reference tools:
 * - a symlink whose tar header says 0644 is 0777 in sealed squashfs and EROFS layers, in
 *   `seal image unpack` and in umoci's unpack alike (what Linux shows for every symlink);
 *   composefs keeps the header's bits, as composefs-rs maps tar to composefs, so the digests
 *   stay those composefs-rs computes;
 * - per-layer sealing turns a hardlink to a lower layer's file into a copy: `seal image seal`
 *   and `seal image verify` say so in one line; links of one layer to the same lower file stay
 *   one inode in that layer; --flatten keeps the hardlink.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';
import { dirEntry, fileEntry, linkEntry, tarOf, writeLayout } from '../helpers/layout.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-fidelity-'));
const mounts: string[] = [];
after(async () => {
  for (const m of mounts.reverse()) execFileSync('umount', [m], { stdio: 'ignore' });
  await rm(work, { recursive: true, force: true });
});

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const blob = (layout: string, digest: string) => join(layout, 'blobs/sha256', digest.slice(7));

function mount(type: string, file: string, name: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  execFileSync('mount', ['-t', type, '-o', 'loop,ro', file, dir]);
  mounts.push(dir);
  return dir;
}

const source = join(work, 'source');
writeLayout(source, [
  await tarOf([
    dirEntry('etc/'),
    fileEntry('etc/target', 'pointed to'),
    { ...linkEntry('etc/odd-link', 'symlink', 'target'), mode: 0o644 },
    { ...linkEntry('etc/plain-link', 'symlink', 'target'), mode: 0o777 },
    fileEntry('lower-file', 'linked from the layer above'),
  ]),
  await tarOf([
    linkEntry('first-link', 'hardlink', 'lower-file'),
    linkEntry('second-link', 'hardlink', 'lower-file'),
    fileEntry('own', 'this layer'),
  ]),
]);

test('symlinks are 0777 in sealed squashfs and EROFS layers, unpacked images and umoci alike', () => {
  for (const format of ['squashfs', 'erofs']) {
    const layout = join(work, format);
    const out = JSON.parse(
      seal('image', 'seal', `oci:${source}:test`, `oci:${layout}:s`, '--format', format, '--json'),
    );
    const at = mount(format, blob(layout, out.layers[0].digest), `${format}-layer-1`);
    for (const link of ['odd-link', 'plain-link']) {
      const st = lstatSync(join(at, 'etc', link));
      assert.ok(st.isSymbolicLink());
      assert.equal(st.mode & 0o7777, 0o777, `${format} ${link}`);
    }
  }
  const listing = execFileSync(
    'unsquashfs',
    [
      '-lln',
      blob(
        join(work, 'squashfs'),
        JSON.parse(seal('image', 'inspect', `oci:${join(work, 'squashfs')}:s`, '--json')).manifest.layers[0]
          .digest,
      ),
    ],
    {
      encoding: 'utf8',
    },
  );
  assert.match(listing, /^lrwxrwxrwx .*etc\/odd-link -> target$/m);
  const unpacked = join(work, 'unpacked');
  seal('image', 'unpack', `oci:${source}:test`, unpacked);
  assert.equal(lstatSync(join(unpacked, 'etc/odd-link')).mode & 0o7777, 0o777);
  const bundle = join(work, 'umoci');
  execFileSync('umoci', ['raw', 'unpack', '--image', `${source}:test`, bundle], { stdio: 'ignore' });
  assert.equal(lstatSync(join(bundle, 'etc/odd-link')).mode & 0o7777, 0o777);
});

test('composefs keeps the header bits (as composefs-rs maps tar to composefs): 120644 in the image', () => {
  const layout = join(work, 'cfs');
  seal('image', 'seal', `oci:${source}:test`, `oci:${layout}:s`, '--format', 'composefs');
  const image = join(work, 'merged.cfs');
  const digest = seal('composefs', 'create', `oci:${layout}:s`, image, '--print-digest').trim();
  const manifest = JSON.parse(seal('image', 'inspect', `oci:${layout}:s`, '--json')).manifest;
  assert.equal(digest, manifest.annotations['composefs.merged.erofs.v1.fsverity-sha256-12']);
  const dump = seal('composefs', 'dump', image);
  assert.match(dump, /^\/etc\/odd-link 6 120644 1 0 0 0 \S+ target - -$/m);
  assert.match(dump, /^\/etc\/plain-link 6 120777 1 0 0 0 \S+ target - -$/m);
  // The kernel shows what the image holds.
  const at = mount('erofs', image, 'cfs-meta');
  assert.equal(lstatSync(join(at, 'etc/odd-link')).mode & 0o7777, 0o644);
});

test('per-layer sealing: a hardlink into a lower layer becomes a copy, said once per image', () => {
  const layout = join(work, 'squashfs');
  const note =
    /^note: 2 hardlinks to a lower layer's file are copies in the per-layer filesystem of layer 2 /m;
  const sealedAgain = seal('image', 'seal', `oci:${source}:test`, `oci:${join(work, 'again')}:s`);
  assert.match(sealedAgain, note);
  assert.equal(sealedAgain.match(/^note:/gm)?.length, 1);
  const verified = seal('image', 'verify', `oci:${layout}:s`);
  assert.match(verified, note);
  const manifest = JSON.parse(seal('image', 'inspect', `oci:${layout}:s`, '--json')).manifest;
  assert.equal(manifest.layers[1].annotations['seal.layer.hardlinks-copied'], '2');
  assert.equal(manifest.layers[0].annotations['seal.layer.hardlinks-copied'], undefined);
  const json = JSON.parse(seal('image', 'verify', `oci:${layout}:s`, '--json'));
  assert.equal(json.layers[1].hardlinksCopied, 2);
  // In layer 2's own filesystem: one copy, both links to it.
  const at = mount('squashfs', blob(layout, manifest.layers[1].digest), 'layer-2');
  const first = lstatSync(join(at, 'first-link'));
  assert.equal(first.nlink, 2);
  assert.equal(lstatSync(join(at, 'second-link')).ino, first.ino);
  assert.equal(readFileSync(join(at, 'first-link'), 'utf8'), 'linked from the layer above');
  // Flattened, the hardlink is kept whole (three links), and nothing is said.
  const flat = join(work, 'flat');
  const out = seal('image', 'seal', `oci:${source}:test`, `oci:${flat}:s`, '--flatten', '--json');
  const flatLayer = JSON.parse(out).layers[0];
  assert.equal(flatLayer.hardlinksCopied, undefined);
  const merged = mount('squashfs', blob(flat, flatLayer.digest), 'flat-layer');
  assert.equal(lstatSync(join(merged, 'lower-file')).nlink, 3);
  assert.doesNotMatch(seal('image', 'verify', `oci:${flat}:s`), /^note:/m);
});
