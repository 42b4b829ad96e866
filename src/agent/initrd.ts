/**
 * The initrd of a Seal device (`seal initrd build`): a reproducible, zstd-compressed newc cpio
 * holding the pinned Node.js runtime, the Seal agent (bundled with its production dependencies,
 * beside the project's sources and addons — no dev dependencies, no tests), the manifest-signing CA, the signed
 * TPM policy, the kernel modules the agent loads, and the few programs it runs (cryptsetup and
 * veritysetup, crun, mke2fs) with their shared libraries. `/init` starts the agent as PID 1.
 *
 * Everything the agent uses lives under /seal, which stays reachable at the same paths after the
 * agent switches into the host target's root (it bind-mounts /seal there):
 *   /init · /seal/node · /seal/app/{agent.blob (the agent, a V8 startup snapshot),package.json,src,build/Release}
 *   /seal/bin/{cryptsetup,veritysetup,crun,mke2fs} · /seal/lib (every shared library, the loader)
 *   /seal/etc/{manifest-ca.pem,policy.json,modules,initrd.json[,kernel-signer.pem,ipe-policy.p7s]} · /lib/modules/VERSION/…
 * The programs run through /seal/lib's own loader, never the host root's libraries. Node's own
 * libraries are also at their usual paths (the same inodes), where the kernel's exec looks.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants as zlib, zstdCompressSync } from 'node:zlib';
import { treeToCpio } from '../cpio/index.ts';
import { parseCertificates, parsePkcs7 } from '../pki/index.ts';
import { bufferContent, type DirInode, emptyDir, type Inode, type Tree } from '../tree/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { projectUrl } from '../util/paths.ts';
import { AgentError } from './errors.ts';
import { AGENT_MODULES, resolveModules } from './modules.ts';

/** Where the project is: the agent in the initrd is this very tree's code. */
const PROJECT = fileURLToPath(projectUrl(''));

/** The programs the agent runs (installed as /seal/bin/NAME), and the Debian package of each. */
export const AGENT_PROGRAMS: Record<string, string> = {
  '/usr/sbin/cryptsetup': 'cryptsetup-bin (LUKS2 for the config and data partitions)',
  '/usr/sbin/veritysetup': 'cryptsetup-bin (dm-verity devices for every layer)',
  '/usr/bin/crun': 'crun (the services, as OCI containers)',
  '/usr/sbin/mke2fs': 'e2fsprogs (the data partition filesystem, made on first boot)',
  '/usr/sbin/mkfs.vfat': 'dosfstools (the ESP, made by an installer boot)',
  '/usr/bin/mmd': "mtools (the ESP's directories, made by an installer boot)",
  '/usr/bin/mcopy': "mtools (the ESP's files, written by an installer boot)",
};

/** glibc's iconv modules (the codepage mtools needs). */
const GCONV = '/usr/lib/x86_64-linux-gnu/gconv';

/** The addons the agent loads (native/*.c). */
const ADDONS = ['blockhash', 'codecs', 'fsops', 'system'];

export interface InitrdOptions {
  /** PEM file with the manifest-signing CA certificate(s). */
  manifestCa: string;
  /** The signed TPM policy the device unlocks with. */
  policy?: string;
  /** A kernel package (.deb) or a directory holding `lib/modules/VERSION` (an unpacked package). */
  kernel: string;
  /** A directory whose files are added to the initrd root (overriding nothing of Seal's). */
  extra?: string;
  /** Further kernel modules to include (names). */
  modules?: string[];
  /** zstd level (default 12); 0 writes the cpio uncompressed. */
  level?: number;
  /** A signed systemd-boot, for an installer to put on the disks it makes. */
  bootManager?: string;
  /**
   * PEM file with the product's kernel-signing certificate (enrolled in db): the agent loads it
   * into the `.fs-verity` keyring and requires every image's kernel signatures by it.
   */
  kernelSigner?: string;
  /** A signed IPE policy (`seal ipe policy --key --cert`'s OUT.p7s), activated before the switch into the host. */
  ipePolicy?: string;
}

/** A signed IPE policy file: PKCS#7 carrying the policy text it signs (what the kernel's new_policy takes). */
function ipePolicyOf(path: string): Buffer {
  const der = readFileSync(path);
  let text: string | undefined;
  try {
    text = parsePkcs7(der, path).content?.value.toString('utf8');
  } catch {}
  if (!text?.startsWith('policy_name='))
    throw new AgentError(
      'AGENT_INITRD',
      `${path} is not a signed IPE policy (seal ipe policy --key --cert writes one)`,
      {
        subject: path,
      },
    );
  return der;
}

