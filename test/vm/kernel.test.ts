/**
 * What this host's kernel cannot show, checked in a VM booting Debian's 6.12 kernel:
 * - sealed squashfs and EROFS layers open with `veritysetup open` and their annotated root
 *   hashes, report `verified`, mount and read back; one flipped byte makes reads fail (EIO) and
 *   the mapping report corruption;
 * - fs-verity: `fsverity measure` of files the kernel protects equals Seal's digests (object
 *   names, other algorithms and block sizes);
 * - a composefs image Seal wrote mounts with `verity=require` over a verity-enabled object
 *   store and reads back; an object replaced by one without fs-verity is refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runSeal } from '../helpers/cli.ts';
import { writeThreeLayerImage } from '../helpers/layout.ts';
import { prng, randomBytes } from '../helpers/trees.ts';
import { runInVm, SEAL_IN_VM, SEAL_IN_VM_PROGRAMS, sealForVm } from '../helpers/vm.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-vm-test-'));
after(() => rm(work, { recursive: true, force: true }));

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('sealed squashfs and EROFS layers under real dm-verity: verified, mounted, tampering fails reads', async () => {
  const source = join(work, 'source');
  await writeThreeLayerImage(source);
  const files: Record<string, string> = {};
  let script = '';
  for (const format of ['squashfs', 'erofs'] as const) {
    const sealed = join(work, `sealed-${format}`);
    seal('image', 'seal', `oci:${source}:test`, `oci:${sealed}:s`, '--format', format, '--flatten');
    const layer = JSON.parse(seal('image', 'inspect', `oci:${sealed}:s`, '--json')).manifest.layers[0];
    const blob = join(sealed, 'blobs/sha256', layer.digest.slice(7));
    const data = readFileSync(blob);
    const offset =
      format === 'squashfs'
        ? Math.ceil(Number(data.readBigUInt64LE(40)) / 4096) * 4096
        : data.readUInt32LE(1024 + 36) * 4096;
    const root = layer.annotations['io.stackeroci.stacker.atomfs_verity_root_hash'];
    // The tampered copy: one flipped byte in the first data block (past squashfs's superblock;
    // before EROFS's, in bytes it never reads — dm-verity covers every byte all the same).
    const tampered = Buffer.from(data);
    tampered[100]! ^= 0x40;
    writeFileSync(join(work, `${format}.bad`), tampered);
    files[`${format}.img`] = blob;
    files[`${format}.bad`] = join(work, `${format}.bad`);
    script += `
echo "== ${format}"
veritysetup open ${format}.img good-${format} ${format}.img ${root} --hash-offset ${offset}
veritysetup status good-${format} | grep -i 'status:'
mkdir -p /mnt/${format}
mount -t ${format} -o ro /dev/mapper/good-${format} /mnt/${format}
echo "etc/keep=$(cat /mnt/${format}/etc/keep) etc/gone=$(cat /mnt/${format}/etc/gone) opaque=$(ls /mnt/${format}/opaque)"
umount /mnt/${format}
veritysetup close good-${format}
veritysetup open ${format}.bad bad-${format} ${format}.bad ${root} --hash-offset ${offset} || echo "open refused"
if cat /dev/mapper/bad-${format} > /dev/null 2>&1; then echo "${format} tampered read: succeeded"; else echo "${format} tampered read: EIO"; fi
veritysetup status bad-${format} | grep -i 'status:' || true
veritysetup close bad-${format} || true
`;
  }
  const r = await runInVm(script, files);
  assert.equal(r.status, 0, r.output);
  for (const format of ['squashfs', 'erofs']) {
    const part = r.output.slice(r.output.indexOf(`== ${format}`));
    assert.match(part, /status:\s+verified/, part);
    assert.match(part, /etc\/keep=kept etc\/gone=back again opaque=new/, part);
    assert.match(part, new RegExp(`${format} tampered read: EIO`), part);
    assert.match(part, /status:\s+corrupted/, part);
  }
});

test('fs-verity in the kernel equals Seal; composefs mounts with verity=require and refuses an unprotected object', async () => {
  const random = prng(9);
  const tree = join(work, 'tree');
  execFileSync('mkdir', ['-p', join(tree, 'usr/lib'), join(tree, 'etc')]);
  const sizes = [1, 4095, 4096, 4097, 100_000, 1 << 20];
  for (const [i, size] of sizes.entries())
    writeFileSync(join(tree, 'usr/lib', `f${i}`), randomBytes(random, size));
  writeFileSync(join(tree, 'etc/small'), 'inline\n');
  const objects = join(work, 'objects');
  const image = join(work, 'tree.cfs');
  seal('composefs', 'create', tree, image, '--objects', objects);
  // The object store on an ext4 filesystem with the verity feature.
  const ext4 = join(work, 'objects.ext4');
  execFileSync('mkfs.ext4', ['-q', '-O', 'verity', '-b', '4096', '-d', objects, ext4, '64M']);
  // Seal's digests of one file with other parameters, to compare with the kernel's.
  const probe = join(tree, 'usr/lib/f4');
  const expected = [
    ['sha256', '4096'],
    ['sha512', '4096'],
    ['sha256', '1024'],
  ].map(
    ([alg, bs]) => seal('fsverity', 'digest', '--hash-alg', alg!, '--block-size', bs!, probe).split(' ')[0],
  );
  const names = readdirSync(objects).flatMap((d) => readdirSync(join(objects, d)).map((f) => `${d}/${f}`));
  const script = `
mkdir -p /objects /meta /cfs /probe
mount -t ext4 -o loop objects.ext4 /objects
for f in ${names.join(' ')}; do fsverity enable /objects/$f; echo "measure $f $(fsverity measure /objects/$f | cut -d' ' -f1)"; done
mount -t ext4 -o loop probe.ext4 /probe
cp /probe/f /probe/a; cp /probe/f /probe/b; cp /probe/f /probe/c
fsverity enable --hash-alg sha256 --block-size 4096 /probe/a; echo "probe $(fsverity measure /probe/a | cut -d' ' -f1)"
fsverity enable --hash-alg sha512 --block-size 4096 /probe/b; echo "probe $(fsverity measure /probe/b | cut -d' ' -f1)"
fsverity enable --hash-alg sha256 --block-size 1024 /probe/c; echo "probe $(fsverity measure /probe/c | cut -d' ' -f1)"
mount -t overlay overlay -o ro,metacopy=on,redirect_dir=on,verity=require,lowerdir=/meta::/objects /cfs 2>/dev/null || true
mount -t erofs -o ro tree.cfs /meta
mount -t overlay composefs -o ro,metacopy=on,redirect_dir=on,verity=require,lowerdir=/meta::/objects /cfs
echo "mounted: $(cat /cfs/etc/small)"
for f in /cfs/usr/lib/*; do echo "sum $(basename $f) $(sha256sum $f | cut -d' ' -f1)"; done
umount /cfs
# Replace one object by an unprotected copy of the same bytes: verity=require must refuse it.
victim=/objects/${names[0]}
cp $victim /tmp/copy; rm -f $victim; cp /tmp/copy $victim
mount -t overlay composefs -o ro,metacopy=on,redirect_dir=on,verity=require,lowerdir=/meta::/objects /cfs
refused=0
for f in /cfs/usr/lib/*; do cat $f > /dev/null 2>&1 || refused=$((refused + 1)); done
echo "refused $refused"
`;
  const probeExt4 = join(work, 'probe.ext4');
  const probeDir = join(work, 'probe');
  execFileSync('mkdir', ['-p', probeDir]);
  execFileSync('cp', [probe, join(probeDir, 'f')]);
  execFileSync('mkfs.ext4', ['-q', '-O', 'verity', '-b', '4096', '-d', probeDir, probeExt4, '16M']);
  const r = await runInVm(script, { 'objects.ext4': ext4, 'probe.ext4': probeExt4, 'tree.cfs': image });
  assert.equal(r.status, 0, r.output);
  for (const name of names)
    assert.match(r.output, new RegExp(`measure ${name} sha256:${name.replace('/', '')}`), r.output);
  const probes = [...r.output.matchAll(/^probe (\S+)$/gm)].map((m) => m[1]);
  assert.deepEqual(probes, expected);
  assert.match(r.output, /mounted: inline/);
  for (const [i] of sizes.entries()) {
    const sum = execFileSync('sha256sum', [join(tree, 'usr/lib', `f${i}`)], { encoding: 'utf8' }).split(
      ' ',
    )[0];
    assert.match(r.output, new RegExp(`sum f${i} ${sum}`));
  }
  assert.match(r.output, /refused [1-9]/);
});

test('seal image mount on a device-mapper kernel: every layer through dm-verity, status checked, cleaned up', async () => {
  // Seal itself goes into the VM: the pinned Node.js, the sources, the runtime packages.
  const disk = sealForVm(join(work, 'seal-tree'));

  const source = join(work, 'source-mount');
  await writeThreeLayerImage(source);
  const layout = join(work, 'layout');
  seal('image', 'seal', `oci:${source}:test`, `oci:${layout}:s`, '--format', 'erofs');
  seal('image', 'seal', `oci:${source}:test`, `oci:${layout}:q`, '--format', 'squashfs');
  const files: Record<string, string> = {};
  for (const f of execFileSync('find', [layout, '-type', 'f'], { encoding: 'utf8' }).trim().split('\n')) {
    files[join('layout', f.slice(layout.length + 1))] = f;
  }
  const seal_ = SEAL_IN_VM;
  const script = `
mkdir -p /mnt/e /mnt/q
${seal_} image mount oci:/data/layout:s /mnt/e
${seal_} image mount oci:/data/layout:q /mnt/q
for m in e q; do echo "$m: keep=$(cat /mnt/$m/etc/keep) gone=$(cat /mnt/$m/etc/gone) opaque=$(ls /mnt/$m/opaque) link=$(cat /mnt/$m/upper-link)"; done
echo "devices: $(ls /dev/mapper | grep -c seal-)"
for d in $(ls /dev/mapper | grep seal-); do veritysetup status $d | grep -i 'status:'; done
${seal_} image umount /mnt/e
${seal_} image umount /mnt/q
echo "after: $(ls /dev/mapper | grep -c seal-) devices, $(grep -c /mnt/ /proc/mounts) mounts"
`;
  const r = await runInVm(script, files, {
    directories: { seal: disk },
    programs: SEAL_IN_VM_PROGRAMS,
    timeoutMs: 300_000,
  });
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /every read is verified by the kernel/);
  for (const m of ['e', 'q'])
    assert.match(
      r.output,
      new RegExp(`${m}: keep=kept gone=back again opaque=new link=linked from above`),
      r.output,
    );
  assert.match(r.output, /devices: 6/);
  assert.equal([...r.output.matchAll(/status:\s+verified/g)].length, 6, r.output);
  assert.match(r.output, /after: 0 devices, 0 mounts/);
});
