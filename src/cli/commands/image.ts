import { UsageError } from '../../errors.ts';
import {
  mountImage,
  sealImage,
  signSealedImage,
  unmountImage,
  verifyImage,
  verifyImageSignatures,
} from '../../seal/index.ts';
import {
  copyImage,
  defaultStorePath,
  destinationTag,
  LayoutStore,
  openDestination,
  openSource,
  readImage,
  unpackImage,
} from '../../store/index.ts';
import type { Command } from '../command.ts';
import { readCertificates, readSigner, signerOptions } from './kernel-signer.ts';
import { registryOptions, SIDE_TRANSPORT_OPTIONS, TRANSPORT_OPTIONS } from './transport-options.ts';

/**
 * One line per image when per-layer filesystems hold copies of lower-layer files where the image
 * had hardlinks (a per-layer filesystem cannot link across layers), so a changed link count
 * surprises nobody.
 */
function hardlinkNote(layers: { hardlinksCopied?: number }[]): string | undefined {
  const copied = layers.map((l, i) => ({ n: l.hardlinksCopied ?? 0, layer: i + 1 })).filter((x) => x.n > 0);
  if (copied.length === 0) return undefined;
  const total = copied.reduce((sum, x) => sum + x.n, 0);
  return `note: ${total} hardlink${total === 1 ? '' : 's'} to a lower layer's file ${total === 1 ? 'is a copy' : 'are copies'} in the per-layer filesystem${copied.length === 1 ? '' : 's'} of layer${copied.length === 1 ? '' : 's'} ${copied.map((x) => x.layer).join(', ')} (layers cannot link across; the link count differs from the unpacked image's)`;
}

