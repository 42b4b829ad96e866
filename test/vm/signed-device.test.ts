/**
 * A device whose kernel checks who made every image, end to end under qemu (TCG) with OVMF
 * Secure Boot and swtpm: the host image is composefs-sealed and signed, the two services are
 * squashfs + dm-verity with signed root hashes, all by the product's kernel-signing CA (the
 * certificate the varstore's db holds, which the kernel loads into its `.platform` keyring). The
 * initrd carries that certificate and a signed IPE policy; the UKI's command line pins the host's
 * composefs digest (the sealed-UKI mode).
 *
 *  - The first boot loads the signer into `.fs-verity`, puts the host's composefs image into the
 *    store with fs-verity enabled with its signature (the kernel checks it), opens each service
 *    layer with its root-hash signature (`verified (with signature)`), checks the host against
 *    `composefs.digest=`, activates the IPE policy, and runs the services: the busybox of a signed
 *    image runs, a copy of it in the container's writable layer is refused by the kernel.
 *  - The second boot finds the composefs image in the store (the kernel's measurement of it is
 *    the pinned digest) and boots the same way.
 *  - Each tamper is refused at its step: one byte of a host file's object changed (fs-verity
 *    refuses the read), one byte of the stored composefs image changed, the host's signature
 *    artifact swapped for another signer's, a service's root-hash signatures by another signer,
 *    and a UKI whose command line pins another composefs digest.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COMPOSEFS_MERGED_ANNOTATION } from '../../src/seal/formats.ts';
import { runSeal } from '../helpers/cli.ts';
import {
  assertRefused,
  type BootKit,
  bootDevice,
  bootRetries,
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  COUNTER,
  type DeviceFixture,
  flipByte,
  newDevice,
  storeOffset,
} from '../helpers/device.ts';
import { opensslCertificate } from '../helpers/efi.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-signed-device-vm-'));
after(async () => {
  if (bootRetries.count)
    console.error(`signed device VM tests: ${bootRetries.count} crashed guest(s) booted again`);
  await rm(work, { recursive: true, force: true });
});

function seal(...args: string[]): string {
  const r = runSeal(args);
  assert.equal(r.status, 0, `seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** The counter service, first trying a copy of busybox in its writable layer, then busybox from its signed image. */
const PROBE = [
  'if /bin/busybox cp /bin/busybox /tmp/copied && /tmp/copied true; then echo "ipe: the copied busybox ran"; else echo "ipe: the copied busybox was refused"; fi',
  'echo "ipe: the signed busybox ran"',
  COUNTER,
].join('; ');

/** A host os-release longer than composefs inlines: a file in the object store, read by the agent at the switch. */
const OS_RELEASE =
  'PRETTY_NAME="Seal signed host"\nID=seal-test\nVERSION_ID=1\nHOME_URL="https://seal.invalid/signed-host"\n';

let f: DeviceFixture;
let kit: BootKit;
let signer: { key: string; cert: string };
let uki: string;
let system: string;
let hostDigest: string;
const device = { disk: join(work, 'disk.img'), vars: join(work, 'vars.fd'), tpm: join(work, 'tpm') };

/** The manifest of tag `tag` in `layout`. */
function manifestOf(layout: string, tag: string): { annotations?: Record<string, string> } {
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)!;
  return JSON.parse(readFileSync(join(layout, 'blobs/sha256', entry.digest.slice(7)), 'utf8'));
}

/** A fresh device installed with `sys` and `bootImage` (not verified first: some are meant to be refused). */
function freshDevice(name: string, sys: string, bootImage: string): Promise<typeof device> {
  const files = {
    disk: join(work, `${name}.img`),
    vars: join(work, `${name}.vars`),
    tpm: join(work, `${name}.tpm`),
  };
  return newDevice(f, kit, sys, bootImage, files, { verify: false });
}

