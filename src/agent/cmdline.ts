/**
 * The `seal.*` kernel command-line parameters. They are built into the signed UKI, so they are
 * measured (PCR 11) and cannot be changed without breaking the signature:
 *
 *   seal.tag=TAG            the system manifest to boot, by its tag in the store (default: the
 *                           store's `current` tag)
 *   seal.debug=1            stack traces with every failure, and the tools' output
 *   seal.on-failure=ACTION  what a refused boot ends in: poweroff (default), halt or reboot
 *   seal.test=NAME          a test-only stop after the named step (for the VM tests of the steps)
 */
import { AgentError } from './errors.ts';

export interface AgentParameters {
  tag: string;
  debug: boolean;
  onFailure: 'poweroff' | 'halt' | 'reboot';
  test?: string;
}

const KNOWN = new Set(['seal.tag', 'seal.debug', 'seal.on-failure', 'seal.test']);

/** Parses /proc/cmdline (space-separated words; "double quotes" group a value with spaces, as the kernel does). */
export function parseCommandLine(text: string): AgentParameters {
  const params: AgentParameters = { tag: 'current', debug: false, onFailure: 'poweroff' };
  for (const word of text.trim().match(/(?:[^\s"]+|"[^"]*")+/g) ?? []) {
    const eq = word.indexOf('=');
    const key = eq < 0 ? word : word.slice(0, eq);
    if (!key.startsWith('seal.')) continue;
    const value = eq < 0 ? '1' : word.slice(eq + 1).replace(/"/g, '');
    if (!KNOWN.has(key))
      throw new AgentError('AGENT_CMDLINE', `unknown kernel parameter ${key}`, { subject: key });
    switch (key) {
      case 'seal.tag':
        if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(value))
          throw new AgentError('AGENT_CMDLINE', `seal.tag=${value} is not a tag`, { subject: key });
        params.tag = value;
        break;
      case 'seal.debug':
        params.debug = value !== '0';
        break;
      case 'seal.on-failure':
        if (value !== 'poweroff' && value !== 'halt' && value !== 'reboot')
          throw new AgentError('AGENT_CMDLINE', `seal.on-failure is poweroff, halt or reboot, not ${value}`, {
            subject: key,
          });
        params.onFailure = value;
        break;
      case 'seal.test':
        params.test = value;
        break;
    }
  }
  return params;
}
