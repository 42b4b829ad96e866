/**
 * The system manifest an author writes (YAML) and the canonical document Seal signs. The
 * document pins every target image by descriptor, so `seal sync` follows them like any other
 * pinned image.
 */
import { parse } from 'yaml';
import type { Descriptor } from '../oci/types.ts';
import { ManifestError } from './errors.ts';

export const SYSTEM_ARTIFACT_TYPE = 'application/vnd.seal.system.v1';
export const SYSTEM_MEDIA_TYPE = 'application/vnd.seal.system.manifest.v1+json';

export type Role = 'host' | 'service' | 'data';

export interface ServiceSpec {
  command?: string[];
  env?: Record<string, string>;
  user?: string;
  network?: string;
  ports?: string[];
  mounts?: { source: string; target: string; readonly?: boolean }[];
  restart?: 'always' | 'on-failure' | 'no';
}

export interface TargetSpec {
  name: string;
  image: string;
  role: Role;
  service?: ServiceSpec;
}

export interface SystemSpec {
  product: string;
  version: number;
  /**
   * The anti-rollback number a device keeps in its TPM (default: the version). A device refuses a
   * system whose security version is below the highest it accepted.
   */
  securityVersion?: number;
  /** The product signs this system as a permitted downgrade from any later version (same security version). */
  downgrade?: boolean;
  updateType: 'complete' | 'partial';
  targets: TargetSpec[];
  storage: { name: string; size: string; mount?: string }[];
}

export interface SystemTarget {
  name: string;
  role: Role;
  /** Where the image was found when the system was built. */
  reference: string;
  /** The image manifest, pinned. */
  image: Descriptor;
  /** How the image is sealed: squashfs, erofs or composefs. */
  sealing: string;
  service?: ServiceSpec;
}

export interface SystemManifest {
  schemaVersion: 1;
  product: string;
  version: number;
  securityVersion?: number;
  downgrade?: boolean;
  updateType: 'complete' | 'partial';
  targets: SystemTarget[];
  storage: { name: string; size: string; mount?: string }[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function fail(path: string, message: string): never {
  throw new ManifestError('MANIFEST_INVALID', `${path}: ${message}`, { subject: path });
}

type Json = Record<string, unknown>;

function object(v: unknown, path: string): Json {
  if (!v || typeof v !== 'object' || Array.isArray(v)) fail(path, 'must be a mapping');
  return v as Json;
}

function only(o: Json, path: string, keys: string[]): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) fail(`${path}.${k}`, 'unknown key');
}

function string(v: unknown, path: string): string {
  if (typeof v !== 'string' || v === '') fail(path, 'must be a non-empty string');
  return v;
}

function strings(v: unknown, path: string): string[] {
  if (!Array.isArray(v)) fail(path, 'must be a list');
  return v.map((s, i) => (typeof s === 'number' ? String(s) : string(s, `${path}[${i}]`)));
}

function service(v: unknown, path: string): ServiceSpec {
  const o = object(v, path);
  only(o, path, ['command', 'env', 'user', 'network', 'ports', 'mounts', 'restart']);
  const out: ServiceSpec = {};
  if (o.command !== undefined) out.command = strings(o.command, `${path}.command`);
  if (o.env !== undefined) {
    const env = object(o.env, `${path}.env`);
    out.env = Object.fromEntries(
      Object.entries(env).map(([k, val]) => [
        k,
        typeof val === 'number' || typeof val === 'boolean' ? String(val) : string(val, `${path}.env.${k}`),
      ]),
    );
  }
  if (o.user !== undefined)
    out.user = typeof o.user === 'number' ? String(o.user) : string(o.user, `${path}.user`);
  if (o.network !== undefined) out.network = string(o.network, `${path}.network`);
  if (o.ports !== undefined) out.ports = strings(o.ports, `${path}.ports`);
  if (o.mounts !== undefined) {
    if (!Array.isArray(o.mounts)) fail(`${path}.mounts`, 'must be a list');
    out.mounts = o.mounts.map((m, i) => {
      const mo = object(m, `${path}.mounts[${i}]`);
      only(mo, `${path}.mounts[${i}]`, ['source', 'target', 'readonly']);
      return {
        source: string(mo.source, `${path}.mounts[${i}].source`),
        target: string(mo.target, `${path}.mounts[${i}].target`),
        ...(mo.readonly === true ? { readonly: true } : {}),
      };
    });
  }
  if (o.restart !== undefined) {
    if (!['always', 'on-failure', 'no'].includes(o.restart as string))
      fail(`${path}.restart`, 'must be always, on-failure or no');
    out.restart = o.restart as ServiceSpec['restart'];
  }
  return out;
}

