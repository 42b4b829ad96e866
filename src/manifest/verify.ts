/**
 * `seal manifest verify`: what a device checks before it accepts a system. Every signature
 * attached to the system manifest is examined (envelope, signature, chain to the manifest CA,
 * validity, code-signing usage, product ID); one good signature suffices and bad ones are
 * reported. Then the version against the highest one accepted (anti-rollback), every target's
 * pinned manifest, and with `deep` every layer of every target. The state file is written
 * atomically, and only when everything passed.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { ImageSource } from '../oci/transport.ts';
import type { Descriptor } from '../oci/types.ts';
import { parseManifest } from '../oci/validate.ts';
import { type Certificate, productIdOf, verifyChain } from '../pki/index.ts';
import { verifyImage } from '../seal/verify.ts';
import { type OpenOptions, openSource } from '../store/index.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { NOTARY_ARTIFACT_TYPE, openEnvelope } from './envelope.ts';
import { ManifestError } from './errors.ts';
import {
  MACHINE_INSTALL_TYPE,
  type MachineInstall,
  machineSignatures,
  parseMachineInstall,
} from './machine.ts';
import { parseSystemManifest, SYSTEM_ARTIFACT_TYPE, type SystemManifest, securityVersionOf } from './spec.ts';

export interface VerifyOptions {
  ca: Certificate;
  product?: string;
  state?: string;
  /**
   * The lowest version the device accepts, kept outside any file (a device's TPM): an older
   * system is refused whatever the state file says.
   */
  minimumVersion?: number;
  deep?: boolean;
  /**
   * false: stop after the signature, product and version checks — what a device checks of a
   * system before it fetches any of its images.
   */
  targets?: boolean;
  at?: Date;
  /** Registry options, for `docker://` references (the system's and its targets'). */
  transport?: OpenOptions;
}

export interface Check {
  check: string;
  ok: boolean;
  detail: string;
}

/** What verification needs of a signed document: Seal's system manifest or a mos install.json. */
interface PinnedDocument {
  product: string;
  version: number;
  targets: { name: string; image: Descriptor; reference?: string }[];
}

export interface VerifyReport {
  manifest: Descriptor;
  /** The system manifest, or a mos install manifest's install.json as read. */
  document: SystemManifest | MachineInstall;
  checks: Check[];
  signatures: { digest: string; ok: boolean; detail: string; signer?: string }[];
}

interface State {
  product: string;
  version: number;
  manifest: string;
  acceptedAt: string;
}

/** The same source, resolving to a pinned manifest. */
function pinned(src: ImageSource, desc: Descriptor): ImageSource {
  return {
    name: `${src.name}@${desc.digest}`,
    resolve: async () => desc,
    getManifest: (d) => src.getManifest(d),
    getBlob: (d) => src.getBlob(d),
    blobFile: (d) => src.blobFile?.(d),
    close: async () => {},
  };
}

function readState(path: string): State | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const state = JSON.parse(readFileSync(path, 'utf8')) as State;
    if (typeof state.version !== 'number' || typeof state.product !== 'string')
      throw new Error('fields missing');
    return state;
  } catch (error) {
    throw new ManifestError(
      'MANIFEST_STATE',
      `state file ${path} is unreadable: ${(error as Error).message}`,
      {
        subject: path,
      },
    );
  }
}

/** Examines every Notary signature attached to a system manifest. */
async function notarySignatures(
  src: ImageSource,
  descriptor: Descriptor,
  product: string,
  options: VerifyOptions,
): Promise<VerifyReport['signatures']> {
  if (!src.referrers)
    throw new ManifestError('MANIFEST_UNSIGNED', `${src.name}: this transport cannot list signatures`);
  const attached = await src.referrers(descriptor, NOTARY_ARTIFACT_TYPE);
  if (attached.length === 0) {
    throw new ManifestError(
      'MANIFEST_UNSIGNED',
      `${src.name}: no signature is attached to ${descriptor.digest}`,
      {
        subject: descriptor.digest,
      },
    );
  }
  const signatures: VerifyReport['signatures'] = [];
  for (const sig of attached) {
    try {
      const manifest = parseManifest(await src.getManifest(sig), sig.digest);
      const layer = manifest.layers[0];
      if (!layer || layer.size > 1 << 20) throw new Error('no envelope layer');
      const parts: Uint8Array[] = [];
      for await (const c of src.getBlob(layer)) parts.push(c);
      const opened = openEnvelope(Buffer.concat(parts));
      if (opened.target.digest !== descriptor.digest || opened.target.size !== descriptor.size) {
        throw new Error(`it signs another manifest (${opened.target.digest})`);
      }
      const [leaf, ...rest] = opened.certificates;
      await verifyChain(leaf!, rest, options.ca, { at: options.at });
      const id = productIdOf(leaf!);
      if (id !== product)
        throw new Error(`its certificate is for product ${id ?? 'none'}, the system is for ${product}`);
      signatures.push({ digest: sig.digest, ok: true, detail: 'valid', signer: leaf!.subject });
    } catch (error) {
      signatures.push({ digest: sig.digest, ok: false, detail: (error as Error).message });
    }
  }
  return signatures;
}

/** The registry a `docker://` reference names, as pulls resolve it (host names ignore case). */
async function registryOf(reference: string): Promise<string | undefined> {
  if (!reference.startsWith('docker://')) return undefined;
  const { parseRegistryReference } = await import('../registry/index.ts');
  return parseRegistryReference(reference).registry.toLowerCase();
}

/**
 * The registry options for a target of the system at `ref`, where the system names it:
 * explicit credentials go only to the registry of the system itself, never to another host
 * the document names (TLS settings apply to every registry).
 */
