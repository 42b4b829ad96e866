/**
 * Revocation, the management flow: a management image, booted with its own PCR 7 and holding a
 * management-role signed policy for the current version, reads the owner secret and increments
 * the version counter. Every policy signed for an older version then fails (PolicyNV), and a
 * policy signed for the new version works.
 */

import type { Tpm } from './client.ts';
import { RH } from './constants.ts';
import { TpmError } from './errors.ts';
import { VERSION_INDEX } from './layout.ts';
import type { SignedPolicy } from './signed-policy.ts';
import { readVersion, saltKey, unlock } from './unlock.ts';

export async function revoke(
  tpm: Tpm,
  managementPolicy: SignedPolicy,
): Promise<{ from: number; to: number }> {
  if (managementPolicy.role !== 'management')
    throw new TpmError(
      'TPM_INVALID_ARGUMENT',
      `revocation needs a management policy, not a ${managementPolicy.role} one`,
    );
  const unlocked = await unlock(tpm, { policy: managementPolicy, secrets: ['ownerSecret'] });
  const ownerAuth = unlocked.secrets.ownerSecret!;
  try {
    const salt = await saltKey(tpm);
    const session = await tpm.startAuthSession({ type: 'hmac', salt });
    try {
      await tpm.nvIncrement(VERSION_INDEX, { authHandle: RH.OWNER, auth: { session, authValue: ownerAuth } });
    } finally {
      await tpm.flushSession(session).catch(() => {});
      if (salt.transient) await tpm.flushContext(salt.handle).catch(() => {});
    }
  } finally {
    unlocked.wipe();
  }
  return { from: unlocked.version, to: (await readVersion(tpm)) ?? 0 };
}