/** A copy of the booted device: its disk (sparse), varstore and TPM state. */
function copyOfDevice(name: string): typeof device {
  const d = {
    disk: join(work, `${name}.img`),
    vars: join(work, `${name}.vars`),
    tpm: join(work, `${name}.tpm`),
  };
  execFileSync('cp', ['--sparse=always', device.disk, d.disk]);
  copyFileSync(device.vars, d.vars);
  cpSync(device.tpm, d.tpm, { recursive: true });
  return d;
}

before(async () => {
  f = buildFixture(join(work, 'fixture'));
  kit = buildBootKit(f);
  // The kernel-signing CA, whose certificate is in db, signs the images and the IPE policy.
  signer = { key: join(f.pki, 'kernel-ca.key'), cert: kit.kernelCa };
  const hostRoot = join(work, 'host-root');
  mkdirSync(join(hostRoot, 'etc'), { recursive: true });
  writeFileSync(join(hostRoot, 'etc/os-release'), OS_RELEASE);
  seal('image', 'import', `dir:${hostRoot}`, `oci:${f.layout}:signed-host`);
  seal('image', 'seal', `oci:${f.layout}:signed-host`, `oci:${f.layout}:host-cfs`, '--format', 'composefs');
  // The same images in another layout, signed there by a stranger (the counter by the product).
  const stranger = opensslCertificate(work, 'stranger', 'rsa-2048', '/CN=Seal test stranger');
  const strangerLayout = join(work, 'stranger-images');
  cpSync(f.layout, strangerLayout, { recursive: true });
  for (const image of ['host-cfs', 'web-sealed', 'counter-sealed'])
    seal('image', 'sign-verity', `oci:${f.layout}:${image}`, '--key', signer.key, '--cert', signer.cert);
  for (const image of ['host-cfs', 'web-sealed'])
    seal(
      'image',
      'sign-verity',
      `oci:${strangerLayout}:${image}`,
      '--key',
      stranger.key,
      '--cert',
      stranger.cert,
    );
  seal(
    'image',
    'sign-verity',
    `oci:${strangerLayout}:counter-sealed`,
    '--key',
    signer.key,
    '--cert',
    signer.cert,
  );
  hostDigest = manifestOf(f.layout, 'host-cfs').annotations![COMPOSEFS_MERGED_ANNOTATION]!;
  assert.match(hostDigest, /^[0-9a-f]{64}$/);

  const ipe = join(work, 'ipe-policy');
  seal('ipe', 'policy', ipe, '--key', signer.key, '--cert', signer.cert);
  const initrdArgs = ['--kernel-signer', signer.cert, '--ipe-policy', `${ipe}.p7s`];
  const cmdline = 'console=ttyS0 quiet loglevel=3 panic=-1 rootfstype=ramfs';
  uki = buildUki(f, kit, join(work, 'signed.efi'), {
    initrdArgs,
    cmdline: `${cmdline} composefs.digest=${hostDigest}`,
  });
  system = buildSystem(f, 7, { host: 'host-cfs', counter: { command: ['/bin/sh', '-c', PROBE] } });
  await newDevice(f, kit, system, uki, device);
});

test('first boot: every signature checked by the kernel, the host pinned by the command line, IPE active', async () => {
  const boot = await bootDevice(device);
  assert.ok(boot.booted, boot.output.slice(-4000));
  for (const step of [
    'trust the kernel signer for fs-verity \\(\\d+ ms\\): .+ in \\.fs-verity, closed',
    `open the host target host \\(\\d+ ms\\): composefs ${hostDigest}, its files checked by fs-verity, signatures checked by the kernel`,
    `check the host root against composefs\\.digest \\(\\d+ ms\\): composefs ${hostDigest}`,
    'mount the host root \\(\\d+ ms\\): Seal signed host',
    'open the service image web \\(\\d+ ms\\): 1 layers through dm-verity, signatures checked by the kernel',
    'open the service image counter \\(\\d+ ms\\): 1 layers through dm-verity, signatures checked by the kernel',
    'activate the IPE policy \\(\\d+ ms\\): seal: only what the kernel verified may execute',
  ])
    assert.match(boot.output, new RegExp(`seal: \\[ ok \\] ${step}`), step);
  assert.match(boot.output, /ipe: the copied busybox was refused/);
  assert.doesNotMatch(boot.output, /ipe: the copied busybox ran/);
  assert.match(boot.output, /ipe: the signed busybox ran/);
  assert.equal(boot.counter?.boot, 1);
  assert.equal(boot.counter?.page, '<p>boot 1</p>');
});

