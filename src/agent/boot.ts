/**
 * The boot of a Seal device, step by step, each logged on the console and in /run/seal/boot.json.
 * Any failure names its step and reason on the console and ends the boot as the command line
 * says (poweroff by default); nothing is written that would make a later boot accept what this
 * one refused.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { type AgentParameters, parseCommandLine } from './cmdline.ts';
import { BootLog } from './log.ts';
import { MS, system } from './system.ts';

/** The API filesystems every later step needs. */
function mountApiFilesystems(): void {
  const sys = system();
  const mounts: [source: string, target: string, type: string, flags: number, data: string | null][] = [
    ['proc', '/proc', 'proc', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['sysfs', '/sys', 'sysfs', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['devtmpfs', '/dev', 'devtmpfs', MS.NOSUID, 'mode=0755'],
    ['tmpfs', '/run', 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=0755'],
    ['securityfs', '/sys/kernel/security', 'securityfs', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['cgroup2', '/sys/fs/cgroup', 'cgroup2', MS.NOSUID | MS.NODEV | MS.NOEXEC, null],
    ['devpts', '/dev/pts', 'devpts', MS.NOSUID | MS.NOEXEC, 'gid=5,mode=620,ptmxmode=0666'],
    ['tmpfs', '/dev/shm', 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=1777'],
  ];
  for (const [source, target, type, flags, data] of mounts) {
    mkdirSync(target, { recursive: true });
    sys.mount(source, target, type, flags, data);
  }
  mkdirSync('/run/cryptsetup', { recursive: true });
}

/** Loads the kernel modules listed in /etc/seal/modules, in order (dependencies first). */
function loadModules(): number {
  const list = readFileSync('/etc/seal/modules', 'utf8').split('\n').filter(Boolean);
  for (const path of list) system().loadModule(path, '');
  return list.length;
}

/** Ends the boot the way the command line says; never returns. */
function end(params: AgentParameters | undefined, log: BootLog): never {
  log.say(`the boot ends: ${params?.onFailure ?? 'poweroff'}`);
  return system().reboot(params?.onFailure ?? 'poweroff');
}

export async function boot(): Promise<never> {
  const log = new BootLog('/run/seal/boot.json');
  let params: AgentParameters | undefined;
  try {
    log.say(`agent started, Node.js ${process.versions.node}, PID ${process.pid}`);
    await log.step('mount the API filesystems', mountApiFilesystems);
    log.record.uptimeAtStart = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) || 0;
    params = await log.step('read the kernel command line', () =>
      parseCommandLine(readFileSync('/proc/cmdline', 'utf8')),
    );
    await log.step('load kernel modules', loadModules, (n) => `${n} modules`);
    log.record.result = 'running';
    log.save();
    log.say('boot complete');
  } catch (error) {
    log.record.result = 'refused';
    log.save();
    if (params?.debug && error instanceof Error) log.say(error.stack ?? String(error));
  }
  return end(params, log);
}
