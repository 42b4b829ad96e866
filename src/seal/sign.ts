/**
 * Signing a sealed image for the kernel, and checking those signatures offline.
 *
 * Signing: a composefs image gets fs-verity signatures of its manifest, its config, each layer's
 * composefs EROFS and the merged EROFS; a squashfs/EROFS image gets a dm-verity root-hash
 * signature per layer. They travel as one signature artifact per signer attached to the image
 * (signature-artifacts.ts), so several signers can sign the same image and copies carry them.
 * An image is verified before it is signed, unless the caller has just sealed it.
 *
 * Checking: every attached artifact of the image's kind is examined; an artifact is accepted
 * when each entry it holds is signed by a trusted certificate (or one its signature chains to)
 * and covers this image's digests, and it covers what the kernel is given (composefs: the merged
 * EROFS; dm-verity: every layer). One accepted artifact is enough.
 */
import { SealError } from '../errors.ts';
import type { ImageDestination, ImageSource } from '../oci/transport.ts';
import type { Descriptor, Manifest } from '../oci/types.ts';
import { parseManifest } from '../oci/validate.ts';
import type { CertificateSource } from '../pki/index.ts';
import { readImage } from '../store/index.ts';
import { readBounded } from '../util/read.ts';
import { fsverityDigest } from '../verity/index.ts';
import {
  COMPOSEFS_LAYER_ANNOTATION,
  COMPOSEFS_MERGED_ANNOTATION,
  isComposefsSealed,
  verityRootHash,
} from './formats.ts';
import {
  type KernelSigner,
  signFsverityDigest,
  signRootHash,
  verifyFsveritySignature,
  verifyRootHashSignature,
} from './kernel-signatures.ts';
import {
  type BuiltArtifact,
  COMPOSEFS_METADATA_ARTIFACT_TYPE,
  type ComposefsSignatureEntry,
  composefsEntriesOf,
  composefsSignatureArtifact,
  MAX_SIGNATURE_SIZE,
  putSignatureArtifact,
  VERITY_SIGNATURES_ARTIFACT_TYPE,
  type VeritySignatureEntry,
  verityEntriesOf,
  veritySignatureArtifact,
} from './signature-artifacts.ts';
import { ImageVerifyError, verifyImage } from './verify.ts';

export interface SignedEntry {
  /** manifest, config, layer N, merged (composefs) or layer N (dm-verity). */
  what: string;
  /** The fs-verity digest or dm-verity root hash signed. */
  digest: string;
}

export interface SignSealedResult {
  image: Descriptor;
  artifact: Descriptor;
  artifactType: string;
  entries: SignedEntry[];
}

const readAll = (stream: AsyncIterable<Uint8Array>, limit: number, what: string) =>
  readBounded(stream, limit, () => new ImageVerifyError('IMAGE_SIGNATURE_INVALID', `${what} is too large`));

const hex = async (data: Uint8Array) => (await fsverityDigest(data)).toString('hex');

/** A sealed image's documents: what its signatures are computed from. */
export interface SealedDocuments {
  name: string;
  descriptor: Descriptor;
  manifest: Manifest;
  manifestBytes: Uint8Array;
  configBytes: Uint8Array;
}

type ComposefsObject = { role: ComposefsSignatureEntry['role']; what: string; digest: string };

/** The composefs objects an image's signatures cover, with their fs-verity digests (hex). */
async function composefsObjects(image: SealedDocuments): Promise<ComposefsObject[]> {
  const objects: ComposefsObject[] = [
    { role: 'manifest', what: 'manifest', digest: await hex(image.manifestBytes) },
    { role: 'config', what: 'config', digest: await hex(image.configBytes) },
  ];
  for (const [i, layer] of image.manifest.layers.entries()) {
    const digest = layer.annotations?.[COMPOSEFS_LAYER_ANNOTATION];
    if (!digest)
      throw new ImageVerifyError('IMAGE_NOT_SEALED', `${image.name}: layer ${i + 1} has no composefs digest`);
    objects.push({ role: 'layer', what: `layer ${i + 1}`, digest });
  }
  objects.push({
    role: 'merged',
    what: 'merged',
    digest: image.manifest.annotations![COMPOSEFS_MERGED_ANNOTATION]!,
  });
  return objects;
}

type VerityLayer = { layer: string; rootHash: string; what: string };

