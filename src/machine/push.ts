/**
 * `seal push`: sends a signed system to a device that accepts pushes (`seal.push=PORT`, see
 * src/agent/push.ts). The system, with everything it pins and its signatures, is copied into a
 * scratch layout; the device says which of its blobs it holds; the rest goes as a layout tar in
 * one streamed request, and the device's console lines of the update come back as it runs.
 */
import { createReadStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OUTCOME_PREFIX, PUSH_HAVE, PUSH_SYSTEM, PUSH_TAG } from '../agent/push.ts';
import type { OpenOptions } from '../store/index.ts';
import { type TarWriteEntry, writeTar } from '../tar/index.ts';
import { copySystem } from './media.ts';
import { MachineError } from './swtpm.ts';

export interface PushOptions {
  /** The signed system manifest: any image reference. */
  manifest: string;
  /** The device's push port: HOST:PORT. */
  address: string;
  /** Registry options for the manifest's reference. */
  transport?: OpenOptions;
  /** Each line the device says while it takes the update. */
  onLine?: (line: string) => void;
}

export interface PushResult {
  digest: string;
  /** Blobs of the system, and those sent (the device lacked them), with their bytes. */
  blobs: number;
  sent: number;
  bytes: number;
  /** What the device said of the update: applied, staged, unchanged, refused, failed; or `disconnected`. */
  outcome: string;
  detail: string;
}

function target(address: string): { host: string; port: number } {
  const m = /^([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new MachineError('MACHINE_PUSH', `${JSON.stringify(address)} is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** One request to the device; the body streamed, the answer passed on as it comes. */
function exchange(
  to: { host: string; port: number },
  method: string,
  path: string,
  body: AsyncIterable<Uint8Array> | Uint8Array,
  onData: (text: string) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { ...to, method, path, agent: false, headers: { 'content-type': 'application/octet-stream' } },
      (res) => {
        res.setEncoding('utf8');
        res.on('data', onData);
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', (error) =>
      reject(
        new MachineError('MACHINE_PUSH', `the device at ${to.host}:${to.port}: ${error.message}`, {
          cause: error,
        }),
      ),
    );
    if (body instanceof Uint8Array) req.end(body);
    else
      (async () => {
        for await (const chunk of body) if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        req.end();
      })().catch((error: Error) => req.destroy(error));
  });
}

/** Pushes `options.manifest` to the device at `options.address`. */
export async function pushSystem(options: PushOptions): Promise<PushResult> {
  const to = target(options.address);
  const scratch = mkdtempSync(join(tmpdir(), 'seal-push-'));
  try {
    const layout = join(scratch, 'layout');
    const digest = await copySystem(options.manifest, layout, PUSH_TAG, options.transport);
    const blobDir = join(layout, 'blobs/sha256');
    const all = readdirSync(blobDir).sort();
    let answer = '';
    const status = await exchange(
      to,
      'POST',
      PUSH_HAVE,
      Buffer.from(JSON.stringify({ digests: all.map((hex) => `sha256:${hex}`) })),
      (text) => {
        answer += text;
      },
    );
    if (status !== 200)
      throw new MachineError('MACHINE_PUSH', `the device refused the question: ${answer.trim()}`);
    const have = new Set((JSON.parse(answer) as { have: string[] }).have);
    const missing = all.filter((hex) => !have.has(`sha256:${hex}`));
    // The layout as it is on disk, less the blobs the device holds.
    const sending = ['oci-layout', 'index.json', ...missing.map((hex) => `blobs/sha256/${hex}`)].map(
      (path) => ({ path, size: statSync(join(layout, path)).size }),
    );
    const bytes = sending.slice(2).reduce((n, f) => n + f.size, 0);
    const entries = sending.map(
      ({ path, size }): TarWriteEntry => ({
        path,
        type: 'file',
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: { sec: 0, nsec: 0 },
        size,
        // Opened when the tar reaches it: one file open at a time, however many blobs.
        body: (async function* () {
          yield* createReadStream(join(layout, path));
        })(),
      }),
    );
    // The device's lines, passed on whole; the last says the outcome.
    let pending = '';
    let last = '';
    const status2 = await exchange(to, 'PUT', PUSH_SYSTEM, writeTar(entries), (text) => {
      pending += text;
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        last = line;
        if (!line.startsWith(OUTCOME_PREFIX)) options.onLine?.(line);
      }
    }).catch((error: Error) => {
      // A device that stages the update reboots at once: the connection ends without an outcome.
      if (last === '') throw error;
      return 0;
    });
    if (status2 !== 200 && status2 !== 0)
      throw new MachineError(
        'MACHINE_PUSH',
        `the device refused the push (${status2}): ${(last || pending).trim()}`,
      );
    const m = last.startsWith(OUTCOME_PREFIX)
      ? /^(\w+)(?:: (.*))?$/.exec(last.slice(OUTCOME_PREFIX.length))
      : null;
    return {
      digest,
      blobs: all.length,
      sent: missing.length,
      bytes,
      outcome: m ? m[1]! : 'disconnected',
      detail: m ? (m[2] ?? '') : `the connection ended after: ${last}`,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