test('second boot: the composefs image the kernel measured in the store is used again', async () => {
  const boot = await bootDevice(device);
  assert.ok(boot.booted, boot.output.slice(-4000));
  assert.match(
    boot.output,
    /open the host target host \(\d+ ms\): composefs [0-9a-f]{64}, its files checked/,
  );
  assert.match(boot.output, /ipe: the copied busybox was refused/);
  assert.equal(boot.counter?.boot, 2);
});

describe('tampered signed devices, two booted at a time, each refused at its step', {
  concurrency: 2,
}, () => {
  const cases = new Map<string, typeof device>();

  before(async () => {
    // One byte of the host's os-release object, and of the stored composefs image, on copies of the booted disk.
    const object = execFileSync('fsverity', ['digest', '--compact', join(work, 'host-root/etc/os-release')], {
      encoding: 'utf8',
    }).trim();
    const objectCopy = copyOfDevice('object');
    flipByte(
      objectCopy.disk,
      storeOffset(objectCopy.disk, `/composefs-objects/${object.slice(0, 2)}/${object.slice(2)}`, 10),
    );
    cases.set('object', objectCopy);
    const imageCopy = copyOfDevice('image');
    flipByte(imageCopy.disk, storeOffset(imageCopy.disk, `/composefs-images/${hostDigest}.cfs`, 1100));
    cases.set('image', imageCopy);
    // The stranger's signatures: of the host image, and of the web service's root hashes.
    const strangers = { ...f, layout: join(work, 'stranger-images') };
    cases.set(
      'host-signer',
      await freshDevice(
        'host-signer',
        buildSystem(strangers, 7, { host: 'host-cfs', tag: 'stranger-host' }),
        uki,
      ),
    );
    const webOnly = buildSystem(strangers, 7, {
      host: 'host-cfs',
      tag: 'stranger-web',
      counter: { command: ['/bin/sh', '-c', PROBE] },
    });
    // Only the web service's signature is a stranger's here: the host's is the product's own.
    seal(
      'image',
      'sign-verity',
      `oci:${strangers.layout}:host-cfs`,
      '--key',
      signer.key,
      '--cert',
      signer.cert,
    );
    cases.set('web-signer', await freshDevice('web-signer', webOnly, uki));
    const otherDigest = buildUki(f, kit, join(work, 'other-digest.efi'), {
      initrd: join(work, 'signed.initrd'),
      cmdline: `console=ttyS0 quiet loglevel=3 panic=-1 rootfstype=ramfs composefs.digest=${'0'.repeat(64)}`,
    });
    cases.set('digest', await freshDevice('digest', system, otherDigest));
  });

  for (const [name, what, step, reason] of [
    [
      'object',
      "a host file's object changed: fs-verity refuses its read at the switch",
      /mount the host root/,
      /Input\/output error|EIO/,
    ],
    [
      'image',
      'the stored composefs image changed: the kernel refuses to mount it',
      /open the host target host/,
      /composefs image was changed|I\/O error/,
    ],
    [
      'host-signer',
      "the host's signature artifact swapped for another signer's: refused before the kernel sees it",
      /open the host target host/,
      /no signature of the product's kernel signer is accepted/,
    ],
    [
      'web-signer',
      "a service's root-hash signatures by another signer: refused",
      /open the service image web/,
      /no signature of the product's kernel signer is accepted/,
    ],
    [
      'digest',
      'a UKI whose command line pins another composefs digest: the host root is refused',
      /check the host root against composefs\.digest/,
      /composefs digest is [0-9a-f]{64}, and the command line pins 0{64}/,
    ],
  ] as const) {
    test(what, async () => {
      assertRefused(await bootDevice(cases.get(name)!), step, reason, name);
    });
  }
});
