/**
 * The reference initrd of bench/boot: the Seal agent's boot done by hand in a shell (init.sh, then
 * services.sh in the host root), with static busybox, tpm2-tools (bench/tpm-unlock-tpm2-tools.sh,
 * TCTI device:/dev/tpmrm0), cryptsetup, veritysetup and crun with the libraries `ldd` names, and
 * the same kernel modules the agent's initrd carries (resolved the same way from the kernel
 * package). Built as test/helpers/vm.ts builds its initramfs: a directory, then src/cpio; then
 * zstd-compressed at the level the device's initrd is.
 *
 * What the shell cannot compute it gets from the host, as files under /etc/ref: each layer's
 * dm-verity root hash and hash offset, the services' OCI runtime configurations (made by the
 * agent's own runtimeConfig()), the signed TPM policy's parts tpm2-tools takes. It verifies no
 * signature and no digest: those numbers were taken from a system verified on the host.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants as zlib, zstdCompressSync } from 'node:zlib';
import { AGENT_MODULES, resolveModules } from '../../src/agent/index.ts';
import { runtimeConfig } from '../../src/agent/services.ts';
import { treeToCpio } from '../../src/cpio/index.ts';
import type { SystemTarget } from '../../src/manifest/spec.ts';
import { verifySystem } from '../../src/manifest/verify.ts';
import { parseConfig, parseManifest } from '../../src/oci/validate.ts';
import { parseCertificates } from '../../src/pki/index.ts';
import { layerFilesystem, verityRootHash } from '../../src/seal/formats.ts';
import { hashOffsetOf } from '../../src/seal/verify.ts';
import { LayoutStore } from '../../src/store/index.ts';
import { lockDigest, marshal, parsePolicy, writeSignature } from '../../src/tpm/index.ts';
import { treeFromDirectory } from '../../src/tree/index.ts';
import { addProgram } from '../../test/helpers/vm.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const PROGRAMS = ['/usr/sbin/cryptsetup', '/usr/sbin/veritysetup', '/usr/bin/crun', '/usr/bin/tpm2'];
/** tpm2-tools' TCTI for /dev/tpmrm0: loaded with dlopen, so ldd of tpm2 does not name it. */
const TCTI = '/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0';
/** Where the device keeps what the agent mounts (the scripts' $RUN). */
const RUN = '/run/seal';
const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface ReferenceInputs {
  /** The kernel package (.deb) the device's initrd took its modules from. */
  kernelPackage: string;
  /** The signed TPM policy the device's initrd carries. */
  policy: string;
  /** The signed system (an image reference) and the manifest CA it is verified with on the host. */
  system: string;
  ca: string;
  /** The OCI layout holding the system's images (the same blobs as the device's store). */
  layout: string;
  /** zstd level: the same as the device's initrd (default 12, as `seal initrd build`). */
  level?: number;
}

/** One line per layer, bottom first: `INDEX HEX FILESYSTEM ROOT_HASH HASH_OFFSET`. */
async function layerLines(store: LayoutStore, target: SystemTarget): Promise<string> {
  const manifest = parseManifest(await store.readBlob(target.image), target.image.digest);
  const lines: string[] = [];
  for (const [i, layer] of manifest.layers.entries()) {
    const fs = layerFilesystem(layer.mediaType);
    const root = verityRootHash(layer);
    const hex = /^sha256:([0-9a-f]{64})$/.exec(layer.digest)?.[1];
    if (!fs || !root || !/^[0-9a-f]{64}$/.test(root) || !hex)
      throw new Error(`${target.name} layer ${i + 1} is not a sealed sha256 layer`);
    const offset = await hashOffsetOf(store.blobPath(layer.digest), fs);
    lines.push(`${i} ${hex} ${fs} ${root} ${offset}\n`);
  }
  return lines.join('');
}

/** The busybox applets, each a relative symlink in /bin (they still resolve once / is at /seal). */
function putBusybox(root: string): void {
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n');
  for (const applet of applets)
    if (NAME.test(applet) && applet !== 'busybox') symlinkSync('busybox', join(root, 'bin', applet));
}

/** The programs with their libraries, tpm2-tools' tpm2_* names, and the device TCTI. */
function putPrograms(root: string): void {
  for (const program of [...PROGRAMS, TCTI]) addProgram(root, program);
  for (const name of readdirSync('/usr/bin')) {
    if (!name.startsWith('tpm2_')) continue;
    try {
      if (readlinkSync(join('/usr/bin', name)) === 'tpm2') symlinkSync('tpm2', join(root, 'usr/bin', name));
    } catch {}
  }
}

/** The agent's modules, from the kernel package, in load order; their paths listed in /etc/ref/modules. */
function putModules(root: string, kernelPackage: string, scratch: string): number {
  execFileSync('dpkg-deb', ['-x', kernelPackage, join(scratch, 'kernel')]);
  const base = join(scratch, 'kernel/lib/modules');
  const [version] = readdirSync(base);
  const modules = resolveModules(join(base, version!), AGENT_MODULES);
  const list: string[] = [];
  for (const m of modules) {
    const path = join('lib/modules', version!, m.path);
    mkdirSync(join(root, dirname(path)), { recursive: true });
    writeFileSync(join(root, path), m.data);
    list.push(`/${path}\n`);
  }
  writeFileSync(join(root, 'etc/ref/modules'), list.join(''));
  return modules.length;
}

