/**
 * The initrd of a Seal device (`seal initrd build`): a reproducible, zstd-compressed newc cpio
 * holding the pinned Node.js runtime, the Seal agent (the project's sources, its addons and its
 * production dependencies — no dev dependencies, no tests), the manifest-signing CA, the signed
 * TPM policy, the kernel modules the agent loads, and the few programs it runs (cryptsetup and
 * veritysetup, crun, mke2fs) with their shared libraries. `/init` starts the agent as PID 1.
 *
 * Layout inside:  /init · /seal/node · /seal/app/{package.json,src,build/Release,node_modules}
 *                 /etc/seal/{manifest-ca.pem,policy.json,modules,initrd.json} · /lib/modules/V/…
 *                 /usr/sbin/{cryptsetup,veritysetup,mke2fs} · /usr/bin/crun · their libraries
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants as zlib, zstdCompressSync } from 'node:zlib';
import { treeToCpio } from '../cpio/index.ts';
import { parseCertificates } from '../pki/index.ts';
import { bufferContent, type DirInode, emptyDir, type Inode, type Tree } from '../tree/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { AgentError } from './errors.ts';
import { AGENT_MODULES, resolveModules } from './modules.ts';

/** Where the project is: the agent in the initrd is this very tree's code. */
const PROJECT = fileURLToPath(new URL('../..', import.meta.url));

/** The programs the agent runs, and where they go in the initrd. */
export const AGENT_PROGRAMS: Record<string, string> = {
  '/usr/sbin/cryptsetup': 'cryptsetup-bin (LUKS2 for the config and data partitions)',
  '/usr/sbin/veritysetup': 'cryptsetup-bin (dm-verity devices for every layer)',
  '/usr/bin/crun': 'crun (the services, as OCI containers)',
  '/usr/sbin/mke2fs': 'e2fsprogs (the data partition filesystem, made on first boot)',
};

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

/** Copies a host file (symlinks resolved) into the tree at the same path, keeping its executable bit. */
function putHostFile(root: DirInode, path: string, at = path): void {
  const real = realpathSync(path);
  put(root, at, file(readFileSync(real), lstatSync(real).mode & 0o111 ? 0o755 : 0o644));
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

/** A program and its libraries at their host paths. */
function putProgram(root: DirInode, program: string, at = program): void {
  if (!existsSync(program)) {
    throw new AgentError(
      'AGENT_INITRD',
      `${program} is missing (install ${AGENT_PROGRAMS[program] ?? 'it'})`,
      {
        subject: program,
      },
    );
  }
  putHostFile(root, program, at);
  for (const lib of libraries(program)) putHostFile(root, lib);
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

/** The production packages of the lockfile (`node_modules/...` paths without `dev` or `devOptional`). */
function productionPackages(): string[] {
  const lock = JSON.parse(readFileSync(join(PROJECT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([path, info]) => path.startsWith('node_modules/') && !info.dev && !info.devOptional)
    .map(([path]) => path)
    .sort();
}

/** The agent's own files: sources (no tests), package.json, addons, production dependencies. */
function putAgent(root: DirInode): number {
  let count = 0;
  const add = (rel: string) => {
    putHostFile(root, join(PROJECT, rel), `seal/app/${rel}`);
    count++;
  };
  add('package.json');
  for (const rel of filesUnder(join(PROJECT, 'src'))) add(`src/${rel}`);
  for (const addon of ADDONS) {
    const path = `build/Release/${addon}.node`;
    if (!existsSync(join(PROJECT, path))) {
      throw new AgentError('AGENT_INITRD', `the ${addon} addon is not built (run scripts/setup.sh)`, {
        subject: path,
      });
    }
    add(path);
    for (const lib of libraries(join(PROJECT, path))) putHostFile(root, lib);
  }
  for (const pkg of productionPackages()) {
    // Nested packages are listed on their own; a package's own node_modules is not walked twice.
    for (const rel of filesUnder(
      join(PROJECT, pkg),
      (r) => r.startsWith('node_modules/') || r === 'node_modules',
    ))
      add(`${pkg}/${rel}`);
  }
  return count;
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

/** The JavaScript /init: the kernel runs it with the interpreter its first line names. */
const INIT = `#!/seal/node --disable-warning=ExperimentalWarning
// The Seal agent, as PID 1.
import('/seal/app/src/agent/main.ts');
`;

export async function buildInitrd(dest: string, options: InitrdOptions): Promise<InitrdResult> {
  const scratch = mkdtempSync(join(process.env.SEAL_TMPDIR ?? tmpdir(), 'seal-initrd-'));
  try {
    const root = emptyDir({ mtime: STAMP });
    const tree: Tree = { root };
    for (const dir of ['dev', 'proc', 'sys', 'run', 'tmp', 'mnt', 'sysroot', 'var'])
      put(root, `${dir}/`, emptyDir({ mtime: STAMP }));
    put(root, 'init', file(Buffer.from(INIT), 0o755));
    putProgram(root, join(PROJECT, 'node_modules/node/bin/node'), 'seal/node');
    const files = putAgent(root);
    for (const program of Object.keys(AGENT_PROGRAMS)) putProgram(root, program);

    const ca = readFileSync(options.manifestCa);
    if (parseCertificates(ca.toString('utf8'), options.manifestCa).length === 0) {
      throw new AgentError('AGENT_INITRD', `${options.manifestCa} holds no certificate`, {
        subject: options.manifestCa,
      });
    }
    put(root, 'etc/seal/manifest-ca.pem', file(ca));
    if (options.policy) put(root, 'etc/seal/policy.json', file(readFileSync(options.policy)));

    const { dir: modulesDir, version } = modulesDirectory(options.kernel, scratch);
    const modules = resolveModules(modulesDir, [...AGENT_MODULES, ...(options.modules ?? [])]);
    for (const m of modules) put(root, `lib/modules/${version}/${m.path}`, file(m.data));
    put(
      root,
      'etc/seal/modules',
      file(Buffer.from(modules.map((m) => `/lib/modules/${version}/${m.path}\n`).join(''))),
    );
    if (options.extra) {
      for (const rel of filesUnder(options.extra)) putHostFile(root, join(options.extra, rel), rel);
    }
    const manifest = {
      kernelVersion: version,
      modules: modules.map((m) => m.name),
      node: process.versions.node,
      programs: Object.keys(AGENT_PROGRAMS),
    };
    put(root, 'etc/seal/initrd.json', file(Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)));

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