function verityLayers(image: SealedDocuments): VerityLayer[] {
  return image.manifest.layers.map((layer, i) => {
    const rootHash = verityRootHash(layer);
    if (!rootHash)
      throw new ImageVerifyError(
        'IMAGE_NOT_SEALED',
        `${image.name}: layer ${i + 1} (${layer.digest}) has no verity root hash: not sealed`,
        { subject: layer.digest },
      );
    return { layer: layer.digest, rootHash, what: `layer ${i + 1}` };
  });
}

/** The signature artifact of one signer for a sealed image (whose digests are trusted as given). */
export async function signatureArtifactFor(
  image: SealedDocuments,
  signer: KernelSigner,
): Promise<{ artifact: BuiltArtifact; entries: SignedEntry[] }> {
  if (isComposefsSealed(image.manifest)) {
    const objects = await composefsObjects(image);
    const signed: ComposefsSignatureEntry[] = objects.map((o) => ({
      role: o.role,
      digest: o.digest,
      algorithm: 'sha256-12',
      signature: signFsverityDigest(Buffer.from(o.digest, 'hex'), signer),
    }));
    return {
      artifact: composefsSignatureArtifact(image.descriptor, signed),
      entries: objects.map((o) => ({ what: o.what, digest: o.digest })),
    };
  }
  const layers = verityLayers(image);
  const signed: VeritySignatureEntry[] = layers.map((l) => ({
    layer: l.layer,
    rootHash: l.rootHash,
    signature: signRootHash(l.rootHash, signer),
  }));
  return {
    artifact: veritySignatureArtifact(image.descriptor, signed),
    entries: layers.map((l) => ({ what: l.what, digest: l.rootHash })),
  };
}

/** Signs a sealed image just written to `dst` and attaches the signatures (before its commit). */
export async function attachSignature(
  dst: ImageDestination,
  image: SealedDocuments,
  signer: KernelSigner,
): Promise<{ artifact: Descriptor; entries: SignedEntry[] }> {
  const { artifact, entries } = await signatureArtifactFor(image, signer);
  await putSignatureArtifact(dst, artifact);
  return { artifact: artifact.descriptor, entries };
}

async function sealedDocuments(src: ImageSource, image?: Descriptor): Promise<SealedDocuments> {
  const docs = await readImage(src, image);
  return {
    name: src.name,
    descriptor: docs.descriptor,
    manifest: docs.manifest,
    manifestBytes: await src.getManifest(docs.descriptor),
    configBytes: docs.configBytes,
  };
}

/**
 * Signs the sealed image `src` names (or `image`) and attaches the signatures to it at `dst`
 * (normally the same image). `verify: false` skips re-verifying the image first.
 */
export async function signSealedImage(
  src: ImageSource,
  dst: ImageDestination,
  signer: KernelSigner,
  options: { verify?: boolean; image?: Descriptor } = {},
): Promise<SignSealedResult> {
  if (options.verify !== false) await verifyImage(src);
  const image = await sealedDocuments(src, options.image);
  const { artifact, entries } = await signatureArtifactFor(image, signer);
  await putSignatureArtifact(dst, artifact);
  await dst.commit();
  return {
    image: image.descriptor,
    artifact: artifact.descriptor,
    artifactType: artifact.descriptor.artifactType!,
    entries,
  };
}

/** Why an attached artifact is not accepted (caught and reported per artifact). */
class Refused extends Error {}

export interface SignatureCheck {
  /** The artifact's digest. */
  artifact: string;
  accepted: boolean;
  /** The certificate subject that signed (accepted artifacts). */
  signer?: string;
  /** Why it was refused, or what it covers. */
  detail: string;
}

export interface ImageSignatures {
  image: Descriptor;
  artifactType: string;
  checks: SignatureCheck[];
  /** The accepted artifacts' signatures, by what they cover (for the kernel: FS_IOC_ENABLE_VERITY, veritysetup). */
  signatures: { what: string; digest: string; signature: Buffer }[];
}

function oneLine(text: string): string {
  return text.replace(/\n/g, ', ');
}

/**
 * Checks the kernel signatures attached to a sealed image against `trusted` certificates,
 * offline. The image's own digests must have been verified (verifyImage) by the caller.
 */
