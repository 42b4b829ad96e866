/**
 * Image references in the containers-image transport syntax:
 * `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:TAG]`, `dir:PATH` (a root
 * filesystem directory), `docker://HOST/REPO[:TAG|@DIGEST]`, and a bare `NAME[:TAG]` or
 * `NAME@DIGEST` naming an image in the default store.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { isDigest } from '../oci/digest.ts';
import { StoreError } from './errors.ts';

export type ImageReference =
  | { transport: 'oci' | 'oci-archive' | 'docker-archive'; path: string; tag?: string; text: string }
  | { transport: 'dir'; path: string; text: string }
  | { transport: 'docker'; text: string }
  | { transport: 'store'; store: string; name: string; tag?: string; text: string };

export function defaultStorePath(): string {
  const env = process.env.SEAL_STORE;
  if (env) return env;
  const data = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(data, 'seal', 'store');
}

const NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

function invalid(text: string, why: string): never {
  throw new StoreError('STORE_INVALID_REFERENCE', `invalid image reference ${JSON.stringify(text)}: ${why}`, {
    subject: text,
  });
}

/**
 * Splits `PATH[:TAG]`. Paths may hold ':' and docker-archive tags are `NAME:TAG`, so the first
 * split whose path exists wins; otherwise a trailing `:TAG` counts if it is a valid tag.
 */
function splitPathTag(rest: string): { path: string; tag?: string } {
  for (let i = rest.indexOf(':'); i > 0; i = rest.indexOf(':', i + 1)) {
    if (existsSync(rest.slice(0, i))) return { path: rest.slice(0, i), tag: rest.slice(i + 1) };
  }
  const colon = rest.lastIndexOf(':');
  if (colon > 0) {
    const tag = rest.slice(colon + 1);
    if (TAG.test(tag) || isDigest(tag)) return { path: rest.slice(0, colon), tag };
  }
  return { path: rest };
}

export function parseReference(text: string): ImageReference {
  if (text.startsWith('docker://')) return { transport: 'docker', text };
  for (const transport of ['oci', 'oci-archive', 'docker-archive'] as const) {
    if (text.startsWith(`${transport}:`)) {
      const rest = text.slice(transport.length + 1);
      if (!rest) invalid(text, 'no path');
      const { path, tag } = splitPathTag(rest);
      return tag === undefined ? { transport, path, text } : { transport, path, tag, text };
    }
  }
  if (text.startsWith('dir:')) {
    const path = text.slice(4);
    if (!path) invalid(text, 'no path');
    return { transport: 'dir', path, text };
  }
  const at = text.indexOf('@');
  if (at >= 0) {
    const name = text.slice(0, at);
    const digest = text.slice(at + 1);
    if (!NAME.test(name)) invalid(text, 'names are lowercase letters, digits and separators');
    if (!isDigest(digest)) invalid(text, 'not a digest after @');
    return { transport: 'store', store: defaultStorePath(), name, tag: digest, text };
  }
  const colon = text.lastIndexOf(':');
  const name = colon > 0 ? text.slice(0, colon) : text;
  const tag = colon > 0 ? text.slice(colon + 1) : 'latest';
  if (!NAME.test(name)) invalid(text, 'expected TRANSPORT:PATH or NAME[:TAG] (names are lowercase)');
  if (!TAG.test(tag)) invalid(text, 'invalid tag');
  return { transport: 'store', store: defaultStorePath(), name, tag, text };
}

/** The ref.name under which an image is kept in a layout for this reference. */
export function layoutName(ref: ImageReference): string | undefined {
  if (ref.transport === 'store')
    return ref.tag && isDigest(ref.tag) ? ref.tag : `${ref.name}:${ref.tag ?? 'latest'}`;
  if (ref.transport === 'oci' || ref.transport === 'oci-archive' || ref.transport === 'docker-archive')
    return ref.tag;
  return undefined;
}
