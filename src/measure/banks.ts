/**
 * PCR banks: the TPM algorithm identifiers of the hashes TPM 2.0 PCRs are kept in, and extending.
 * A PCR starts at zeros (PCR 0 at the startup locality) and each measurement replaces it with
 * H(PCR ‖ digest).
 */
import { createHash } from 'node:crypto';
import { MeasureError } from './errors.ts';

export const BANKS = ['sha1', 'sha256', 'sha384', 'sha512'] as const;
export type Bank = (typeof BANKS)[number];

/** TPM_ALG_ID of each bank (TPM 2.0 Part 2, table 9). */
export const ALGORITHM_IDS: Record<Bank, number> = {
  sha1: 0x0004,
  sha256: 0x000b,
  sha384: 0x000c,
  sha512: 0x000d,
};
export const DIGEST_SIZES: Record<Bank, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

export function bankOfAlgorithm(id: number): Bank | undefined {
  return BANKS.find((b) => ALGORITHM_IDS[b] === id);
}

export function parseBank(value: string): Bank {
  const bank = value.toLowerCase().replace('-', '') as Bank;
  if (!BANKS.includes(bank))
    throw new MeasureError(
      'MEASURE_INVALID_OPTION',
      `PCR bank ${JSON.stringify(value)} is not one of ${BANKS.join(', ')}`,
    );
  return bank;
}

export function digest(bank: Bank, data: Uint8Array | string): Buffer {
  return createHash(bank).update(data).digest();
}

export function extend(bank: Bank, pcr: Buffer, measurement: Uint8Array): Buffer {
  return createHash(bank).update(pcr).update(measurement).digest();
}

export function zeros(bank: Bank): Buffer {
  return Buffer.alloc(DIGEST_SIZES[bank]);
}

/** Parses `4,7,11` or `0-7,11`. */
export function parsePcrList(value: string): number[] {
  const out = new Set<number>();
  for (const part of value
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    const from = m ? Number(m[1]) : Number.NaN;
    const to = m?.[2] !== undefined ? Number(m[2]) : from;
    if (!m || from > to || to > 23)
      throw new MeasureError(
        'MEASURE_INVALID_OPTION',
        `${JSON.stringify(part)} is not a PCR index or range of 0-23`,
      );
    for (let i = from; i <= to; i++) out.add(i);
  }
  return [...out].sort((a, b) => a - b);
}
