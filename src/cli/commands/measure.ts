import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.ts';
import {
  BANKS,
  type Bank,
  describeEventLog,
  MeasureError,
  parseBank,
  parseEventLog,
  parsePcrList,
  predictPcrs,
  replayEventLog,
} from '../../measure/index.ts';
import type { Command } from '../command.ts';

function banksOption(value: unknown, fallback: Bank[]): Bank[] {
  return typeof value === 'string' ? value.split(',').map((b) => parseBank(b.trim())) : fallback;
}

type Expected = Partial<Record<Bank, Record<number, string>>>;

/**
 * Expected PCR values: `BANK:PCR=HEX` options, and files of lines `BANK PCR HEX` (or
 * `BANK:PCR=HEX`), or JSON `{BANK: {PCR: HEX}}` (also under `values`, as `seal pcr predict
 * --json` prints it).
 */
function expectedValues(files: string[], pairs: string[]): Expected {
  const out: Expected = {};
  const add = (bank: string, pcr: string, hex: string, where: string) => {
    const b = parseBank(bank);
    const n = Number(pcr);
    if (!/^\d+$/.test(pcr) || n > 23)
      throw new UsageError(`${where}: ${JSON.stringify(pcr)} is not a PCR index`);
    if (!/^[0-9a-fA-F]+$/.test(hex)) throw new UsageError(`${where}: ${JSON.stringify(hex)} is not hex`);
    (out[b] ??= {})[n] = hex.toLowerCase();
  };
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    if (text.trimStart().startsWith('{')) {
      let json = JSON.parse(text) as Record<string, unknown>;
      if (json.values && typeof json.values === 'object') json = json.values as Record<string, unknown>;
      for (const [bank, pcrs] of Object.entries(json))
        for (const [pcr, hex] of Object.entries(pcrs as Record<string, string>))
          add(bank, pcr, String(hex), file);
      continue;
    }
    for (const line of text.split('\n').map((l) => l.trim())) {
      if (!line || line.startsWith('#')) continue;
      const m = /^(\w+)(?::|\s+)(\d+)(?:=|\s+)([0-9a-fA-F]+)$/.exec(line.replace(/^PCR\s+/, ''));
      if (!m) throw new UsageError(`${file}: ${JSON.stringify(line)} is not "BANK PCR HEX"`);
      add(m[1]!, m[2]!, m[3]!, file);
    }
  }
  for (const pair of pairs) {
    const m = /^(\w+):(\d+)=([0-9a-fA-F]+)$/.exec(pair);
    if (!m) throw new UsageError(`--pcr takes BANK:PCR=HEX, not ${JSON.stringify(pair)}`);
    add(m[1]!, m[2]!, m[3]!, '--pcr');
  }
  return out;
}