export async function verifyImageSignatures(
  src: ImageSource,
  trusted: CertificateSource[],
  options: { image?: Descriptor } = {},
): Promise<ImageSignatures> {
  const docs = await sealedDocuments(src, options.image);
  const composefs = isComposefsSealed(docs.manifest);
  const artifactType = composefs ? COMPOSEFS_METADATA_ARTIFACT_TYPE : VERITY_SIGNATURES_ARTIFACT_TYPE;
  if (!src.referrers)
    throw new ImageVerifyError('IMAGE_UNSIGNED', `${src.name}: this transport cannot list signatures`);
  const attached = await src.referrers(docs.descriptor, artifactType);
  if (attached.length === 0) {
    throw new ImageVerifyError(
      'IMAGE_UNSIGNED',
      `${src.name}: no ${composefs ? 'composefs' : 'dm-verity'} signature is attached to ${docs.descriptor.digest}`,
      { subject: docs.descriptor.digest },
    );
  }
  const expected = composefs ? await composefsObjects(docs) : verityLayers(docs);
  const checks: SignatureCheck[] = [];
  let signatures: ImageSignatures['signatures'] | undefined;
  for (const desc of attached) {
    const name = `signature ${desc.digest}`;
    try {
      if (desc.size > 4 << 20) throw new Refused('it is too large for a signature artifact');
      const manifest = parseManifest(await src.getManifest(desc), name);
      if (manifest.subject?.digest !== docs.descriptor.digest)
        throw new Refused('it is attached to another image');
      const blob = (d: Descriptor) => readAll(src.getBlob(d), MAX_SIGNATURE_SIZE, `${name}: a signature`);
      const found: ImageSignatures['signatures'] = [];
      const signers = new Set<string>();
      if (composefs) {
        const wanted = expected as ComposefsObject[];
        const covered = new Set<string>();
        for (const entry of composefsEntriesOf(manifest, name)) {
          if (entry.algorithm !== 'sha256-12' || entry.role === 'merged.bootable') continue;
          const object = wanted.find((o) => o.role === entry.role && o.digest === entry.digest);
          if (!object) throw new Refused(`its ${entry.role} entry (${entry.digest}) is not this image's`);
          const signature = await blob(entry.descriptor);
          const ok = verifyFsveritySignature(
            signature,
            Buffer.from(entry.digest, 'hex'),
            trusted,
            'sha256',
            `its ${object.what} signature`,
          );
          signers.add(oneLine(ok.signer.subject));
          covered.add(object.what);
          found.push({ what: object.what, digest: entry.digest, signature });
        }
        if (!covered.has('merged')) throw new Refused('it does not sign the merged composefs image');
      } else {
        const wanted = expected as VerityLayer[];
        const entries = verityEntriesOf(manifest, name);
        for (const layer of wanted) {
          const entry = entries.find((e) => e.layer === layer.layer);
          if (!entry) throw new Refused(`it does not sign ${layer.what}`);
          if (entry.rootHash !== layer.rootHash)
            throw new Refused(
              `it signs root hash ${entry.rootHash} for ${layer.what}, whose root hash is ${layer.rootHash}`,
            );
          const signature = await blob(entry.descriptor);
          const ok = verifyRootHashSignature(
            signature,
            entry.rootHash,
            trusted,
            `its ${layer.what} signature`,
          );
          signers.add(oneLine(ok.signer.subject));
          found.push({ what: layer.what, digest: entry.rootHash, signature });
        }
        if (entries.length !== wanted.length) throw new Refused('it signs layers this image does not have');
      }
      checks.push({
        artifact: desc.digest,
        accepted: true,
        signer: [...signers].join(' + '),
        detail: `signs ${found.map((f) => f.what).join(', ')}`,
      });
      signatures ??= found;
    } catch (error) {
      if (!(error instanceof Refused) && !(error instanceof SealError)) throw error;
      checks.push({ artifact: desc.digest, accepted: false, detail: (error as Error).message });
    }
  }
  if (!signatures) {
    throw new ImageVerifyError(
      'IMAGE_SIGNATURE_INVALID',
      `${src.name}: no accepted signature: ${checks.map((c) => `${c.artifact}: ${c.detail}`).join('; ')}`,
      { subject: docs.descriptor.digest },
    );
  }
  return { image: docs.descriptor, artifactType, checks, signatures };
}