export interface InitrdResult {
  path: string;
  size: number;
  sha256: string;
  kernelVersion: string;
  modules: string[];
  files: number;
}

const STAMP = { sec: 0, nsec: 0 };

/** The initrd being assembled: a tree, and the shared libraries already in /seal/lib. */
interface Assembly {
  root: DirInode;
  libraries: Map<string, Inode>;
}

function file(data: Uint8Array, mode = 0o644): Inode {
  return {
    type: 'file',
    mode,
    uid: 0,
    gid: 0,
    mtime: STAMP,
    xattrs: new Map(),
    content: bufferContent(data),
  };
}

/** Adds `inode` at `path` (`a/b/c`), creating parent directories (0755) as needed. */
function put(root: DirInode, path: string, inode: Inode): void {
  const parts = path.split('/').filter(Boolean);
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    let child = dir.children.get(part);
    if (!child) dir.children.set(part, (child = emptyDir({ mtime: STAMP })));
    if (child.type !== 'dir') throw new AgentError('AGENT_INITRD', `${path}: ${part} is not a directory`);
    dir = child;
  }
  dir.children.set(parts.at(-1)!, inode);
}

/** A host file's contents (symlinks resolved) as an inode, keeping its executable bit. */
function hostFile(path: string): Inode {
  const real = realpathSync(path);
  return file(readFileSync(real), lstatSync(real).mode & 0o111 ? 0o755 : 0o644);
}

/** The shared libraries `ldd` names for a program or addon (with the dynamic loader). */
function libraries(program: string): string[] {
  const out = execFileSync('ldd', [program], { encoding: 'utf8' });
  const found: string[] = [];
  for (const line of out.split('\n')) {
    const lib = /=> (\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)/.exec(line)?.[1];
    if (lib) found.push(lib);
  }
  return found;
}

/** Puts `program`'s libraries into /seal/lib (once each) and returns their inodes by host path. */
function putLibraries(a: Assembly, program: string): Map<string, Inode> {
  const out = new Map<string, Inode>();
  for (const lib of libraries(program)) {
    const name = lib.slice(lib.lastIndexOf('/') + 1);
    let inode = a.libraries.get(name);
    if (!inode) {
      inode = hostFile(lib);
      a.libraries.set(name, inode);
      put(a.root, `seal/lib/${name}`, inode);
    }
    out.set(lib, inode);
  }
  return out;
}

/** A program at /seal/bin/NAME, its libraries in /seal/lib. */
function putProgram(a: Assembly, program: string): void {
  if (!existsSync(program)) {
    throw new AgentError(
      'AGENT_INITRD',
      `${program} is missing (install ${AGENT_PROGRAMS[program] ?? 'it'})`,
      {
        subject: program,
      },
    );
  }
  put(a.root, `seal/bin/${program.slice(program.lastIndexOf('/') + 1)}`, hostFile(program));
  putLibraries(a, program);
}

/** Every file under `dir` (relative paths), sorted. */
function filesUnder(dir: string, skip: (rel: string) => boolean = () => false): string[] {
  const out: string[] = [];
  const visit = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      if (skip(path)) continue;
      const st = lstatSync(join(dir, path));
      if (st.isDirectory()) visit(path);
      else if (st.isFile()) out.push(path);
    }
  };
  visit('');
  return out;
}

/**
 * The Node.js binary without its symbol and debug sections (binutils' strip): the pinned build
 * carries 18 MB of them, which every boot would load, measure and unpack for nothing.
 */
