/**
 * The Secure Boot variables of a varstore and the state they put the firmware in.
 */
import { GUIDS } from './guid.ts';
import { parseSignatureLists, type SignatureEntry } from './siglist.ts';
import type { Varstore } from './varstore.ts';

export const SECURE_BOOT_VARIABLES = {
  PK: GUIDS.globalVariable,
  KEK: GUIDS.globalVariable,
  db: GUIDS.imageSecurityDatabase,
  dbx: GUIDS.imageSecurityDatabase,
} as const;
export type SecureBootVariable = keyof typeof SECURE_BOOT_VARIABLES;

export interface SecureBootState {
  /** Secure Boot will be enforced at the next boot: a PK is enrolled and SecureBootEnable is on. */
  enabled: boolean;
  /** No PK: the firmware is in setup mode and anything may write the key variables. */
  setupMode: boolean;
  pk: SignatureEntry[];
  kek: SignatureEntry[];
  db: SignatureEntry[];
  dbx: SignatureEntry[];
  /** The variables' data as the firmware returns and measures it (absent ones empty). */
  data: Record<SecureBootVariable, Buffer>;
}

export function secureBootState(varstore: Varstore): SecureBootState {
  const data = {} as Record<SecureBootVariable, Buffer>;
  const entries = {} as Record<SecureBootVariable, SignatureEntry[]>;
  for (const name of Object.keys(SECURE_BOOT_VARIABLES) as SecureBootVariable[]) {
    const v = varstore.get(name, SECURE_BOOT_VARIABLES[name]);
    data[name] = v?.data ?? Buffer.alloc(0);
    entries[name] = v ? parseSignatureLists(v.data, `${varstore.subject} ${name}`) : [];
  }
  const enable = varstore.get('SecureBootEnable', GUIDS.secureBootEnableDisable);
  const setupMode = entries.PK.length === 0;
  return {
    // EDK2 enforces Secure Boot in user mode unless SecureBootEnable says off.
    enabled: !setupMode && (enable === undefined || enable.data[0] === 1),
    setupMode,
    pk: entries.PK,
    kek: entries.KEK,
    db: entries.db,
    dbx: entries.dbx,
    data,
  };
}
