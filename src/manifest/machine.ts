/**
 * Project Machine (mos) install manifests: an artifact of type `application/vnd.machine.install`
 * whose layer is install.json, with two referrers — `application/vnd.machine.pubkeycrt` (the
 * signing certificate, PEM) and `application/vnd.machine.signature` (RSA PKCS#1 v1.5 over
 * SHA-256 of install.json, as `openssl dgst -sha256 -sign` makes). Read here so Seal devices can
 * accept what mosb publishes.
 */
import { createPublicKey, verify } from 'node:crypto';
import { isDigest } from '../oci/digest.ts';
import type { ImageSource } from '../oci/transport.ts';
import type { Descriptor } from '../oci/types.ts';
import { parseManifest } from '../oci/validate.ts';
import { type Certificate, parseCertificates, productIdOf, verifyChain } from '../pki/index.ts';
import { ManifestError } from './errors.ts';

export const MACHINE_INSTALL_TYPE = 'application/vnd.machine.install';
export const MACHINE_SIGNATURE_TYPE = 'application/vnd.machine.signature';
export const MACHINE_CERT_TYPE = 'application/vnd.machine.pubkeycrt';

export interface MachineInstall {
  version: number;
  product: string;
  targets: { name: string; image: Descriptor }[];
}

export function parseMachineInstall(bytes: Uint8Array, subject: string): MachineInstall {
  let doc: { version?: unknown; product?: unknown; targets?: unknown };
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new ManifestError('MANIFEST_NOT_A_SYSTEM', `${subject}: install.json is not JSON`, { subject });
  }
  if (
    typeof doc !== 'object' ||
    doc === null ||
    !Number.isSafeInteger(doc.version) ||
    typeof doc.product !== 'string' ||
    !Array.isArray(doc.targets)
  ) {
    throw new ManifestError(
      'MANIFEST_NOT_A_SYSTEM',
      `${subject}: install.json lacks version, product or targets`,
      {
        subject,
      },
    );
  }
  const targets = doc.targets.map((t: Record<string, unknown>, i) => {
    if (typeof t?.digest !== 'string' || !isDigest(t.digest) || !Number.isSafeInteger(t.size)) {
      throw new ManifestError('MANIFEST_NOT_A_SYSTEM', `${subject}: target ${i} has no digest and size`, {
        subject,
      });
    }
    return {
      name: String(t.service_name ?? `target-${i}`),
      image: {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: t.digest,
        size: t.size as number,
      },
    };
  });
  return { version: doc.version as number, product: doc.product.toLowerCase(), targets };
}

async function layerBytes(src: ImageSource, desc: Descriptor): Promise<Buffer> {
  const manifest = parseManifest(await src.getManifest(desc), desc.digest);
  const layer = manifest.layers[0];
  if (!layer || layer.size > 1 << 20) throw new Error('the artifact has no small layer');
  const parts: Uint8Array[] = [];
  for await (const c of src.getBlob(layer)) parts.push(c);
  return Buffer.concat(parts);
}

/** Checks every (certificate, signature) pair attached to an install manifest. */
export async function machineSignatures(
  src: ImageSource,
  descriptor: Descriptor,
  install: Buffer,
  product: string,
  ca: Certificate,
  at: Date | undefined,
): Promise<{ digest: string; ok: boolean; detail: string; signer?: string }[]> {
  if (!src.referrers)
    throw new ManifestError('MANIFEST_UNSIGNED', `${src.name}: this transport cannot list signatures`);
  const certs = await src.referrers(descriptor, MACHINE_CERT_TYPE);
  const sigs = await src.referrers(descriptor, MACHINE_SIGNATURE_TYPE);
  if (sigs.length === 0 || certs.length === 0) {
    throw new ManifestError(
      'MANIFEST_UNSIGNED',
      `${src.name}: no signature and certificate are attached to ${descriptor.digest}`,
      {
        subject: descriptor.digest,
      },
    );
  }
  const results: { digest: string; ok: boolean; detail: string; signer?: string }[] = [];
  for (const sig of sigs) {
    const failures: string[] = [];
    let signer: Certificate | undefined;
    try {
      const signature = await layerBytes(src, sig);
      for (const c of certs) {
        try {
          const [leaf, ...rest] = parseCertificates((await layerBytes(src, c)).toString('utf8'), c.digest);
          const key = createPublicKey({
            key: Buffer.from(leaf!.publicKey.rawData),
            format: 'der',
            type: 'spki',
          });
          if (!verify('sha256', install, key, signature))
            throw new Error('the signature does not verify with it');
          // mos signing certificates need not carry extended key usages.
          await verifyChain(leaf!, rest, ca, { at, purpose: null });
          const id = productIdOf(leaf!);
          if (id !== product)
            throw new Error(`it is for product ${id ?? 'none'}, the install is for ${product}`);
          signer = leaf;
          break;
        } catch (error) {
          failures.push(`certificate ${c.digest.slice(7, 19)}: ${(error as Error).message}`);
        }
      }
    } catch (error) {
      failures.push((error as Error).message);
    }
    results.push(
      signer
        ? { digest: sig.digest, ok: true, detail: 'valid', signer: signer.subject }
        : { digest: sig.digest, ok: false, detail: failures.join('; ') },
    );
  }
  return results;
}
