/**
 * Every command of the CLI; each domain contributes its list from its own file. Files are
 * loaded on demand, by the command's first word: starting Node.js and loading one domain is
 * most of what a short command costs.
 */
import type { Command } from '../command.ts';

type Loader = () => Promise<Command[]>;

const FILES: [words: string[], load: Loader][] = [
  [['image'], async () => (await import('./image.ts')).imageCommands],
  [['store'], async () => (await import('./store.ts')).storeCommands],
  [['verity', 'fsverity'], async () => (await import('./verity.ts')).verityCommands],
  [['squashfs'], async () => (await import('./squashfs.ts')).squashfsCommands],
  [['tpm'], async () => (await import('./tpm.ts')).tpmCommands],
  [['erofs'], async () => (await import('./erofs.ts')).erofsCommands],
  [['composefs'], async () => (await import('./composefs.ts')).composefsCommands],
  [
    ['copy', 'sync', 'ls-tags', 'referrers', 'login', 'logout'],
    async () => (await import('./registry.ts')).registryCommands,
  ],
  [['pki'], async () => (await import('./pki.ts')).pkiCommands],
  [['manifest', 'sign', 'verify-signature'], async () => (await import('./manifest.ts')).manifestCommands],
  [['initrd', 'status'], async () => (await import('./agent.ts')).agentCommands],
  [['install', 'machine'], async () => (await import('./machine.ts')).machineCommands],
  [['media', 'push'], async () => (await import('./media.ts')).mediaCommands],
  [['uki'], async () => (await import('./uki.ts')).ukiCommands],
  [['secureboot'], async () => (await import('./secureboot.ts')).secureBootCommands],
  [['pcr', 'eventlog'], async () => (await import('./measure.ts')).measureCommands],
  [['measure'], async () => (await import('./cvm.ts')).cvmCommands],
  [['ipe'], async () => (await import('./ipe.ts')).ipeCommands],
  [['attest'], async () => (await import('./attest.ts')).attestCommands],
];

/** The commands that can start with `word` (all of them when it names none, e.g. for help). */
export async function loadCommands(word: string | undefined): Promise<Command[]> {
  const owner = FILES.find(([words]) => word !== undefined && words.includes(word));
  const loads = owner ? [owner[1]] : FILES.map(([, load]) => load);
  return (await Promise.all(loads.map((load) => load()))).flat();
}