/** Parses and validates the author's YAML. */
export function parseSystemSpec(text: string, file = 'system manifest'): SystemSpec {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (error) {
    throw new ManifestError('MANIFEST_INVALID', `${file}: not valid YAML: ${(error as Error).message}`, {
      subject: file,
    });
  }
  const o = object(doc, file);
  only(o, file, ['product', 'version', 'security_version', 'downgrade', 'update_type', 'targets', 'storage']);
  const product = string(o.product, `${file}: product`).toLowerCase();
  if (!UUID.test(product)) fail(`${file}: product`, 'must be a UUID');
  if (!Number.isSafeInteger(o.version) || (o.version as number) < 0)
    fail(`${file}: version`, 'must be a non-negative integer');
  if (
    o.security_version !== undefined &&
    (!Number.isSafeInteger(o.security_version) || (o.security_version as number) < 0)
  )
    fail(`${file}: security_version`, 'must be a non-negative integer');
  if (o.downgrade !== undefined && typeof o.downgrade !== 'boolean')
    fail(`${file}: downgrade`, 'must be true or false');
  const updateType = o.update_type ?? 'complete';
  if (updateType !== 'complete' && updateType !== 'partial')
    fail(`${file}: update_type`, 'must be complete or partial');
  if (!Array.isArray(o.targets) || o.targets.length === 0)
    fail(`${file}: targets`, 'must be a non-empty list');
  const names = new Set<string>();
  const targets = o.targets.map((t, i): TargetSpec => {
    const path = `${file}: targets[${i}]`;
    const to = object(t, path);
    only(to, path, ['name', 'image', 'role', 'service']);
    const name = string(to.name, `${path}.name`);
    if (!/^[a-z0-9][a-z0-9._-]*$/.test(name))
      fail(`${path}.name`, 'must be lowercase letters, digits, . _ -');
    if (names.has(name)) fail(`${path}.name`, `duplicate target ${name}`);
    names.add(name);
    const role = to.role as Role;
    if (!['host', 'service', 'data'].includes(role)) fail(`${path}.role`, 'must be host, service or data');
    if (to.service !== undefined && role !== 'service') fail(`${path}.service`, 'only service targets run');
    return {
      name,
      image: string(to.image, `${path}.image`),
      role,
      ...(to.service !== undefined ? { service: service(to.service, `${path}.service`) } : {}),
    };
  });
  if (targets.filter((t) => t.role === 'host').length > 1)
    fail(`${file}: targets`, 'at most one host target');
  const storage = (
    o.storage === undefined
      ? []
      : Array.isArray(o.storage)
        ? o.storage
        : fail(`${file}: storage`, 'must be a list')
  ).map((s, i) => {
    const path = `${file}: storage[${i}]`;
    const so = object(s, path);
    only(so, path, ['name', 'size', 'mount']);
    return {
      name: string(so.name, `${path}.name`),
      size: typeof so.size === 'number' ? String(so.size) : string(so.size, `${path}.size`),
      ...(so.mount !== undefined ? { mount: string(so.mount, `${path}.mount`) } : {}),
    };
  });
  return {
    product,
    version: o.version as number,
    ...(o.security_version !== undefined ? { securityVersion: o.security_version as number } : {}),
    ...(o.downgrade === true ? { downgrade: true } : {}),
    updateType,
    targets,
    storage,
  };
}

/** Canonical JSON: keys sorted at every level, no whitespace (the bytes that get signed). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Json)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The number anti-rollback compares: the security version, or the version. */
export function securityVersionOf(doc: { version: number; securityVersion?: number }): number {
  return doc.securityVersion ?? doc.version;
}

/** Reads and checks a system manifest document (after its digest was verified). */
export function parseSystemManifest(bytes: Uint8Array, subject: string): SystemManifest {
  let doc: SystemManifest;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8')) as SystemManifest;
  } catch {
    throw new ManifestError('MANIFEST_NOT_A_SYSTEM', `${subject} is not a system manifest (not JSON)`, {
      subject,
    });
  }
  if (
    doc?.schemaVersion !== 1 ||
    typeof doc.product !== 'string' ||
    !Number.isSafeInteger(doc.version) ||
    !Array.isArray(doc.targets) ||
    doc.targets.some((t) => typeof t?.image?.digest !== 'string' || !Number.isSafeInteger(t.image.size)) ||
    (doc.securityVersion !== undefined && !Number.isSafeInteger(doc.securityVersion)) ||
    (doc.downgrade !== undefined && typeof doc.downgrade !== 'boolean')
  ) {
    throw new ManifestError('MANIFEST_NOT_A_SYSTEM', `${subject} is not a system manifest`, { subject });
  }
  return doc;
}
