/** Layer compression: gzip and zstd from node:zlib, sniffed by magic number when reading. */
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { TarError } from './errors.ts';

export type Compression = 'none' | 'gzip' | 'zstd';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function sniffCompression(head: Uint8Array): Compression {
  if (GZIP_MAGIC.every((b, i) => head[i] === b)) return 'gzip';
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return 'none';
}

/** Runs `input` through a zlib transform, mapping its failures to typed errors. */
async function* through(input: AsyncIterable<Uint8Array>, transform: Transform, what: string) {
  const done = pipeline(Readable.from(input, { objectMode: false }), transform).catch(() => {});
  try {
    for await (const chunk of transform) yield chunk as Uint8Array;
  } catch (error) {
    throw mapZlibError(error, what);
  } finally {
    transform.destroy();
    await done;
  }
}

function mapZlibError(error: unknown, what: string): unknown {
  if (error instanceof TarError) return error;
  const e = error as NodeJS.ErrnoException;
  if (e?.code === 'Z_BUF_ERROR' || /unexpected end/i.test(e?.message ?? '')) {
    return new TarError('COMPRESSION_TRUNCATED', `${what} data is truncated`, { cause: error });
  }
  if (typeof e?.code === 'string' && /^(Z_|ZSTD_|ERR_ZLIB|ERR_ZSTD)/.test(e.code)) {
    return new TarError('COMPRESSION_CORRUPT', `${what} data is corrupt: ${e.message}`, { cause: error });
  }
  return error;
}

/** Decompresses gzip or zstd (sniffed from the first bytes); anything else passes through. */
export async function* decompress(input: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const it = input[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let headLength = 0;
  while (headLength < 4) {
    const next = await it.next();
    if (next.done) break;
    head.push(next.value);
    headLength += next.value.length;
  }
  const first = Buffer.concat(head);
  const rest = async function* () {
    if (first.length) yield first;
    for (;;) {
      const next = await it.next();
      if (next.done) return;
      yield next.value;
    }
  };
  const kind = sniffCompression(first);
  if (kind === 'none') {
    yield* rest();
    return;
  }
  const transform =
    kind === 'gzip' ? createGunzip({ chunkSize: 1 << 17 }) : createZstdDecompress({ chunkSize: 1 << 17 });
  yield* through(rest(), transform, kind);
}

/** Compresses with gzip (level 1-9, default 6) or zstd (level 1-22, default 3). */
export function compress(
  input: AsyncIterable<Uint8Array>,
  kind: Compression,
  level?: number,
): AsyncIterable<Uint8Array> {
  if (kind === 'none') return input;
  const transform =
    kind === 'gzip'
      ? createGzip({ level: level ?? 6, chunkSize: 1 << 17 })
      : createZstdCompress({
          chunkSize: 1 << 17,
          params: { [constants.ZSTD_c_compressionLevel]: level ?? 3, [constants.ZSTD_c_checksumFlag]: 1 },
        });
  return through(input, transform, kind);
}