export const measureCommands: Command[] = [
  {
    path: ['pcr', 'predict'],
    summary: 'Predict PCRs 4, 7 and 11 for booting a UKI (with a boot manager, with a varstore)',
    args: '',
    arity: [0, 0],
    options: {
      uki: { type: 'string', value: 'UKI', description: 'the UKI (required)' },
      'boot-manager': {
        type: 'string',
        value: 'EFI',
        description: 'a boot manager the firmware starts first',
      },
      vars: { type: 'string', value: 'VARS', description: 'the OVMF varstore the machine boots with' },
      pcrs: { type: 'string', value: 'LIST', description: 'PCRs to predict (default 4,7,11)' },
      banks: {
        type: 'string',
        value: 'BANKS',
        description: 'PCR banks, e.g. sha256,sha384 (default sha256)',
      },
      phases: {
        type: 'string',
        value: 'WORDS',
        description: 'boot phases systemd extends into PCR 11 afterwards, e.g. enter-initrd,leave-initrd',
      },
      events: { type: 'boolean', description: 'also list the predicted events' },
    },
    details:
      'Without --vars, or with a varstore that is not Secure Boot enabled, the prediction is for a boot without Secure Boot, and says so.',
    async run(ctx, _args, options) {
      if (typeof options.uki !== 'string') throw new UsageError('--uki is required');
      const prediction = await predictPcrs({
        uki: options.uki,
        bootManager: options['boot-manager'] as string | undefined,
        varstore: options.vars as string | undefined,
        banks: banksOption(options.banks, ['sha256']),
        pcrs: typeof options.pcrs === 'string' ? parsePcrList(options.pcrs) : [4, 7, 11],
        phases: typeof options.phases === 'string' ? options.phases.split(',').map((p) => p.trim()) : [],
      });
      const values = Object.fromEntries(
        Object.entries(prediction.values).map(([bank, pcrs]) => [
          bank,
          Object.fromEntries(Object.entries(pcrs).map(([n, v]) => [n, v.toString('hex')])),
        ]),
      );
      ctx.result({
        secureBoot: prediction.secureBoot,
        stubVersion: prediction.stubVersion,
        warnings: prediction.warnings,
        values,
        ...(options.events
          ? {
              events: prediction.events.map(({ data: _data, ...e }) => ({
                ...e,
                digests: Object.fromEntries(
                  Object.entries(e.digests).map(([b, d]) => [b, d.toString('hex')]),
                ),
              })),
            }
          : {}),
      });
      for (const w of prediction.warnings) process.stderr.write(`seal: warning: ${w}\n`);
      if (options.events)
        for (const e of prediction.events)
          ctx.print(`PCR ${String(e.pcr).padStart(2)} ${e.type.padEnd(32)} ${e.description}`);
      for (const [bank, pcrs] of Object.entries(values))
        for (const [n, v] of Object.entries(pcrs)) ctx.print(`${bank}:${n}=${v}`);
      return 0;
    },
  },
  {
    path: ['eventlog', 'replay'],
    summary: 'Show a TCG2 event log (binary_bios_measurements), replay it per bank, compare with PCR values',
    args: 'LOG',
    arity: [1, 1],
    options: {
      pcrs: {
        type: 'string',
        value: 'LIST',
        description: 'PCRs to show (default: every PCR the log extends)',
      },
      banks: {
        type: 'string',
        value: 'BANKS',
        description: 'banks to replay (default: every bank the log has)',
      },
      expect: {
        type: 'string',
        multiple: true,
        value: 'FILE',
        description:
          'PCR values to compare with: lines "BANK PCR HEX", or JSON such as `seal pcr predict --json` prints',
      },
      pcr: {
        type: 'string',
        multiple: true,
        value: 'BANK:PCR=HEX',
        description: 'a PCR value to compare with',
      },
      quiet: { type: 'boolean', description: 'do not list the events' },
    },
    details: 'Exits 1 when a compared PCR differs, naming it.',
    async run(ctx, [path], options) {
      const log = parseEventLog(readFileSync(path!), path!);
      const banks = banksOption(options.banks, log.banks).filter((b) => log.banks.includes(b));
      const pcrs = typeof options.pcrs === 'string' ? parsePcrList(options.pcrs) : undefined;
      const events = describeEventLog(log).filter((e) => !pcrs || pcrs.includes(e.pcr));
      const replayed = replayEventLog(log);
      const values: Partial<Record<Bank, Record<number, string>>> = {};
      for (const bank of banks) {
        values[bank] = {};
        for (const [n, v] of Object.entries(replayed[bank] ?? {}))
          if (!pcrs || pcrs.includes(Number(n))) values[bank]![Number(n)] = v.toString('hex');
      }
      const expected = expectedValues(
        (options.expect as string[] | undefined) ?? [],
        (options.pcr as string[] | undefined) ?? [],
      );
      const comparisons: {
        bank: Bank;
        pcr: number;
        expected: string;
        replayed: string | undefined;
        match: boolean;
      }[] = [];
      for (const bank of BANKS) {
        for (const [n, hex] of Object.entries(expected[bank] ?? {})) {
          if (!log.banks.includes(bank))
            throw new MeasureError('MEASURE_INVALID_OPTION', `${path} has no ${bank} bank to compare`);
          const got = replayed[bank]?.[Number(n)]?.toString('hex');
          comparisons.push({ bank, pcr: Number(n), expected: hex, replayed: got, match: got === hex });
        }
      }
      ctx.result({ format: log.format, banks: log.banks, events, values, comparisons });
      if (!options.quiet)
        for (const e of events)
          ctx.print(
            `${String(e.index).padStart(4)} PCR ${String(e.pcr).padStart(2)} ${e.type.padEnd(32)} ${e.description}${e.digests.sha256 ? `  sha256 ${e.digests.sha256.slice(0, 16)}…` : ''}`,
          );
      for (const [bank, pcrsOf] of Object.entries(values))
        for (const [n, v] of Object.entries(pcrsOf)) ctx.print(`${bank}:${n}=${v}`);
      const failed = comparisons.filter((c) => !c.match);
      for (const c of comparisons)
        ctx.print(
          `${c.match ? 'match' : 'MISMATCH'} ${c.bank}:${c.pcr}${c.match ? '' : ` replayed ${c.replayed ?? '(never extended)'}, expected ${c.expected}`}`,
        );
      if (failed.length > 0) {
        const f = failed[0]!;
        throw new MeasureError(
          'MEASURE_PCR_MISMATCH',
          `${path}: ${f.bank} PCR ${f.pcr} replays to ${f.replayed ?? 'nothing (never extended)'}, not ${f.expected}${failed.length > 1 ? ` (and ${failed.length - 1} more)` : ''}`,
        );
      }
      return 0;
    },
  },
];
