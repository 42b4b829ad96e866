/**
 * One boot of bench/boot's device under qemu TCG, OVMF Secure Boot and swtpm, as its contender's
 * UKI (on the ESP of the device's disk) boots it: the times the host saw on the console and what
 * the guest printed of its own (steps, uptimes). Every boot holds /tmp/seal-vm.lock.
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { readTable, SECTOR } from '../../src/gpt/index.ts';
import { OVMF_CODE_SECURE_BOOT, runQemu, Swtpm } from '../../src/machine/index.ts';
import { CRASH } from '../../test/helpers/uki-vm.ts';
import { withVmLock } from '../vm-lock.ts';

export interface Device {
  disk: string;
  vars: string;
  tpm: string;
}

export type Kind = 'seal' | 'reference';
export const PREFIX: Record<Kind, string> = { seal: 'seal', reference: 'ref' };

/** Puts `uki` at the ESP's removable-media path of the device's disk. */
export function putUki(device: Device, uki: string): void {
  const esp = readTable(device.disk).partitions.find((p) => p.name === 'esp')!;
  execFileSync(
    'mcopy',
    ['-o', '-i', `${device.disk}@@${esp.firstLba * SECTOR}`, uki, '::/EFI/BOOT/BOOTX64.EFI'],
    {
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
    },
  );
}

export interface Boot {
  kind: Kind;
  /** Host seconds from qemu's start to "boot complete", and to the counter's report. */
  total: number;
  counterAt: number;
  /** Host seconds from qemu's start to the firmware starting the UKI (OVMF's "BdsDxe: starting"). */
  firmwareAt?: number;
  /** Guest uptime (s) at "boot complete", and when the init process started. */
  uptime: number;
  initAt: number;
  /** The agent: ms from Node.js's start to its first step (loading the runtime and the agent). */
  loadMs?: number;
  steps: Map<string, number>;
  output: string;
  /** The host's 1-minute load average when the boot started (the host is shared). */
  load: number;
}

const COMPLETE = '(?:seal|ref): boot complete[^\\n]*\\n';
const COUNTER = 'counter: boot \\d+, web says: [^\\n]*\\n';
const MARKS = {
  firmware: /BdsDxe: starting/,
  complete: new RegExp(COMPLETE),
  counter: new RegExp(COUNTER),
};

/** One boot of `kind`'s UKI (already on the ESP); a crashed guest is booted again (up to 3 times). */
export async function bootOnce(device: Device, kind: Kind, retries: { count: number }): Promise<Boot> {
  for (let attempt = 1; ; attempt++) {
    execFileSync('sync');
    let load = 0;
    const { result, marks } = await withVmLock(async () => {
      const tpm = await Swtpm.start({ stateDir: device.tpm, mode: 'qemu' });
      const marks: Partial<Record<keyof typeof MARKS, number>> = {};
      let seen = '';
      load = loadavg()[0]!;
      const t0 = performance.now();
      try {
        const result = await runQemu({
          firmware: { code: OVMF_CODE_SECURE_BOOT, vars: device.vars },
          disks: [{ path: device.disk, virtio: true }],
          tpm,
          memory: 2048,
          timeoutMs: 240_000,
          // Both the marker and the counter's report (in either order), or a refusal.
          stopOn: new RegExp(
            `${COMPLETE}[\\s\\S]*${COUNTER}|${COUNTER}[\\s\\S]*${COMPLETE}|the boot ends|Access Denied|No bootable option`,
          ),
          onOutput: (text) => {
            const now = (performance.now() - t0) / 1000;
            seen += text;
            for (const [mark, re] of Object.entries(MARKS) as [keyof typeof MARKS, RegExp][])
              if (marks[mark] === undefined && re.test(seen)) marks[mark] = now;
          },
        });
        return { result, marks };
      } finally {
        await tpm.stop();
      }
    });
    const output = result.output;
    const p = PREFIX[kind];
    const complete = new RegExp(`^${p}: boot complete.*\\(([\\d.]+) s since the kernel started\\)`, 'm').exec(
      output,
    );
    if (complete && marks.complete !== undefined && marks.counter !== undefined) {
      const steps = new Map<string, number>();
      for (const m of output.matchAll(new RegExp(`^${p}: \\[ ok \\] (.+?) \\((\\d+) ms\\)`, 'gm')))
        steps.set(m[1]!, Number(m[2]));
      const node = /Node\.js started ([\d.]+) s after the kernel; the agent loaded in (\d+) ms/.exec(output);
      const init = /^ref: init started (\d+) ms after the kernel/m.exec(output);
      return {
        kind,
        total: marks.complete,
        counterAt: marks.counter,
        ...(marks.firmware !== undefined ? { firmwareAt: marks.firmware } : {}),
        uptime: Number(complete[1]),
        initAt: kind === 'seal' ? Number(node?.[1]) : Number(init?.[1]) / 1000,
        ...(node ? { loadMs: Number(node[2]) } : {}),
        steps,
        output,
        load,
      };
    }
    // A refusal is the boot's own failure; a crashed, hung or killed guest is booted again.
    const refused = /the boot ends|Access Denied|No bootable option/.test(output);
    const crashed = CRASH.test(output) || result.timedOut || /terminating on signal/.test(output);
    if (refused || !crashed || attempt === 3)
      throw new Error(`the ${kind} boot did not complete:\n${output.slice(-4000)}`);
    retries.count++;
    console.error(
      `the ${kind} VM crashed, hung or was killed; booting it again (attempt ${attempt + 1}): ${output.trim().split('\n').at(-1)}`,
    );
  }
}
