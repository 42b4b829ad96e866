/**
 * The init system calls (native/system.c): mounts, changing root, loading kernel modules,
 * powering off. Only the agent, as PID 1 of a Seal device, calls these.
 */
import { loadAddon } from '../util/native.ts';

interface SystemAddon {
  mount(source: string | null, target: string, type: string | null, flags: number, data: string | null): void;
  umount(target: string, flags: number): void;
  chroot(path: string): void;
  loadModule(path: string, parameters: string): void;
  reboot(how: 'poweroff' | 'reboot' | 'halt'): never;
  interfaceUp(name: string): void;
  configureInterface(name: string, address: string, netmask: string): void;
  addDefaultRoute(gateway: string): void;
  /** add_key(2) to the keyring with this serial number; the new key's serial number. */
  addKey(keyring: number, type: string, payload: Uint8Array): number;
  /** Closes a keyring: nothing can be added to it afterwards. */
  restrictKeyring(keyring: number): void;
}

/** mount(2) flags used by the agent. */
export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  REMOUNT: 32,
  BIND: 4096,
  MOVE: 8192,
  REC: 16384,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
} as const;

/** umount2(2) flags. */
export const MNT_DETACH = 2;

let addon: SystemAddon | undefined;

export function system(): SystemAddon {
  if (addon) return addon;
  const loaded = loadAddon<SystemAddon>('system');
  if (loaded instanceof Error)
    throw new Error(`Seal's system addon is not built (run scripts/setup.sh): ${loaded.message}`);
  addon = loaded;
  return addon;
}
