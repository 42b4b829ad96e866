/**
 * The device's services: each `service` target of the system manifest runs as an OCI container
 * under crun, its root a fresh overlay over the target's verified image at every start (nothing
 * a previous run wrote survives), its runtime configuration made from the image's config and the
 * manifest's service entry (command, environment, user, volumes on the data partition; the secrets
 * attestation fetched at boot read-only at /run/secrets), and its restart policy applied by the agent, which logs its output on the console and in a journal
 * file on the data partition.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServiceSpec } from '../manifest/spec.ts';
import type { ImageConfig } from '../oci/types.ts';
import { AgentError } from './errors.ts';
import { type ImageLayers, mountOverlay } from './images.ts';
import { programCommand, programEnvironment, runProgram } from './tools.ts';

/** The capabilities a container gets (the OCI runtimes' usual default set). */
const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** uid and gid for a `user` string ("name", "uid", "name:group", "uid:gid"), names looked up in the rootfs. */
export function resolveUser(user: string | undefined, rootfs: string): { uid: number; gid: number } {
  if (!user) return { uid: 0, gid: 0 };
  const [u, g] = user.split(':') as [string, string | undefined];
  const table = (file: string) => {
    try {
      return readFileSync(join(rootfs, 'etc', file), 'utf8')
        .split('\n')
        .map((line) => line.split(':'));
    } catch {
      return [];
    }
  };
  const lookup = (value: string, file: string, column: number): number | undefined => {
    if (/^\d+$/.test(value)) return Number(value);
    const row = table(file).find((r) => r[0] === value);
    return row?.[column] !== undefined && /^\d+$/.test(row[column]!) ? Number(row[column]) : undefined;
  };
  const uid = lookup(u, 'passwd', 2);
  if (uid === undefined)
    throw new AgentError('AGENT_SERVICE', `user ${u} is not in the image's /etc/passwd`, { subject: user });
  let gid = g === undefined ? undefined : lookup(g, 'group', 2);
  if (g === undefined) {
    const row = table('passwd').find((r) => r[0] === u || r[2] === String(uid));
    gid = row?.[3] !== undefined && /^\d+$/.test(row[3]!) ? Number(row[3]) : 0;
  }
  if (gid === undefined)
    throw new AgentError('AGENT_SERVICE', `group ${g} is not in the image's /etc/group`, { subject: user });
  return { uid, gid };
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

/** The parts of the OCI runtime specification's config.json that Seal writes. */
export interface OciRuntimeConfig {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<'bounding' | 'effective' | 'permitted', string[]>;
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: { namespaces: { type: string }[]; maskedPaths: string[]; readonlyPaths: string[] };
}

/** The OCI runtime configuration of a service. */
export function runtimeConfig(
  name: string,
  rootfs: string,
  image: ImageConfig,
  service: ServiceSpec,
  volumes: string,
  secrets?: string,
): OciRuntimeConfig {
  const c = image.config ?? {};
  const args = service.command ?? [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
  if (args.length === 0)
    throw new AgentError(
      'AGENT_SERVICE',
      `service ${name} has no command (neither the manifest nor the image gives one)`,
      { subject: name },
    );
  const env = new Map<string, string>();
  for (const e of c.Env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']) {
    const eq = e.indexOf('=');
    if (eq > 0) env.set(e.slice(0, eq), e.slice(eq + 1));
  }
  for (const [k, v] of Object.entries(service.env ?? {})) env.set(k, v);
  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    },
    { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
  ];
  for (const m of service.mounts ?? []) {
    if (!NAME.test(m.source) || !m.target.startsWith('/') || m.target.split('/').includes('..')) {
      throw new AgentError(
        'AGENT_SERVICE',
        `service ${name}: volume ${m.source} at ${m.target} is not a volume name and an absolute path`,
        { subject: name },
      );
    }
    const source = join(volumes, m.source);
    mkdirSync(source, { recursive: true });
    mounts.push({
      destination: m.target,
      type: 'bind',
      source,
      options: ['rbind', m.readonly ? 'ro' : 'rw', 'nosuid', 'nodev'],
    });
  }
  if (secrets !== undefined)
    mounts.push({
      destination: '/run/secrets',
      type: 'bind',
      source: secrets,
      options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
    });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: resolveUser(service.user ?? c.User, rootfs),
      args,
      env: [...env].map(([k, v]) => `${k}=${v}`),
      cwd: c.WorkingDir || '/',
      capabilities: { bounding: CAPABILITIES, effective: CAPABILITIES, permitted: CAPABILITIES },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: false },
    hostname: name,
    mounts,
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }],
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware', '/proc/scsi'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