function strippedNode(node: string, scratch: string): Buffer {
  const out = join(scratch, 'node');
  try {
    execFileSync('strip', ['--strip-all', '-o', out, node]);
  } catch (error) {
    throw new AgentError(
      'AGENT_INITRD',
      `cannot strip ${node} (install binutils): ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  return readFileSync(out);
}

/**
 * Where the agent's code says it is (its import.meta.url in the bundle): in src/util/, so that the
 * paths it resolves from its own module hold (util/paths.ts) — the sources beside it, which
 * worker threads load by URL, and the addons.
 */
const BUNDLE_URL = 'file:///seal/app/src/util/agent.mjs';

/** The agent's startup snapshot, which /init names. */
const SNAPSHOT = 'seal/app/agent.blob';

/**
 * The agent and everything it imports, Seal's modules and its production dependencies, as one
 * CommonJS script made by esbuild (the form Node.js builds startup snapshots from). Loading ~200
 * TypeScript modules (each stripped of its types at load) took 10 s of a TCG boot; the bundle
 * loads in a quarter of that, and from the snapshot in half as much again.
 */
export async function bundleAgent(): Promise<Buffer> {
  const { build } = await import('esbuild');
  const result = await build({
    absWorkingDir: PROJECT,
    entryPoints: ['src/agent/main.ts'],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    write: false,
    logLevel: 'silent',
    legalComments: 'none',
    define: { 'import.meta.url': JSON.stringify(BUNDLE_URL) },
  }).catch((error: Error) => {
    throw new AgentError('AGENT_INITRD', `bundling the agent failed: ${error.message}`, { cause: error });
  });
  return Buffer.from(result.outputFiles[0]!.contents);
}

/**
 * How the snapshot is built, in namespaces of its own (made by `unshare`): the scratch directory
 * (`$0`, holding the initrd's `node` and the bundle) bound at /tmp, so that the paths Node.js keeps
 * in a snapshot — its own, its script's (read as /dev/stdin) — are always the same, as is the
 * process ID it keeps (1, in a PID namespace); V8 runs `--predictable`.
 */
const SNAPSHOT_BUILD =
  'mount --bind "$0" /tmp && cd /tmp && exec ./node --no-warnings --predictable --snapshot-blob agent.blob --build-snapshot /dev/stdin <agent.cjs';

/**
 * The V8 startup snapshot of the bundle, made by the initrd's own Node.js (`scratch/node`) with
 * `--build-snapshot`; built twice from the same inputs, it is the same bytes. The namespaces are
 * made as root, or else in a user namespace.
 */
function snapshotAgent(bundle: Buffer, scratch: string): Buffer {
  writeFileSync(join(scratch, 'agent.cjs'), bundle);
  const failures: string[] = [];
  for (const user of [[], ['--user', '--map-root-user']]) {
    try {
      execFileSync(
        'unshare',
        [...user, '--mount', '--pid', '--fork', '--kill-child', '/bin/sh', '-c', SNAPSHOT_BUILD, scratch],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      return readFileSync(join(scratch, 'agent.blob'));
    } catch (error) {
      const e = error as { stderr?: Buffer; message: string };
      failures.push(
        `unshare ${[...user, '--mount', '--pid'].join(' ')}: ${e.stderr?.toString().trim().split('\n').at(-1) || e.message}`,
      );
    }
  }
  throw new AgentError('AGENT_INITRD', `cannot build the agent's startup snapshot (${failures.join('; ')})`);
}

/** The agent's own files: its snapshot, the sources (no tests) for worker threads, package.json, the addons. */
async function putAgent(a: Assembly, scratch: string): Promise<number> {
  let count = 0;
  const add = (rel: string) => {
    put(a.root, `seal/app/${rel}`, hostFile(join(PROJECT, rel)));
    count++;
  };
  add('package.json');
  for (const rel of filesUnder(join(PROJECT, 'src'))) add(`src/${rel}`);
  put(a.root, SNAPSHOT, file(snapshotAgent(await bundleAgent(), scratch)));
  for (const addon of ADDONS) {
    const path = `build/Release/${addon}.node`;
    if (!existsSync(join(PROJECT, path))) {
      throw new AgentError('AGENT_INITRD', `the ${addon} addon is not built (run scripts/setup.sh)`, {
        subject: path,
      });
    }
    add(path);
    putLibraries(a, join(PROJECT, path));
  }
  return count + 1;
}

/** The modules directory (`lib/modules/VERSION`) of a kernel package or unpacked tree; unpacks a .deb into `scratch`. */
function modulesDirectory(kernel: string, scratch: string): { dir: string; version: string } {
  let root = kernel;
  if (kernel.endsWith('.deb')) {
    root = join(scratch, 'kernel');
    execFileSync('dpkg-deb', ['-x', kernel, root]);
  }
  const base = existsSync(join(root, 'lib/modules')) ? join(root, 'lib/modules') : root;
  const versions = existsSync(base)
    ? readdirSync(base).filter((v) => existsSync(join(base, v, 'kernel')))
    : [];
  if (versions.length !== 1) {
    throw new AgentError(
      'AGENT_KERNEL',
      `${kernel}: expected one lib/modules/VERSION with its kernel/ tree, found ${versions.length}`,
      { subject: kernel },
    );
  }
  return { dir: join(base, versions[0]!), version: versions[0]! };
}

/**
 * /init: the kernel runs the interpreter its first line names, Node.js from the agent's startup
 * snapshot, whose main function boots the device (the rest of the file is never read).
 */
const INIT = `#!/seal/node --snapshot-blob=/${SNAPSHOT}
// The Seal agent, as PID 1: Node.js starts from the agent's snapshot and boots the device.
`;

export async function buildInitrd(dest: string, options: InitrdOptions): Promise<InitrdResult> {
  const scratch = mkdtempSync(join(process.env.SEAL_TMPDIR ?? tmpdir(), 'seal-initrd-'));
  try {
    const root = emptyDir({ mtime: STAMP });
    const tree: Tree = { root };
    const a: Assembly = { root, libraries: new Map() };
    for (const dir of ['dev', 'proc', 'sys', 'run', 'tmp', 'mnt', 'sysroot'])
      put(root, `${dir}/`, emptyDir({ mtime: STAMP }));
    put(root, 'init', file(Buffer.from(INIT), 0o755));
    const node = join(PROJECT, 'node_modules/node/bin/node');
    put(root, 'seal/node', file(strippedNode(node, scratch), 0o755));
    // The kernel's exec of /seal/node finds the loader and libraries at their usual paths.
    for (const [path, inode] of putLibraries(a, node)) put(root, path, inode);
    const files = await putAgent(a, scratch);
    for (const program of Object.keys(AGENT_PROGRAMS)) putProgram(a, program);
    // mtools converts FAT short names through iconv's codepage 850; glibc looks for that
    // module at its compiled-in path, so it goes there (without it every mtools call fails).
    for (const name of ['gconv-modules.cache', 'IBM850.so']) {
      const path = `${GCONV}/${name}`;
      if (!existsSync(path))
        throw new AgentError('AGENT_INITRD', `${path} is missing (install libc6)`, { subject: path });
      put(root, path.slice(1), hostFile(path));
    }

    const ca = readFileSync(options.manifestCa);
    parseCertificates(ca.toString('utf8'), options.manifestCa); // a file without a certificate is refused
    put(root, 'seal/etc/manifest-ca.pem', file(ca));
    if (options.policy) put(root, 'seal/etc/policy.json', file(readFileSync(options.policy)));
    if (options.bootManager) put(root, 'seal/etc/boot-manager.efi', file(readFileSync(options.bootManager)));
    if (options.kernelSigner) {
      const signer = readFileSync(options.kernelSigner);
      parseCertificates(signer.toString('utf8'), options.kernelSigner);
      put(root, 'seal/etc/kernel-signer.pem', file(signer));
    }
    if (options.ipePolicy) put(root, 'seal/etc/ipe-policy.p7s', file(ipePolicyOf(options.ipePolicy)));

    const { dir: modulesDir, version } = modulesDirectory(options.kernel, scratch);
    const modules = resolveModules(modulesDir, [...AGENT_MODULES, ...(options.modules ?? [])]);
    for (const m of modules) put(root, `lib/modules/${version}/${m.path}`, file(m.data));
    put(
      root,
      'seal/etc/modules',
      file(Buffer.from(modules.map((m) => `/lib/modules/${version}/${m.path}\n`).join(''))),
    );
    if (options.extra) {
      for (const rel of filesUnder(options.extra)) put(root, rel, hostFile(join(options.extra, rel)));
    }
    const manifest = {
      kernelVersion: version,
      modules: modules.map((m) => m.name),
      node: process.versions.node,
      programs: Object.keys(AGENT_PROGRAMS),
    };
    put(root, 'seal/etc/initrd.json', file(Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)));

    const cpio = await treeToCpio(tree);
    const level = options.level ?? 12;
    const bytes =
      level === 0 ? cpio : zstdCompressSync(cpio, { params: { [zlib.ZSTD_c_compressionLevel]: level } });
    await writeFileAtomic(dest, bytes);
    return {
      path: dest,
      size: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      kernelVersion: version,
      modules: modules.map((m) => m.name),
      files,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
