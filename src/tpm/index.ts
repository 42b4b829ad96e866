/**
 * `tpm/`: a TPM 2.0 client in TypeScript (no external TPM tools) and Seal's EA design on it —
 * factory provisioning, signed policies, unlock on the device, revocation, the TPM-resident
 * identity key. The same code runs on the build host (against the device's TPM or swtpm) and in
 * the device's initrd (against /dev/tpmrm0).
 *
 * The device agent's API (everything in memory, nothing written to disk):
 *
 *   const tpm = await Tpm.open('/dev/tpmrm0');             // or swtpm:HOST:PORT, swtpm:unix:PATH
 *   const policy = parsePolicy(readFileSync('/etc/seal/tpm-policy.json'));
 *   const { secrets, wipe } = await unlock(tpm, { policy, lockPcr7: true });
 *   // secrets.luksPassphrase, secrets.deviceCert (DER), secrets.deviceKey (PKCS#8 DER, unless
 *   // the identity key is TPM-resident: then signChallenge / quoteIdentity use it),
 *   // secrets.versionAuth (32 bytes: keep it in memory for raiseAcceptedVersion)
 *   const accepted = await readAcceptedVersion(tpm);   // anti-rollback: refuse manifests below it
 *   … use them …;
 *   await lockPcr7(tpm);       // if unlock was called without lockPcr7
 *   // later in the same boot, once the new system is confirmed good (works after the lock):
 *   await raiseAcceptedVersion(tpm, secrets.versionAuth, manifest.version);
 *   wipe();
 *   await readVersion(tpm);    // the TPM's policy version
 *   await tpm.close();
 *
 * `readAcceptedVersion` throws TpmError `TPM_NOT_PROVISIONED` on a TPM without the counter and
 * `TPM_FOREIGN` when its indices are not Seal's; `raiseAcceptedVersion` throws `TPM_ROLLBACK`
 * for a lower version, `TPM_INVALID_ARGUMENT` for a jump over MAX_RAISE, `TPM_REFUSED` (with
 * TPM_RC_BAD_AUTH) for another authValue. Both take `{ storageKeyName }` like `unlock`.
 *
 * `unlock` throws TpmError: `TPM_REFUSED` when the TPM refused (the message carries the TPM's
 * response code — TPM_RC_VALUE from PolicyPCR for another PCR 7, TPM_RC_POLICY from PolicyNV
 * after a revocation, TPM_RC_SIGNATURE for an altered policy, TPM_RC_POLICY_FAIL for a policy
 * signed by another key — and what Seal could tell from the TPM's public state),
 * `TPM_NOT_PROVISIONED`, `TPM_POLICY_FILE`, `TPM_TRANSPORT`, `TPM_MALFORMED`…
 *
 * The factory and management side: `provision` (also completes, with a management policy, a TPM
 * provisioned before the accepted manifest version existed), `signPolicy` / `serializePolicy`,
 * `revoke`, `createIdentity`. The layout (NV indices, attributes, policyRefs) is in layout.ts; the signed
 * policy file format in signed-policy.ts.
 *
 * Underneath: `Tpm` (client.ts) has one method per command, sessions (session.ts: password,
 * HMAC bound/unbound, policy and trial, salted with ECC or RSA, AES-128-CFB parameter
 * encryption), transports (transport.ts: kernel devices, swtpm command and control channels,
 * a recording transport), offline policy digests (policy.ts), structures and their bounded
 * parsers (structures.ts, marshal.ts), response codes (rc.ts).
 */
export {
  type AcceptedState,
  type AcceptedVersionOptions,
  raiseAcceptedVersion,
  readAcceptedState,
  readAcceptedVersion,
} from './accepted.ts';
export {
  type CreatedObject,
  type Entity,
  type PcrValue,
  type StartSessionOptions,
  Tpm,
  type TpmOptions,
  TpmResponseError,
} from './client.ts';
export * from './constants.ts';
export { type Credential, makeCredential } from './credential.ts';
export { curveInfo, kdfa, kdfe, makeSeed } from './crypto.ts';
export { TpmError, type TpmErrorCode } from './errors.ts';
export * from './hash.ts';
export {
  createIdentity,
  type Identity,
  identityPublic,
  MAX_CHALLENGE,
  quoteIdentity,
  signChallenge,
  verifyChallenge,
} from './identity.ts';
export * from './layout.ts';
export { marshal, Reader, Writer } from './marshal.ts';
export * from './policy.ts';
export { type ProvisionOptions, type ProvisionResult, provision } from './provision.ts';
export * from './rc.ts';
export { revoke } from './revoke.ts';
export { type Authorization, AuthSession, EMPTY_PASSWORD, type SessionKind } from './session.ts';
export * from './signed-policy.ts';
export * from './structures.ts';
export * from './templates.ts';
export * from './transport.ts';
export {
  lockDigest,
  lockPcr7,
  ownerAuthSet,
  pinnedSaltKey,
  readVersion,
  saltKey,
  type Unlocked,
  type UnlockOptions,
  unlock,
} from './unlock.ts';