export type RestartPolicy = 'always' | 'on-failure' | 'no';

export interface ServiceHandle {
  name: string;
  /** The current run, while there is one. */
  child?: ChildProcess;
  starts: number;
  state: 'starting' | 'running' | 'exited' | 'failed' | 'stopped';
  stop(): Promise<void>;
}

export interface ServiceRun {
  name: string;
  /** The verified image's layers, mounted. */
  image: ImageLayers;
  config: ImageConfig;
  spec: ServiceSpec;
  /** Directory of the service's bundle and writable layer (on tmpfs). */
  dir: string;
  /** Directory of the volumes (on the data partition). */
  volumes: string;
  /** The journal file (on the data partition). */
  journal: string;
  /** The secrets attestation fetched at boot, bound read-only at /run/secrets. */
  secrets?: string;
  log(line: string): void;
}

/** Starts a service and supervises it by its restart policy until stopped. */
export function superviseService(run: ServiceRun): ServiceHandle {
  const policy: RestartPolicy = run.spec.restart ?? 'always';
  let stopping = false;
  let delay = 1000;
  const handle: ServiceHandle = {
    name: run.name,
    starts: 0,
    state: 'starting',
    async stop() {
      stopping = true;
      handle.state = 'stopped';
      if (handle.child && handle.child.exitCode === null) {
        await runProgram('crun', ['kill', run.name, 'TERM']).catch(() => {});
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            runProgram('crun', ['kill', run.name, 'KILL']).catch(() => {});
          }, 10_000);
          handle.child?.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      await runProgram('crun', ['delete', '--force', run.name]).catch(() => {});
    },
  };
  const journal = (line: string) => {
    try {
      appendFileSync(run.journal, `${new Date().toISOString()} ${line}\n`);
    } catch {}
  };
  const start = () => {
    if (stopping) return;
    handle.starts++;
    let rootfs: string;
    try {
      rootfs = join(run.dir, 'rootfs');
      mountOverlay(run.image, rootfs, join(run.dir, 'rw'));
      const bundle = join(run.dir, 'bundle');
      mkdirSync(bundle, { recursive: true });
      writeFileSync(
        join(bundle, 'config.json'),
        JSON.stringify(
          runtimeConfig(run.name, rootfs, run.config, run.spec, run.volumes, run.secrets),
          null,
          2,
        ),
      );
    } catch (error) {
      handle.state = 'failed';
      run.log(`service ${run.name}: cannot prepare its root: ${(error as Error).message}`);
      return;
    }
    const [command, args] = programCommand('crun', ['run', '--bundle', join(run.dir, 'bundle'), run.name]);
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: programEnvironment('crun'),
    });
    handle.child = child;
    handle.state = 'running';
    run.log(`service ${run.name}: started (run ${handle.starts}, pid ${child.pid})`);
    journal(`started (run ${handle.starts})`);
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream.on('data', (d: Buffer) => {
        pending += d.toString('utf8');
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          run.log(`[${run.name}] ${line}`);
          journal(line);
        }
      });
    }
    child.on('exit', (code, signal) => {
      handle.child = undefined;
      const how = signal ? `killed by ${signal}` : `exit status ${code}`;
      journal(`exited (${how})`);
      if (stopping) return;
      handle.state = code === 0 ? 'exited' : 'failed';
      run.log(`service ${run.name}: ${how}`);
      runProgram('crun', ['delete', '--force', run.name])
        .catch(() => {})
        .finally(() => {
          if (policy === 'always' || (policy === 'on-failure' && code !== 0)) {
            run.log(`service ${run.name}: restarting in ${delay / 1000} s`);
            setTimeout(start, delay);
            delay = Math.min(delay * 2, 30_000);
          }
        });
    });
  };
  if (!existsSync(run.dir)) mkdirSync(run.dir, { recursive: true });
  start();
  return handle;
}
