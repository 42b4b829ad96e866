/**
 * The SEV hashes table through which a directly booted kernel, initrd and command line are
 * measured: QEMU writes SHA-256 hashes of the three into a page the firmware reserves (footer
 * entry 7255371f-…), and the firmware refuses to boot anything whose hash differs. The table is
 * `GUID 9438d606-… ‖ u16 length` then three entries `GUID ‖ u16 50 ‖ SHA-256` for the command
 * line, the initrd and the kernel, zero-padded to 16 bytes. The command line is hashed with its
 * terminating NUL; an absent initrd hashes as empty, an absent command line as a lone NUL.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { sourceUrl } from '../../util/paths.ts';
import { sharedPool } from '../../util/pool.ts';
import { guidBytes } from './guid.ts';

const TABLE_GUID = '9438d606-4f22-4cc9-b479-a793d411fd21';
const KERNEL_GUID = '4de79437-abd2-427f-b835-d5b172d2045b';
const INITRD_GUID = '44baf731-3a2f-4bd7-9af1-41e29169781d';
const CMDLINE_GUID = '97d02dd8-bd20-4c94-aa78-e7714d36ab2a';

const ENTRY_SIZE = 16 + 2 + 32;
const TABLE_SIZE = 16 + 2 + 3 * ENTRY_SIZE;
export const PADDED_TABLE_SIZE = (TABLE_SIZE + 15) & ~15;

export interface DirectBootHashes {
  kernel: Buffer;
  initrd: Buffer;
  cmdline: Buffer;
}

/** SHA-256 of a file, streamed. */
export async function sha256File(path: string): Promise<Buffer> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest();
}

/** Files this large are hashed on a worker thread, beside the rest of the measurement. */
const WORKER_THRESHOLD = 16 << 20;

/** SHA-256 of a large file on a worker of the shared pool, of a small one here. */
async function sha256FileBeside(path: string): Promise<Buffer> {
  if ((await stat(path)).size < WORKER_THRESHOLD) return sha256File(path);
  return Buffer.from(
    await sharedPool().run<Uint8Array>(sourceUrl('measure/cvm/sev-hashes.ts'), 'sha256File', [path]),
  );
}

/**
 * The three hashes of a direct boot: the files are streamed (a large kernel or initrd on a
 * worker thread), the command line taken as UTF-8.
 */
export async function directBootHashes(
  kernel: string,
  initrd?: string,
  cmdline?: string,
): Promise<DirectBootHashes> {
  const [k, i] = await Promise.all([
    sha256FileBeside(kernel),
    initrd ? sha256FileBeside(initrd) : createHash('sha256').digest(),
  ]);
  const c = createHash('sha256')
    .update(Buffer.concat([Buffer.from(cmdline ?? '', 'utf8'), Buffer.from([0])]))
    .digest();
  return { kernel: k, initrd: i, cmdline: c };
}

/** The padded hashes table QEMU writes. */
export function sevHashesTable(h: DirectBootHashes): Buffer {
  const out = Buffer.alloc(PADDED_TABLE_SIZE);
  guidBytes(TABLE_GUID).copy(out, 0);
  out.writeUInt16LE(TABLE_SIZE, 16);
  let at = 18;
  for (const [guid, hash] of [
    [CMDLINE_GUID, h.cmdline],
    [INITRD_GUID, h.initrd],
    [KERNEL_GUID, h.kernel],
  ] as const) {
    guidBytes(guid).copy(out, at);
    out.writeUInt16LE(ENTRY_SIZE, at + 16);
    hash.copy(out, at + 18);
    at += ENTRY_SIZE;
  }
  return out;
}

/** The page that holds the table at `offset` (the table GPA's offset in its page), zeros around it. */
export function sevHashesPage(h: DirectBootHashes, offset: number): Buffer {
  const page = Buffer.alloc(4096);
  if (offset + PADDED_TABLE_SIZE > page.length)
    throw new RangeError('the hashes table does not fit its page');
  sevHashesTable(h).copy(page, offset);
  return page;
}
