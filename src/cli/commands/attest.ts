/**
 * `seal attest …`: remote attestation with the device's TPM — evidence (quote), reference values
 * (reference), verification (verify), the verifier service (serve) and its client (fetch).
 */
import { readFileSync } from 'node:fs';
import {
  AttestError,
  DEFAULT_QUOTE_PCRS,
  type Decision,
  fetchSecret,
  makeReference,
  mergeReferences,
  NonceStore,
  parseEvidence,
  parseReference,
  quoteEvidence,
  type Reference,
  serializeReference,
  startVerifier,
  verifyEvidence,
} from '../../attest/index.ts';
import { UsageError } from '../../errors.ts';
import { parseBank, parsePcrList } from '../../measure/index.ts';
import { type Certificate, parseCertificate, parseCertificates } from '../../pki/index.ts';
import { DEFAULT_TPM, Tpm } from '../../tpm/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import type { Command, OptionSpec } from '../command.ts';

type Options = Record<string, string | boolean | string[] | undefined>;

const tpmOption: Record<string, OptionSpec> = {
  tpm: {
    type: 'string',
    value: 'DEV|swtpm:HOST:PORT|swtpm:unix:PATH',
    description: `the TPM: a device, or swtpm's TCP or Unix command socket (default ${DEFAULT_TPM})`,
  },
};

