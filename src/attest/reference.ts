/**
 * Reference values: what a verifier accepts for one product — the PCR values and the ordered
 * events that `seal pcr predict` computes for each accepted system (a signed UKI, optionally
 * behind a boot manager, on a varstore). Version 1 (docs/attestation.md):
 *
 *   {
 *     "type": "seal-attest-reference",
 *     "version": 1,
 *     "product": UUID,                      the product the devices' certificates must name
 *     "bank": "sha256",
 *     "pcrs": [4, 7, 11],                   the PCRs the reference governs
 *     "systems": [{
 *       "name": TEXT,                       e.g. the UKI's file name
 *       "uki": "sha256:HEX",                the UKI file's digest (informative)
 *       "bootManager": "sha256:HEX",        when one starts the UKI (informative)
 *       "secureBoot": true,
 *       "values": { "N": HEX },             the PCR values the boot produces
 *       "events": [{ "pcr": N, "type": "EV_…", "description": TEXT, "digest": HEX }]
 *     }, …]
 *   }
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import type { Varstore } from '../efi/index.ts';
import { BANKS, type Bank, DIGEST_SIZES, extend, predictPcrs, zeros } from '../measure/index.ts';
import { AttestError } from './errors.ts';

export const REFERENCE_TYPE = 'seal-attest-reference';
export const REFERENCE_VERSION = 1;
const MAX_SYSTEMS = 256;
const MAX_EVENTS = 4096;

export interface ReferenceEvent {
  pcr: number;
  type: string;
  description: string;
  digest: Buffer;
}

export interface ReferenceSystem {
  name: string;
  uki?: string;
  bootManager?: string;
  secureBoot: boolean;
  values: Map<number, Buffer>;
  events: ReferenceEvent[];
}

export interface Reference {
  product: string;
  bank: Bank;
  pcrs: number[];
  systems: ReferenceSystem[];
}

export interface ReferenceOptions {
  product: string;
  /** The accepted UKIs: each is one accepted system. */
  ukis: string[];
  varstore?: string | Varstore;
  bootManager?: string;
  bank?: Bank;
  pcrs?: number[];
  /** Boot phases extended into PCR 11 after the stub (see `predictPcrs`). */
  phases?: string[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** The reference values of `options.ukis`, predicted as `seal pcr predict` predicts them. */
export async function makeReference(options: ReferenceOptions): Promise<Reference> {
  const product = options.product.toLowerCase();
  if (!UUID.test(product))
    throw new AttestError(
      'ATTEST_INVALID_OPTION',
      `product ID ${JSON.stringify(options.product)} is not a UUID`,
    );
  if (options.ukis.length === 0)
    throw new AttestError('ATTEST_INVALID_OPTION', 'a reference needs at least one UKI');
  const bank = options.bank ?? 'sha256';
  const pcrs = [...new Set(options.pcrs ?? [4, 7, 11])].sort((a, b) => a - b);
  for (const pcr of pcrs)
    if (![4, 7, 11].includes(pcr))
      throw new AttestError('ATTEST_INVALID_OPTION', `PCR ${pcr} is not one Seal predicts (4, 7, 11)`);
  const systems: ReferenceSystem[] = [];
  const bootManager = options.bootManager ? await fileDigest(options.bootManager) : undefined;
  for (const uki of options.ukis) {
    const prediction = await predictPcrs({
      uki,
      bootManager: options.bootManager,
      varstore: options.varstore,
      banks: [bank],
      pcrs,
      phases: options.phases,
    });
    systems.push({
      name: basename(uki),
      uki: await fileDigest(uki),
      ...(bootManager ? { bootManager } : {}),
      secureBoot: prediction.secureBoot,
      values: new Map(pcrs.map((n) => [n, prediction.values[bank]![n]!])),
      // Descriptions name the files by their base names: a reference does not carry build paths.
      events: prediction.events.map((e) => ({
        pcr: e.pcr,
        type: e.type,
        description: [uki, options.bootManager]
          .filter((p): p is string => !!p)
          .reduce((text, p) => text.split(p).join(basename(p)), e.description),
        digest: e.digests[bank]!,
      })),
    });
  }
  return { product, bank, pcrs, systems };
}

export function serializeReference(reference: Reference): string {
  const doc = {
    type: REFERENCE_TYPE,
    version: REFERENCE_VERSION,
    product: reference.product,
    bank: reference.bank,
    pcrs: reference.pcrs,
    systems: reference.systems.map((s) => ({
      name: s.name,
      ...(s.uki ? { uki: s.uki } : {}),
      ...(s.bootManager ? { bootManager: s.bootManager } : {}),
      secureBoot: s.secureBoot,
      values: Object.fromEntries([...s.values].map(([n, v]) => [String(n), v.toString('hex')])),
      events: s.events.map((e) => ({
        pcr: e.pcr,
        type: e.type,
        description: e.description,
        digest: e.digest.toString('hex'),
      })),
    })),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Reads a reference file; a malformed one is ATTEST_REFERENCE naming the field. */
export function parseReference(text: string | Uint8Array, subject = 'reference'): Reference {
  const fail = (message: string): never => {
    throw new AttestError('ATTEST_REFERENCE', `${subject}: ${message}`, { subject });
  };
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(typeof text === 'string' ? text : Buffer.from(text).toString('utf8'));
  } catch {
    return fail('not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) fail('not an object');
  if (doc.type !== REFERENCE_TYPE) fail(`type is ${JSON.stringify(doc.type)}, not "${REFERENCE_TYPE}"`);
  if (doc.version !== REFERENCE_VERSION) fail(`version ${JSON.stringify(doc.version)} is not one Seal reads`);
  if (typeof doc.product !== 'string' || !UUID.test(doc.product)) fail('product is not a lowercase UUID');
  if (typeof doc.bank !== 'string' || !(BANKS as readonly string[]).includes(doc.bank))
    fail('bank is not a PCR bank');
  const bank = doc.bank as Bank;
  const size = DIGEST_SIZES[bank];
  const digest = (v: unknown, field: string): Buffer => {
    if (typeof v !== 'string' || !/^[0-9a-f]*$/.test(v) || v.length !== size * 2)
      fail(`${field} is not a ${bank} digest`);
    return Buffer.from(v as string, 'hex');
  };
  if (
    !Array.isArray(doc.pcrs) ||
    doc.pcrs.length === 0 ||
    !doc.pcrs.every((p) => Number.isInteger(p) && p >= 0 && p <= 23) ||
    new Set(doc.pcrs).size !== doc.pcrs.length
  )
    fail('pcrs is not a list of distinct PCR indices');
  const pcrs = [...(doc.pcrs as number[])].sort((a, b) => a - b);
  if (!Array.isArray(doc.systems) || doc.systems.length === 0 || doc.systems.length > MAX_SYSTEMS)
    fail(`systems is not a list of 1 to ${MAX_SYSTEMS} systems`);
  const systems = (doc.systems as unknown[]).map((value, i): ReferenceSystem => {
    const field = `systems[${i}]`;
    if (typeof value !== 'object' || value === null) return fail(`${field} is not an object`);
    const s = value as Record<string, unknown>;
    if (typeof s.name !== 'string' || s.name.length === 0 || s.name.length > 256)
      fail(`${field}.name is not a name`);
    for (const key of ['uki', 'bootManager'] as const)
      if (s[key] !== undefined && (typeof s[key] !== 'string' || (s[key] as string).length > 200))
        fail(`${field}.${key} is not a digest`);
    if (typeof s.secureBoot !== 'boolean') fail(`${field}.secureBoot is not a boolean`);
    if (typeof s.values !== 'object' || s.values === null) fail(`${field}.values is not an object`);
    const values = new Map<number, Buffer>();
    for (const pcr of pcrs)
      values.set(pcr, digest((s.values as Record<string, unknown>)[String(pcr)], `${field}.values.${pcr}`));
    if (!Array.isArray(s.events) || s.events.length > MAX_EVENTS)
      fail(`${field}.events is not a list of events`);
    const events = (s.events as unknown[]).map((e, j): ReferenceEvent => {
      const ef = `${field}.events[${j}]`;
      if (typeof e !== 'object' || e === null) return fail(`${ef} is not an object`);
      const ev = e as Record<string, unknown>;
      if (!Number.isInteger(ev.pcr) || !pcrs.includes(ev.pcr as number))
        fail(`${ef}.pcr is not one of the reference's PCRs`);
      if (typeof ev.type !== 'string' || ev.type.length > 64) fail(`${ef}.type is not an event type`);
      if (typeof ev.description !== 'string' || ev.description.length > 1024)
        fail(`${ef}.description is not text`);
      return {
        pcr: ev.pcr as number,
        type: ev.type as string,
        description: ev.description as string,
        digest: digest(ev.digest, `${ef}.digest`),
      };
    });
    // The events must produce the values: a reference edited by hand is refused here, not at a device.
    for (const pcr of pcrs) {
      let value = zeros(bank);
      for (const e of events) if (e.pcr === pcr) value = extend(bank, value, e.digest);
      if (!value.equals(values.get(pcr)!))
        fail(`${field}: its PCR ${pcr} events do not produce its PCR ${pcr} value`);
    }
    return {
      name: s.name as string,
      ...(s.uki !== undefined ? { uki: s.uki as string } : {}),
      ...(s.bootManager !== undefined ? { bootManager: s.bootManager as string } : {}),
      secureBoot: s.secureBoot as boolean,
      values,
      events,
    };
  });
  return { product: doc.product as string, bank, pcrs, systems };
}

/** Systems of several references for one product and bank, as one reference (duplicates dropped). */
export function mergeReferences(references: Reference[]): Reference {
  const [first, ...rest] = references;
  if (!first) throw new AttestError('ATTEST_INVALID_OPTION', 'no reference to merge');
  for (const r of rest)
    if (r.product !== first.product || r.bank !== first.bank || r.pcrs.join() !== first.pcrs.join())
      throw new AttestError(
        'ATTEST_INVALID_OPTION',
        'references of different products, banks or PCRs cannot be merged',
      );
  const seen = new Set<string>();
  const systems: ReferenceSystem[] = [];
  for (const r of references)
    for (const s of r.systems) {
      const key = s.events.map((e) => `${e.pcr}:${e.digest.toString('hex')}`).join();
      if (seen.has(key)) continue;
      seen.add(key);
      systems.push(s);
    }
  return { ...first, systems };
}
