/**
 * Updates pushed to the device (`seal.push=PORT`): `seal push` on a build host asks which blobs
 * of a system the device lacks (POST PUSH_HAVE), then sends those as an OCI image layout in a tar
 * stream (PUT PUSH_SYSTEM), the system tagged PUSH_TAG. The device answers with its console lines
 * of the update as they come and a last line saying the outcome.
 *
 * Whoever reaches the port may offer a system; what reaches the store is decided as for a registry
 * or a medium — signature, product and version floor checked in the pushed layout before anything
 * is copied, every layer through dm-verity after. The stream itself is taken apart without trusting
 * a byte of it: only `oci-layout`, `index.json` and `blobs/sha256/HEX` regular files are accepted,
 * each blob is checked against its name as it is written (the store's own writer), nothing is
 * written under a name from the stream, and the whole is bounded by the free space of the data
 * partition. One push at a time; the staging layout is removed whatever happens.
 */
import { rmSync, statfsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { validateIndex } from '../oci/validate.ts';
import { LayoutStore } from '../store/index.ts';
import { readTar } from '../tar/index.ts';
import { readBounded } from '../util/read.ts';
import type { Device } from './device.ts';
import { RUN } from './device.ts';
import { AgentError } from './errors.ts';
import type { UpdateChecker, UpdateOutcome } from './update.ts';

export const PUSH_HAVE = '/seal/have';
export const PUSH_SYSTEM = '/seal/system';
/** The tag of the pushed system in the pushed layout. */
export const PUSH_TAG = 'system';
/** Where a push is staged: the data partition (encrypted, writable), never the store. */
export const PUSH_DIR = `${RUN}/data/push`;
/** The last line of an answer to PUT PUSH_SYSTEM: `outcome: RESULT[: DETAIL]`. */
export const OUTCOME_PREFIX = 'outcome: ';

const BLOB = /^blobs\/sha256\/([0-9a-f]{64})$/;
const DOCUMENT_LIMIT = 1 << 20;
/** Digests one POST PUSH_HAVE may ask about. */
const HAVE_LIMIT = 100_000;
/** How long a push waits for another source's update check to end. */
const CHECK_WAIT_MS = 10 * 60_000;
/** Space left free on the data partition whatever a push brings. */
const RESERVE = 64 << 20;

/**
 * Takes a layout tar apart into a new layout at `dir`: its blobs (each checked against its name as
 * written) and its index.json; anything else in the stream, or more than `limit` bytes of blobs,
 * is refused (AGENT_PUSH) and `dir` removed.
 */
export async function receiveLayout(
  body: AsyncIterable<Uint8Array>,
  dir: string,
  limit: number,
): Promise<{ blobs: number; bytes: number }> {
  rmSync(dir, { recursive: true, force: true });
  const refuse = (why: string) => new AgentError('AGENT_PUSH', `the pushed layout is refused: ${why}`);
  try {
    const store = await LayoutStore.open(dir, { create: true });
    let blobs = 0;
    let bytes = 0;
    let index = false;
    for await (const entry of readTar(body)) {
      const path = entry.path.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
      if (entry.type === 'dir' && ['', '.', 'blobs', 'blobs/sha256'].includes(path)) continue;
      if (entry.type !== 'file') throw refuse(`${JSON.stringify(entry.path)} is a ${entry.type}`);
      const blob = BLOB.exec(path);
      if (blob) {
        bytes += entry.size;
        if (bytes > limit) throw refuse(`more than the ${limit} bytes the device has room for`);
        await store.putBlob(entry.body, { digest: `sha256:${blob[1]}`, size: entry.size });
        blobs++;
      } else if (path === 'index.json' && !index) {
        if (entry.size > DOCUMENT_LIMIT) throw refuse('index.json is too large');
        const parsed = await readJson(entry.body, DOCUMENT_LIMIT, (why) => refuse(`index.json ${why}`));
        const { manifests } = validateIndex(parsed, 'the pushed index.json');
        await store.updateIndex((i) => {
          i.manifests = manifests;
        });
        index = true;
      } else if (path === 'oci-layout' && entry.size <= 1024) {
        for await (const _ of entry.body);
      } else throw refuse(`${JSON.stringify(entry.path)} is not a file of an OCI layout`);
    }
    if (!index) throw refuse('it has no index.json');
    return { blobs, bytes };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Of `digests`, those the store holds. */
async function present(store: LayoutStore, digests: unknown): Promise<string[]> {
  if (!Array.isArray(digests) || digests.length > HAVE_LIMIT)
    throw new AgentError('AGENT_PUSH', `"digests" is not a list of at most ${HAVE_LIMIT} digests`);
  const have: string[] = [];
  for (const d of digests) {
    if (typeof d !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(d))
      throw new AgentError('AGENT_PUSH', `${JSON.stringify(d)} is not a sha256 digest`);
    if (await store.hasBlob(d)) have.push(d);
  }
  return have;
}

/** `body` parsed as JSON, at most `limit` bytes of it; `fail` makes the error of what is wrong. */
async function readJson(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  fail: (why: string) => Error,
): Promise<unknown> {
  const bytes = await readBounded(body, limit, () => fail(`is over ${limit} bytes`));
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw fail('is not JSON');
  }
}

/** What the outcome line says of an update. */
function outcomeLine(outcome: UpdateOutcome | undefined, failure: string | undefined): string {
  if (failure !== undefined) return `${OUTCOME_PREFIX}failed: ${failure}`;
  if (!outcome) return `${OUTCOME_PREFIX}unchanged: the device runs this system, or refused it before`;
  switch (outcome.result) {
    case 'applied':
      return `${OUTCOME_PREFIX}applied: version ${outcome.from} -> ${outcome.to}`;
    case 'staged':
      return `${OUTCOME_PREFIX}staged: version ${outcome.to}, rebooting to try it`;
    case 'unchanged':
      return `${OUTCOME_PREFIX}unchanged: the device runs this system`;
    case 'refused':
      return `${OUTCOME_PREFIX}refused: ${outcome.reason}`;
  }
}

/**
 * Serves pushes on `port` (every address of the device: the network decides who reaches it). An
 * update runs through `checker`, one at a time with the device's other sources.
 */
export function servePush(device: Device, checker: UpdateChecker, port: number): void {
  // Loaded here, not when the module is evaluated (the agent's startup snapshot).
  const http = createRequire(import.meta.url)('node:http') as typeof import('node:http');
  let busy = false;
  const answer = (res: ServerResponse, status: number, text: string) => {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`${text}\n`);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    res.on('error', () => {}); // a sender gone: the update goes on without it
    if (req.method === 'POST' && req.url === PUSH_HAVE) {
      const body = (await readJson(
        req,
        8 << 20,
        (why) => new AgentError('AGENT_PUSH', `the request ${why}`),
      )) as { digests?: unknown } | null;
      const have = await present(device.store, body?.digests);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ have }));
      return;
    }
    if (req.method !== 'PUT' || req.url !== PUSH_SYSTEM) return answer(res, 404, 'not found');
    if (busy) return answer(res, 409, 'another push is being received');
    busy = true;
    try {
      const { bavail, bsize } = statfsSync(`${RUN}/data`);
      const room = Math.max(0, bavail * bsize - RESERVE);
      const received = await receiveLayout(req, PUSH_DIR, room);
      device.log.say(`push: ${received.blobs} blobs, ${received.bytes} bytes received`);
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      const unwatch = device.log.watch((line) => res.write(line));
      let outcome: UpdateOutcome | undefined;
      let failure: string | undefined;
      try {
        // Another source's check (a followed tag, a medium) finishes first.
        const deadline = Date.now() + CHECK_WAIT_MS;
        const run = () =>
          checker.exclusive(async () => {
            // A staged update reboots the device before it returns: the sender sees the connection end.
            await checker.check(`oci:${PUSH_DIR}:${PUSH_TAG}`, {
              onOutcome: (o) => {
                outcome = o;
              },
              onFailure: (message) => {
                failure = message;
                device.log.say(`push: the pushed system cannot be checked: ${message}`);
              },
            });
          });
        let ran = await run();
        while (!ran && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 250));
          ran = await run();
        }
        if (!ran) failure = 'another update check kept running; push again';
      } finally {
        unwatch();
      }
      res.end(`${outcomeLine(outcome, failure)}\n`);
    } finally {
      rmSync(PUSH_DIR, { recursive: true, force: true });
      busy = false;
    }
  };
  const server = http.createServer({ requestTimeout: 30 * 60_000, headersTimeout: 10_000 }, (req, res) => {
    handle(req, res).catch((error: Error) => {
      device.log.say(`push: refused: ${error.message}`);
      if (!res.headersSent) answer(res, 400, error.message);
      else res.end(`${OUTCOME_PREFIX}failed: ${error.message}\n`);
      req.resume();
    });
  });
  server.maxHeadersCount = 32;
  server.on('error', (error) => device.log.say(`push: cannot listen on port ${port}: ${error.message}`));
  server.listen(port, () => device.log.say(`accepting pushed systems on port ${port}`));
}
