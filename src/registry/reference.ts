/**
 * `docker://` references: `[HOST[:PORT]/]REPO[:TAG][@DIGEST]`, with Docker Hub's defaults
 * (a first component without `.` or `:` that is not `localhost` is a path, not a host).
 */
import { parseDigest } from '../oci/digest.ts';
import { RegistryError } from './errors.ts';

export interface RegistryReference {
  /** Host as written by the user (`docker.io` for Docker Hub). */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
const REPOSITORY = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;

export function parseRegistryReference(text: string): RegistryReference {
  const invalid = (why: string) =>
    new RegistryError('REFERENCE_INVALID', `invalid registry reference ${JSON.stringify(text)}: ${why}`, {
      subject: text,
    });
  let rest = text.startsWith('docker://') ? text.slice('docker://'.length) : text.replace(/^\/\//, '');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest);
    } catch {
      throw invalid(`bad digest ${digest}`);
    }
  }
  let registry = DOCKER_HUB;
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (
    slash >= 0 &&
    (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))
  ) {
    registry = first;
    rest = rest.slice(slash + 1);
  }
  if (!HOST.test(registry)) throw invalid(`bad host ${registry}`);
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(`bad tag ${tag}`);
  }
  if (registry === DOCKER_HUB && !rest.includes('/')) rest = `library/${rest}`;
  if (!REPOSITORY.test(rest)) throw invalid(`bad repository name ${JSON.stringify(rest)}`);
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: rest, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

export function formatRegistryReference(ref: RegistryReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** The host the API is served from (Docker Hub's API lives elsewhere than its name). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? 'registry-1.docker.io' : registry;
}

/** Loopback hosts may be spoken to in plain HTTP (when they do not answer in TLS). */
export function isLoopback(registry: string): boolean {
  const host = registry.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