function formatSize(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

export const imageCommands: Command[] = [
  {
    path: ['image', 'import'],
    summary: 'Import an image (or a root filesystem directory) into a store or layout',
    args: 'SRC DEST',
    arity: [2, 2],
    details:
      'SRC and DEST are image references: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG] (read),\n' +
      'dir:PATH (a root filesystem directory, read as a one-layer image), docker://HOST/REPO[:TAG], or NAME[:TAG]\n' +
      'for the default store ($SEAL_STORE, else ~/.local/share/seal/store).',
    options: { ...TRANSPORT_OPTIONS, ...SIDE_TRANSPORT_OPTIONS },
    async run(ctx, [srcRef, dstRef], options) {
      const src = await openSource(srcRef!, registryOptions(options, 'src'));
      try {
        const dst = await openDestination(dstRef!, registryOptions(options, 'dest'));
        try {
          const progress = ctx.progress('importing');
          const root = await copyImage(src, dst, {
            tag: destinationTag(dstRef!),
            onBytes: (n) => progress.tick(n),
          });
          progress.done();
          ctx.result({
            source: srcRef,
            destination: dstRef,
            digest: root.digest,
            mediaType: root.mediaType,
            size: root.size,
          });
          ctx.print(`Imported ${srcRef} as ${dstRef} (${root.digest})`);
        } finally {
          await dst.close();
        }
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'inspect'],
    summary: 'Show an image: manifest digest, platform, config and layers',
    args: 'REF',
    arity: [1, 1],
    options: TRANSPORT_OPTIONS,
    async run(ctx, [ref], options) {
      const src = await openSource(ref!, registryOptions(options));
      try {
        const { descriptor, manifest, config, index } = await readImage(src);
        const total = manifest.layers.reduce((sum, l) => sum + l.size, 0);
        ctx.result({ reference: ref, descriptor, index: index?.descriptor, manifest, config });
        ctx.print(`Reference:  ${ref}`);
        if (index) ctx.print(`Index:      ${index.descriptor.digest}`);
        ctx.print(`Digest:     ${descriptor.digest}`);
        ctx.print(`Media type: ${descriptor.mediaType}`);
        ctx.print(
          `Platform:   ${config.os}/${config.architecture}${config.variant ? `/${config.variant}` : ''}`,
        );
        if (config.created) ctx.print(`Created:    ${config.created}`);
        ctx.print(`Config:     ${manifest.config.digest}`);
        if (config.config?.Entrypoint || config.config?.Cmd) {
          ctx.print(
            `Command:    ${JSON.stringify([...(config.config.Entrypoint ?? []), ...(config.config.Cmd ?? [])])}`,
          );
        }
        ctx.print(`Layers:     ${manifest.layers.length} (${formatSize(total)})`);
        manifest.layers.forEach((layer, i) => {
          ctx.print(
            `  ${i + 1}. ${layer.digest}  ${formatSize(layer.size).padStart(10)}  ${layer.mediaType}`,
          );
          for (const [k, v] of Object.entries(layer.annotations ?? {})) ctx.print(`       ${k}=${v}`);
        });
        for (const [k, v] of Object.entries(manifest.annotations ?? {})) ctx.print(`Annotation: ${k}=${v}`);
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'ls'],
    summary: 'List the images of a store (default: the default store)',
    args: '[STORE]',
    arity: [0, 1],
    async run(ctx, [dir]) {
      const store = await LayoutStore.open(dir ?? defaultStorePath(), { create: !dir });
      const images = await store.list();
      ctx.result(images.map(({ name, descriptor }) => ({ name: name ?? null, ...descriptor })));
      for (const { name, descriptor } of images) {
        ctx.print(
          `${(name ?? '<untagged>').padEnd(40)} ${descriptor.digest}  ${formatSize(descriptor.size).padStart(9)}`,
        );
      }
      return 0;
    },
  },
  {
    path: ['image', 'unpack'],
    summary: "Write an image's merged root filesystem into a directory",
    args: 'REF DIR',
    arity: [2, 2],
    options: TRANSPORT_OPTIONS,
    async run(ctx, [ref, dir], options) {
      const src = await openSource(ref!, registryOptions(options));
      try {
        const { descriptor, manifest } = await unpackImage(src, dir!);
        ctx.result({
          reference: ref,
          directory: dir,
          digest: descriptor.digest,
          layers: manifest.layers.length,
        });
        ctx.print(`Unpacked ${ref} (${manifest.layers.length} layers) into ${dir}`);
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'seal'],
    summary: 'Seal an image for the kernel to verify: squashfs or EROFS layers with dm-verity, or composefs',
    args: 'SRC DEST',
    arity: [2, 2],
    options: {
      format: {
        type: 'string',
        value: 'squashfs|erofs|composefs',
        description:
          'squashfs or erofs: each layer a filesystem image with its dm-verity tree (stacker/atomfs); composefs: tar layers kept, composefs image digests annotated (default squashfs)',
      },
      compression: { type: 'string', value: 'zstd|gzip', description: 'squashfs compression (default zstd)' },
      flatten: { type: 'boolean', description: 'one layer of the merged tree instead of one per layer' },
      ...signerOptions('sign-'),
      ...TRANSPORT_OPTIONS,
      ...SIDE_TRANSPORT_OPTIONS,
    },
    details:
      'With --sign-key and --sign-cert the sealed image is also signed for the kernel (see seal image sign-verity).',
    async run(ctx, [srcRef, dstRef], options) {
      const format = (options.format as string | undefined) ?? 'squashfs';
      if (format !== 'squashfs' && format !== 'erofs' && format !== 'composefs')
        throw new UsageError('--format is squashfs, erofs or composefs');
      if (format === 'composefs' && options.flatten)
        throw new UsageError('--flatten does not apply to composefs');
      const compression = (options.compression as 'zstd' | 'gzip' | undefined) ?? 'zstd';
      if (compression !== 'zstd' && compression !== 'gzip')
        throw new UsageError('--compression is zstd or gzip');
      const signer = readSigner(options, 'sign-');
      const src = await openSource(srcRef!, registryOptions(options, 'src'));
      try {
        const dst = await openDestination(dstRef!, registryOptions(options, 'dest'));
        try {
          const progress = ctx.progress('sealing layers');
          const result = await sealImage(src, dst, {
            format,
            compression,
            flatten: options.flatten === true,
            ...(signer ? { signer } : {}),
            tag: destinationTag(dstRef!),
            onLayer: (i, total) => {
              progress.setTotal(total);
              progress.tick(i === 0 ? 0 : 1);
            },
          });
          progress.done();
          ctx.result({
            source: srcRef,
            destination: dstRef,
            digest: result.descriptor.digest,
            layers: result.layers,
            ...(result.signature ? { signature: result.signature } : {}),
          });
          ctx.print(`Sealed ${srcRef} as ${dstRef} (${result.descriptor.digest})`);
          for (const [i, l] of result.layers.entries()) {
            ctx.print(
              `  layer ${i + 1}: ${l.digest} ${format === 'composefs' ? 'composefs digest' : 'verity root'} ${l.rootHash}${l.kept && format !== 'composefs' ? ' (already sealed)' : ''}`,
            );
          }
          const note = hardlinkNote(result.layers);
          if (note) ctx.print(note);
          if (result.signature) {
            ctx.print(
              `Signed for the kernel: ${result.signature.entries.map((e) => e.what).join(', ')} (signature ${result.signature.artifact.digest})`,
            );
          }
        } finally {
          await dst.close();
        }
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'verify'],
    summary: 'Verify a sealed image: digests, then every layer against its dm-verity root hash',
    args: 'REF',
    arity: [1, 1],
    details:
      'With --cert, the kernel signatures attached to the image (seal image sign-verity) are checked too,\n' +
      'offline: at least one signer must be trusted (the certificate itself, or one it chains to).',
    options: {
      cert: {
        type: 'string',
        multiple: true,
        value: 'CERT',
        description: 'a trusted signing certificate (PEM; repeatable): also check the kernel signatures',
      },
      ...TRANSPORT_OPTIONS,
    },
    async run(ctx, [ref], options) {
      const trusted = ((options.cert as string[] | undefined) ?? []).flatMap((c) => readCertificates(c));
      const src = await openSource(ref!, registryOptions(options));
      try {
        const reports = await verifyImage(src, (r) =>
          ctx.print(
            r.filesystem === 'composefs'
              ? `layer ${r.index + 1}: ${r.digest} composefs image regenerated, fs-verity digest ${r.rootHash} matches`
              : `layer ${r.index + 1}: ${r.digest} ${r.filesystem}, ${r.dataBlocks} blocks verified against ${r.rootHash}`,
          ),
        );
        const note = hardlinkNote(reports);
        if (note) ctx.print(note);
        const signatures = trusted.length ? await verifyImageSignatures(src, trusted) : undefined;
        for (const c of signatures?.checks ?? []) {
          ctx.print(
            c.accepted
              ? `signature ${c.artifact}: accepted, signed by ${c.signer}: ${c.detail}`
              : `signature ${c.artifact}: not accepted: ${c.detail}`,
          );
        }
        ctx.result({
          reference: ref,
          verified: true,
          layers: reports,
          ...(signatures ? { signatures: signatures.checks } : {}),
        });
        ctx.print(`${ref}: verified${signatures ? ', signed' : ''}`);
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'sign-verity'],
    summary: 'Sign a sealed image for the kernel: composefs fs-verity or dm-verity root-hash signatures',
    args: 'REF',
    arity: [1, 1],
    details:
      'The image is verified, then signed: composefs images get PKCS#7 fs-verity signatures of their\n' +
      "manifest, config, each layer's EROFS and the merged EROFS (the composefs signature artifact,\n" +
      'application/vnd.composefs.metadata.v1); squashfs/EROFS images get a dm-verity root-hash signature\n' +
      'per layer (application/vnd.seal.verity.signatures.v1). The artifact is attached to the image as a\n' +
      'referrer; other signers may attach their own. See docs/signatures.md.',
    options: { ...signerOptions(), ...TRANSPORT_OPTIONS },
    async run(ctx, [ref], options) {
      const signer = readSigner(options);
      if (!signer) throw new UsageError('--key and --cert are required');
      const src = await openSource(ref!, registryOptions(options));
      try {
        const dst = await openDestination(ref!, registryOptions(options));
        try {
          const result = await signSealedImage(src, dst, signer);
          ctx.result(result);
          ctx.print(`Signed ${ref} (${result.image.digest}): signature ${result.artifact.digest}`);
          for (const e of result.entries) ctx.print(`  ${e.what}: ${e.digest}`);
        } finally {
          await dst.close();
        }
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'mount'],
    summary: 'Mount a sealed image as its root filesystem (layers verified, stacked with overlayfs)',
    args: 'REF DIR',
    arity: [2, 2],
    options: {
      writable: { type: 'boolean', description: 'add a writable upper layer' },
      cert: {
        type: 'string',
        multiple: true,
        value: 'CERT',
        description:
          'a trusted signing certificate (PEM; repeatable): the kernel signatures are checked, then given to the kernel',
      },
      ...TRANSPORT_OPTIONS,
    },
    details:
      'With --cert, the image must carry an accepted kernel signature (seal image sign-verity); dm-verity\n' +
      'devices are opened with their root-hash signatures and a composefs image gets fs-verity with its\n' +
      "signature in the store (where the store's filesystem has fs-verity), so the kernel checks them too.",
    async run(ctx, [ref, dir], options) {
      const trusted = ((options.cert as string[] | undefined) ?? []).flatMap((c) => readCertificates(c));
      const src = await openSource(ref!, registryOptions(options));
      try {
        const result = await mountImage(src, dir!, {
          writable: options.writable === true,
          ...(trusted.length ? { trusted } : {}),
        });
        ctx.result(result);
        ctx.print(`Mounted ${ref} (${result.layers} layers) at ${result.target}`);
        if (result.kernelSignatures !== undefined) {
          ctx.print(
            result.kernelSignatures
              ? 'the kernel checked the signatures against its own keys'
              : 'note: the signatures were checked by Seal only (no device-mapper, or no fs-verity on the store)',
          );
        }
        ctx.print(
          result.runtimeEnforcement
            ? 'every read is verified by the kernel'
            : 'note: this kernel has no device-mapper (or fs-verity, for composefs): every layer was verified before mounting, but reads are not verified at run time',
        );
      } finally {
        await src.close();
      }
      return 0;
    },
  },
  {
    path: ['image', 'umount'],
    summary: 'Unmount an image mounted by seal image mount, with every layer mount it made',
    args: 'DIR',
    arity: [1, 1],
    async run(ctx, [dir]) {
      await unmountImage(dir!);
      ctx.result({ unmounted: dir });
      ctx.print(`Unmounted ${dir}`);
      return 0;
    },
  },
];