export async function targetTransport(
  ref: string,
  reference: string,
  transport: OpenOptions | undefined,
): Promise<OpenOptions | undefined> {
  if (!transport?.credentials) return transport;
  const target = await registryOf(reference);
  if (target !== undefined && target === (await registryOf(ref))) return transport;
  const { credentials: _, ...rest } = transport;
  return rest;
}

/** The signed document of the system (or mos install) manifest at `src`, read and parsed, not yet verified. */
export async function readSystemDocument(
  src: ImageSource,
  ref: string,
): Promise<{
  descriptor: Descriptor;
  body: Buffer;
  document: SystemManifest | MachineInstall;
  machine: boolean;
}> {
  const descriptor = await src.resolve();
  const artifact = parseManifest(await src.getManifest(descriptor), `${ref} manifest`);
  const machine = artifact.artifactType === MACHINE_INSTALL_TYPE;
  if ((!machine && artifact.artifactType !== SYSTEM_ARTIFACT_TYPE) || artifact.layers.length !== 1) {
    throw new ManifestError('MANIFEST_NOT_A_SYSTEM', `${ref} is not a system manifest`, { subject: ref });
  }
  const chunks: Uint8Array[] = [];
  for await (const c of src.getBlob(artifact.layers[0]!)) chunks.push(c);
  const body = Buffer.concat(chunks);
  const document = machine ? parseMachineInstall(body, ref) : parseSystemManifest(body, ref);
  return { descriptor, body, document, machine };
}

export async function verifySystem(ref: string, options: VerifyOptions): Promise<VerifyReport> {
  const checks: Check[] = [];
  const pass = (check: string, detail: string) => checks.push({ check, ok: true, detail });
  const src = await openSource(ref, options.transport);
  try {
    const { descriptor, body, document, machine } = await readSystemDocument(src, ref);
    const pinnedDoc: PinnedDocument = document;
    pass(
      'digest',
      `${machine ? 'install' : 'system'} manifest ${descriptor.digest} and its document match their digests`,
    );

    const signatures = machine
      ? await machineSignatures(src, descriptor, body, document.product, options.ca, options.at)
      : await notarySignatures(src, descriptor, document.product, options);
    const good = signatures.filter((s) => s.ok);
    if (good.length === 0) {
      throw new ManifestError(
        'MANIFEST_SIGNATURE_INVALID',
        `${ref}: no valid signature: ${signatures.map((s) => `${s.digest.slice(7, 19)}: ${s.detail}`).join('; ')}`,
        { subject: descriptor.digest },
      );
    }
    pass('signature', `${good.length} of ${signatures.length} signatures valid, by "${good[0]!.signer}"`);
    pass(
      'chain',
      `signing certificate chains to "${options.ca.subject}", valid now${machine ? '' : ', code signing'}`,
    );

    if (options.product !== undefined && options.product.toLowerCase() !== document.product) {
      throw new ManifestError(
        'MANIFEST_WRONG_PRODUCT',
        `${ref} is for product ${document.product}, this device is ${options.product}`,
        { subject: document.product },
      );
    }
    pass('product', `product ${document.product}`);

    const state = options.state ? readState(options.state) : undefined;
    const floor = Math.max(
      state && state.product === document.product ? state.version : 0,
      options.minimumVersion ?? 0,
    );
    // Seal's manifests may carry a security version (the anti-rollback number); Project Machine's compare versions.
    const security = machine ? document.version : securityVersionOf(document as SystemManifest);
    if (security < floor) {
      throw new ManifestError(
        'MANIFEST_ROLLBACK',
        `${ref}: version ${document.version}${security !== document.version ? ` (security version ${security})` : ''} is older than version ${floor} already accepted`,
        { subject: String(document.version) },
      );
    }
    pass(
      'version',
      `version ${document.version}${state || options.minimumVersion !== undefined ? ` (highest accepted: ${floor})` : ''}`,
    );

    if (options.targets === false) return { manifest: descriptor, document, checks, signatures };

    for (const target of pinnedDoc.targets) {
      // Where the system is (a mirror holds its targets beside it), else where it was built.
      const failures: string[] = [];
      let checked = false;
      for (const where of ['beside', 'reference'] as const) {
        const image =
          where === 'beside'
            ? src
            : target.reference === undefined
              ? undefined
              : await targetTransport(ref, target.reference, options.transport)
                  .then((transport) => openSource(target.reference as string, transport))
                  .catch(() => undefined);
        if (!image) continue;
        try {
          // getManifest checks the pinned digest and size.
          await image.getManifest(target.image);
          if (options.deep) await verifyImage(pinned(image, target.image));
          checked = true;
          break;
        } catch (error) {
          failures.push(`${where === 'beside' ? src.name : target.reference}: ${(error as Error).message}`);
        } finally {
          if (image !== src) await image.close();
        }
      }
      if (!checked) {
        throw new ManifestError(
          'MANIFEST_TARGET_MISMATCH',
          `target ${target.name}: no image matches the pinned ${target.image.digest} (${target.image.size} bytes): ${failures.join('; ')}`,
          { subject: target.name },
        );
      }
    }
    pass(
      'targets',
      `${document.targets.length} targets match their pinned digests and sizes${options.deep ? ', every layer verified' : ''}`,
    );

    if (options.state) {
      const next: State = {
        product: document.product,
        version: Math.max(security, state?.product === document.product ? state.version : 0),
        manifest: descriptor.digest,
        acceptedAt: new Date().toISOString(),
      };
      await writeFileAtomic(options.state, `${JSON.stringify(next, null, 2)}\n`);
    }
    return { manifest: descriptor, document, checks, signatures };
  } finally {
    await src.close();
  }
}
