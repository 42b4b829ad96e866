/** The OCI distribution client, `docker://` transport, copy and mirroring of whole systems. */
export { Authenticator, type Challenge, parseChallenges } from './auth.ts';
export { MANIFEST_ACCEPT, RegistryClient, type RegistryOptions, referrersTag } from './client.ts';
export {
  authFilePath,
  type Credentials,
  loadCredentials,
  removeCredentials,
  saveCredentials,
} from './credentials.ts';
export { isRetryable, RegistryError, type RegistryErrorCode } from './errors.ts';
export type { TlsOptions } from './http.ts';
export { DEFAULT_LOW_SPEED, type LowSpeed } from './limits.ts';
export {
  type MirrorEvent,
  type MirrorOptions,
  type MirrorResult,
  mirror,
  type PinnedResolver,
  pinnedInJson,
} from './mirror.ts';
export { formatRegistryReference, parseRegistryReference, type RegistryReference } from './reference.ts';
export { registerPinnedResolver, syncImage } from './sync.ts';
export {
  openRegistryDestination,
  openRegistrySource,
  RegistryDestination,
  RegistrySource,
} from './transport.ts';