function required(options: Options, name: string): string {
  const v = options[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

function strings(options: Options, name: string): string[] {
  const v = options[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

function hexOption(value: string, name: string): Buffer {
  const clean = value.replace(/^0x/, '').toLowerCase();
  if (!/^([0-9a-f]{2})+$/.test(clean))
    throw new UsageError(`--${name} takes hex bytes, not ${JSON.stringify(value)}`);
  const bytes = Buffer.from(clean, 'hex');
  if (bytes.length > 64) throw new UsageError(`--${name} is at most 64 bytes`);
  return bytes;
}

/** A certificate file: PEM (one or more) or DER. */
function readCertificates(path: string): Certificate[] {
  const bytes = readFileSync(path);
  if (bytes.includes('-----BEGIN')) return parseCertificates(bytes.toString('utf8'), path);
  return [parseCertificate(bytes, path)];
}

function readReferences(paths: string[]): Reference {
  if (paths.length === 0) throw new UsageError('--reference is required');
  return mergeReferences(paths.map((p) => parseReference(readFileSync(p), p)));
}

async function withTpm<T>(options: Options, run: (tpm: Tpm) => Promise<T>): Promise<T> {
  const tpm = await Tpm.open(typeof options.tpm === 'string' ? options.tpm : DEFAULT_TPM);
  try {
    return await run(tpm);
  } finally {
    await tpm.close();
  }
}

const eventLogOption: Record<string, OptionSpec> = {
  'event-log': {
    type: 'string',
    value: 'FILE',
    description: 'the TCG2 event log (default /sys/kernel/security/tpm0/binary_bios_measurements)',
  },
};

export const attestCommands: Command[] = [
  {
    path: ['attest', 'quote'],
    summary: 'Quote PCRs with the TPM-resident identity key and write an evidence document',
    args: 'OUT',
    arity: [1, 1],
    options: {
      ...tpmOption,
      nonce: { type: 'string', value: 'HEX', description: "the verifier's nonce (required)" },
      cert: {
        type: 'string',
        value: 'PEM',
        description:
          "the identity key's certificate (seal pki device new --public-key), then intermediates (required)",
      },
      pcrs: {
        type: 'string',
        value: 'LIST',
        description: `PCRs to quote (default ${DEFAULT_QUOTE_PCRS.join(',').replace('0,1,2,3,4,5,6,7,8,9', '0-9')})`,
      },
      bank: { type: 'string', value: 'BANK', description: 'the PCR bank (default sha256)' },
      ...eventLogOption,
    },
    details:
      'OUT is a JSON evidence document (seal-attest-evidence, version 1: docs/attestation.md); - writes it to standard output.',
    async run(ctx, [out], options) {
      const nonce = hexOption(required(options, 'nonce'), 'nonce');
      const certificates = readCertificates(required(options, 'cert')).map((c) => Buffer.from(c.rawData));
      const quoted = await withTpm(options, (tpm) =>
        quoteEvidence(tpm, {
          nonce,
          certificates,
          ...(typeof options.pcrs === 'string' ? { pcrs: parsePcrList(options.pcrs) } : {}),
          ...(typeof options.bank === 'string' ? { bank: parseBank(options.bank) } : {}),
          ...(typeof options['event-log'] === 'string' ? { eventLogPath: options['event-log'] } : {}),
        }),
      );
      if (out === '-') process.stdout.write(quoted.evidence);
      else await writeFileAtomic(out!, quoted.evidence);
      const pcrs = [...(quoted.parts.pcrs as Map<number, Buffer>).keys()];
      ctx.result({ out, nonce: nonce.toString('hex'), bank: quoted.parts.bank, pcrs });
      if (out !== '-')
        ctx.print(`${out}: quote of ${quoted.parts.bank} PCRs ${pcrs.join(',')} with the event log`);
      return 0;
    },
  },
  {
    path: ['attest', 'reference'],
    summary: 'Reference values for verifiers: the PCRs and events of booting the product’s signed UKIs',
    args: 'OUT',
    arity: [1, 1],
    options: {
      product: { type: 'string', value: 'UUID', description: 'the product the devices are of (required)' },
      uki: {
        type: 'string',
        multiple: true,
        value: 'UKI',
        description: 'an accepted UKI (repeatable; required)',
      },
      vars: { type: 'string', value: 'VARS', description: 'the OVMF varstore the devices boot with' },
      'boot-manager': {
        type: 'string',
        value: 'EFI',
        description: 'a boot manager the firmware starts first',
      },
      pcrs: {
        type: 'string',
        value: 'LIST',
        description: 'the PCRs to govern, of 4,7,11 (default all three)',
      },
      bank: { type: 'string', value: 'BANK', description: 'the PCR bank (default sha256)' },
      merge: {
        type: 'string',
        multiple: true,
        value: 'REF',
        description: 'also accept the systems of an existing reference (repeatable)',
      },
    },
    details: 'OUT is a JSON reference (seal-attest-reference, version 1); - writes it to standard output.',
    async run(ctx, [out], options) {
      const ukis = strings(options, 'uki');
      if (ukis.length === 0) throw new UsageError('--uki is required');
      const made = await makeReference({
        product: required(options, 'product'),
        ukis,
        ...(typeof options.vars === 'string' ? { varstore: options.vars } : {}),
        ...(typeof options['boot-manager'] === 'string' ? { bootManager: options['boot-manager'] } : {}),
        ...(typeof options.pcrs === 'string' ? { pcrs: parsePcrList(options.pcrs) } : {}),
        ...(typeof options.bank === 'string' ? { bank: parseBank(options.bank) } : {}),
      });
      const reference = mergeReferences([
        ...strings(options, 'merge').map((p) => parseReference(readFileSync(p), p)),
        made,
      ]);
      const text = serializeReference(reference);
      if (out === '-') process.stdout.write(text);
      else await writeFileAtomic(out!, text);
      ctx.result({
        out,
        product: reference.product,
        bank: reference.bank,
        pcrs: reference.pcrs,
        systems: reference.systems.map((s) => ({
          name: s.name,
          values: Object.fromEntries([...s.values].map(([n, v]) => [n, v.toString('hex')])),
        })),
      });
      if (out !== '-')
        for (const s of reference.systems)
          ctx.print(
            `${s.name}: ${[...s.values].map(([n, v]) => `${reference.bank}:${n}=${v.toString('hex')}`).join(' ')}`,
          );
      return 0;
    },
  },
  {
    path: ['attest', 'verify'],
    summary: 'Verify an evidence document: key, chain, nonce, event log, reference values',
    args: 'EVIDENCE',
    arity: [1, 1],
    options: {
      'device-ca': {
        type: 'string',
        value: 'PEM',
        description: 'the device-identity CA certificate (required)',
      },
      reference: {
        type: 'string',
        multiple: true,
        value: 'REF',
        description: 'reference values (seal attest reference; repeatable, one product)',
      },
      nonce: { type: 'string', value: 'HEX', description: 'the nonce this verifier issued (required)' },
      at: {
        type: 'string',
        value: 'TIME',
        description: 'check certificate validity at this ISO time (default now)',
      },
    },
    details:
      'Exits 1 on a refusal, naming the reason (and the first event that differs from the reference); --json prints the verdict either way.',
    async run(ctx, [path], options) {
      const deviceCa = readCertificates(required(options, 'device-ca'))[0]!;
      const reference = readReferences(strings(options, 'reference'));
      const nonce = hexOption(required(options, 'nonce'), 'nonce');
      let at: Date | undefined;
      if (typeof options.at === 'string') {
        at = new Date(options.at);
        if (Number.isNaN(at.getTime()))
          throw new UsageError(`--at ${JSON.stringify(options.at)} is not a time`);
      }
      try {
        const evidence = parseEvidence(readFileSync(path!), path!);
        const verdict = await verifyEvidence(evidence, { deviceCa, reference, nonce, ...(at ? { at } : {}) });
        const { binding, ...shown } = verdict;
        ctx.result({
          verified: true,
          ...shown,
          ...(binding ? { binding: binding.name.toString('hex') } : {}),
        });
        ctx.print(
          `verified: product ${verdict.product}, serial ${verdict.serial}, booted "${verdict.system}" (${verdict.bank} PCRs ${Object.keys(verdict.pcrs).join(',')}${verdict.unlogged.length ? `; not in the event log: ${verdict.unlogged.join(',')}` : ''})`,
        );
        return 0;
      } catch (error) {
        if (error instanceof AttestError)
          ctx.result({
            verified: false,
            code: error.code,
            reason: error.message,
            ...(error.event ? { event: error.event } : {}),
          });
        throw error;
      }
    },
  },
  {
    path: ['attest', 'serve'],
    summary: 'Run a verifier service that releases secrets to attested devices (challenge/response)',
    args: '',
    arity: [0, 0],
    options: {
      reference: { type: 'string', multiple: true, value: 'REF', description: 'reference values (required)' },
      'device-ca': {
        type: 'string',
        value: 'PEM',
        description: 'the device-identity CA certificate (required)',
      },
      secret: {
        type: 'string',
        multiple: true,
        value: 'NAME=FILE',
        description: 'a secret to release (repeatable; required)',
      },
      listen: { type: 'string', value: 'HOST:PORT', description: 'where to listen (default 127.0.0.1:7443)' },
      'tls-cert': { type: 'string', value: 'PEM', description: 'serve HTTPS with this certificate (chain)' },
      'tls-key': { type: 'string', value: 'PEM', description: 'and this key' },
      'nonce-ttl': {
        type: 'string',
        value: 'SECONDS',
        description: 'how long a nonce is valid (default 60)',
      },
      pcrs: {
        type: 'string',
        value: 'LIST',
        description: 'the PCRs devices are asked to quote (default 0-9,11)',
      },
    },
    details:
      'Endpoints: POST /v1/challenge, POST /v1/attest (docs/attestation.md). Runs until interrupted; prints one line per decision.',
    async run(ctx, _, options) {
      const secrets = new Map<string, Buffer>();
      for (const pair of strings(options, 'secret')) {
        const m = /^([^=]+)=(.+)$/.exec(pair);
        if (!m) throw new UsageError(`--secret takes NAME=FILE, not ${JSON.stringify(pair)}`);
        if (secrets.has(m[1]!)) throw new UsageError(`--secret ${m[1]} is given twice`);
        secrets.set(m[1]!, readFileSync(m[2]!));
      }
      if (secrets.size === 0) throw new UsageError('--secret is required');
      const tlsCert = options['tls-cert'];
      const tlsKey = options['tls-key'];
      if ((typeof tlsCert === 'string') !== (typeof tlsKey === 'string'))
        throw new UsageError('--tls-cert and --tls-key go together');
      let ttl = 60;
      if (typeof options['nonce-ttl'] === 'string') {
        ttl = Number(options['nonce-ttl']);
        if (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600)
          throw new UsageError('--nonce-ttl takes 1 to 3600 seconds');
      }
      const verifier = await startVerifier({
        reference: readReferences(strings(options, 'reference')),
        deviceCa: readCertificates(required(options, 'device-ca'))[0]!,
        secrets,
        listen: typeof options.listen === 'string' ? options.listen : '127.0.0.1:7443',
        nonces: new NonceStore({ ttlMs: ttl * 1000 }),
        ...(typeof options.pcrs === 'string' ? { pcrs: parsePcrList(options.pcrs) } : {}),
        ...(typeof tlsCert === 'string' && typeof tlsKey === 'string'
          ? { tls: { cert: readFileSync(tlsCert), key: readFileSync(tlsKey) } }
          : {}),
        onDecision: (d: Decision) => {
          if (ctx.json) {
            const line = d.released
              ? {
                  released: true,
                  secret: d.secret,
                  product: d.verdict.product,
                  serial: d.verdict.serial,
                  system: d.verdict.system,
                }
              : d;
            process.stdout.write(`${JSON.stringify(line)}\n`);
          } else if (d.released)
            ctx.print(
              `released ${d.secret} to ${d.verdict.product} serial ${d.verdict.serial} (booted "${d.verdict.system}")`,
            );
          else ctx.print(`refused${d.secret ? ` ${d.secret}` : ''}: ${d.message} [${d.code}]`);
        },
      });
      if (ctx.json) process.stdout.write(`${JSON.stringify({ listening: verifier.url })}\n`);
      else ctx.print(`listening on ${verifier.url}`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await verifier.close();
      return 0;
    },
  },
  {
    path: ['attest', 'fetch'],
    summary: 'Attest this device to a verifier service and fetch a secret only its TPM can open',
    args: 'URL NAME OUT',
    arity: [3, 3],
    options: {
      ...tpmOption,
      cert: {
        type: 'string',
        value: 'PEM',
        description: "the identity key's certificate, then intermediates (required)",
      },
      ca: {
        type: 'string',
        value: 'PEM',
        description: "CA certificates the verifier's TLS certificate chains to",
      },
      ...eventLogOption,
    },
    details: 'OUT is written with mode 0600; - writes the secret to standard output.',
    async run(ctx, [url, name, out], options) {
      const certificates = readCertificates(required(options, 'cert')).map((c) => Buffer.from(c.rawData));
      const secret = await withTpm(options, (tpm) =>
        fetchSecret(url!, tpm, name!, {
          certificates,
          ...(typeof options.ca === 'string' ? { ca: readFileSync(options.ca) } : {}),
          ...(typeof options['event-log'] === 'string' ? { eventLogPath: options['event-log'] } : {}),
        }),
      );
      try {
        if (out === '-') process.stdout.write(secret);
        else await writeFileAtomic(out!, secret, 0o600);
      } finally {
        secret.fill(0);
      }
      ctx.result({ secret: name, out, size: secret.length });
      if (out !== '-') ctx.print(`${out}: secret ${name} (${secret.length} bytes)`);
      return 0;
    },
  },
];