/** What tpm2-tools takes of the signed policy (as bench/tpm.ts prepares it). */
function putTpmInputs(root: string, policyFile: string): void {
  const policy = parsePolicy(readFileSync(policyFile), policyFile);
  const pcr7 = policy.pcr.pcrs.find(([pcr]) => pcr === 7)?.[1];
  if (!pcr7 || policy.pcr.pcrs.length !== 1 || policy.pcr.bank !== 'sha256')
    throw new Error(`${policyFile}: the reference unlocks with a policy on PCR 7 of the SHA-256 bank only`);
  const dir = join(root, 'etc/ref/tpm');
  writeFileSync(join(dir, 'policy-key.pem'), policy.signingKey.pem);
  writeFileSync(join(dir, 'approved.bin'), policy.approvedPolicy);
  writeFileSync(
    join(dir, 'signature.bin'),
    marshal((w) => writeSignature(w, policy.signature)),
  );
  writeFileSync(join(dir, 'pcr7.bin'), pcr7);
  writeFileSync(join(dir, 'version.bin'), policy.nv.operandB);
  writeFileSync(join(dir, 'lock.hex'), lockDigest('sha256').toString('hex'));
}

/**
 * The images' layers (one file per image, named by the first 12 hex digits of its digest, as the
 * agent names its devices), the targets (`NAME ID` lines), and each service's runtime
 * configuration as the agent would write it.
 */
async function putSystem(root: string, inputs: ReferenceInputs, scratch: string): Promise<string[]> {
  const ca = parseCertificates(readFileSync(inputs.ca, 'utf8'), inputs.ca)[0]!;
  const report = await verifySystem(inputs.system, { ca });
  const targets = report.document.targets as SystemTarget[];
  const store = await LayoutStore.open(inputs.layout);
  const host = targets.find((t) => t.role === 'host');
  const services = targets.filter((t) => t.role === 'service');
  if (!host) throw new Error(`${inputs.system} has no host target`);
  const id = (t: SystemTarget) => t.image.digest.slice(7, 19);
  for (const t of [host, ...services]) {
    if (!NAME.test(t.name) || !/^[0-9a-f]{12}$/.test(id(t)))
      throw new Error(`target ${t.name} (${t.image.digest}) is not a plain name and a sha256 digest`);
    writeFileSync(join(root, 'etc/ref/images', id(t)), await layerLines(store, t));
  }
  writeFileSync(join(root, 'etc/ref/host'), `${host.name} ${id(host)}\n`);
  writeFileSync(join(root, 'etc/ref/services'), services.map((s) => `${s.name} ${id(s)}\n`).join(''));
  // runtimeConfig() makes the volume directories: here in scratch, renamed to the device's path.
  const volumes = join(scratch, 'volumes');
  for (const s of services) {
    const manifest = parseManifest(await store.readBlob(s.image), s.image.digest);
    const image = parseConfig(await store.readBlob(manifest.config), manifest.config.digest);
    const spec = s.service ?? {};
    const config = runtimeConfig(s.name, `${RUN}/services/${s.name}/rootfs`, image, spec, volumes);
    for (const m of config.mounts)
      if (m.source.startsWith(`${volumes}/`))
        m.source = `${RUN}/data/volumes/${m.source.slice(volumes.length + 1)}`;
    writeFileSync(join(root, 'etc/ref/config', `${s.name}.json`), JSON.stringify(config, null, 2));
    writeFileSync(
      join(root, 'etc/ref/config', `${s.name}.volumes`),
      (spec.mounts ?? []).map((m) => `${m.source}\n`).join(''),
    );
  }
  return services.map((s) => s.name);
}

export interface ReferenceInitrd {
  path: string;
  bytes: number;
  modules: number;
  services: string[];
}

export async function buildReferenceInitrd(dest: string, inputs: ReferenceInputs): Promise<ReferenceInitrd> {
  const scratch = mkdtempSync(join(tmpdir(), 'bench-boot-ref-'));
  try {
    const root = join(scratch, 'root');
    for (const d of ['bin', 'proc', 'sys', 'dev', 'run', 'tmp', 'sysroot', 'usr/bin'])
      mkdirSync(join(root, d), { recursive: true });
    for (const d of ['tpm', 'images', 'config']) mkdirSync(join(root, 'etc/ref', d), { recursive: true });
    putBusybox(root);
    putPrograms(root);
    const modules = putModules(root, inputs.kernelPackage, scratch);
    putTpmInputs(root, inputs.policy);
    const services = await putSystem(root, inputs, scratch);
    copyFileSync(join(HERE, '../tpm-unlock-tpm2-tools.sh'), join(root, 'etc/ref/tpm-unlock.sh'));
    for (const script of ['lib.sh', 'services.sh'])
      copyFileSync(join(HERE, script), join(root, 'etc/ref', script));
    copyFileSync(join(HERE, 'init.sh'), join(root, 'init'));
    chmodSync(join(root, 'init'), 0o755);
    const cpio = await treeToCpio(await treeFromDirectory(root, { xattrs: false }));
    const bytes = zstdCompressSync(cpio, { params: { [zlib.ZSTD_c_compressionLevel]: inputs.level ?? 12 } });
    writeFileSync(dest, bytes);
    return { path: dest, bytes: bytes.length, modules, services };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
