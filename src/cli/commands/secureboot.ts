import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GUID_NAMES, GUIDS, type SignatureEntry, Varstore, variableTime } from '../../efi/index.ts';
import { UsageError } from '../../errors.ts';
import { parseKeyType } from '../../pki/index.ts';
import {
  createSecureBootKeys,
  type DatabaseEntry,
  enrollVarstoreFile,
  secureBootState,
  signedVariableUpdate,
} from '../../uki/index.ts';
import { writeFileAtomic } from '../../util/atomic.ts';
import type { Command } from '../command.ts';
import { integerOption } from '../options.ts';
import { readCertificates, signerOptions, signerSpecs } from './uki.ts';

/** `--db` values: a certificate file, or `sha256:HEX` (an image digest). */
function databaseEntries(values: unknown, name: string): DatabaseEntry[] {
  const list = (values as string[] | undefined) ?? [];
  return list.flatMap((value): DatabaseEntry[] => {
    const m = /^sha256:([0-9a-fA-F]{64})$/.exec(value);
    if (m) return [{ sha256: Buffer.from(m[1]!, 'hex') }];
    if (value.startsWith('sha256:')) throw new UsageError(`--${name} sha256: takes 64 hex digits`);
    return readCertificates(value).map((certificate) => ({ certificate }));
  });
}

function dateOption(value: unknown, name: string): Date | undefined {
  if (value === undefined) return undefined;
  const date = new Date(String(value));
  if (Number.isNaN(date.getTime()))
    throw new UsageError(`--${name} takes a date (ISO 8601), not ${JSON.stringify(value)}`);
  return date;
}

function describeEntry(e: SignatureEntry): Record<string, string> {
  const base = { type: GUID_NAMES[e.type] ?? e.type, owner: e.owner };
  if (e.type !== GUIDS.certX509) return { ...base, digest: e.data.toString('hex') };
  try {
    const cert = new X509Certificate(e.data);
    return {
      ...base,
      subject: cert.subject.replace(/\n/g, ', '),
      issuer: cert.issuer.replace(/\n/g, ', '),
      notAfter: cert.validTo,
    };
  } catch {
    return { ...base, error: 'the certificate does not decode' };
  }
}

export const secureBootCommands: Command[] = [
  {
    path: ['secureboot', 'keys'],
    summary: 'Create Secure Boot PK, KEK and db keys and self-signed certificates in DIR',
    args: 'DIR',
    arity: [1, 1],
    options: {
      'key-type': {
        type: 'string',
        value: 'rsa-2048|rsa-3072|rsa-4096|ecdsa-p256|ecdsa-p384',
        description: 'key algorithm (default rsa-2048, what every firmware takes)',
      },
      name: { type: 'string', value: 'NAME', description: 'the common-name prefix (default "Seal")' },
      days: { type: 'string', value: 'N', description: 'validity in days (default 10950)' },
      'passphrase-file': {
        type: 'string',
        value: 'FILE',
        description: 'encrypt the keys with this passphrase',
      },
    },
    details: 'Writes PK, KEK and db as NAME.key (PKCS#8), NAME.crt (PEM) and NAME.der; never overwrites.',
    async run(ctx, [dir], options) {
      const files = await createSecureBootKeys(dir!, {
        keyType: parseKeyType((options['key-type'] as string | undefined) ?? 'rsa-2048'),
        commonName: options.name as string | undefined,
        days: integerOption(options.days, 'days'),
        passphrase:
          typeof options['passphrase-file'] === 'string'
            ? readFileSync(options['passphrase-file'], 'utf8').split('\n')[0]
            : undefined,
      });
      ctx.result(files);
      for (const f of files) ctx.print(`${f.name}: ${f.certificate} (${f.subject}), key ${f.key}`);
      return 0;
    },
  },
  {
    path: ['secureboot', 'enroll'],
    summary: 'Write PK, KEK, db and dbx into an OVMF varstore and enable Secure Boot',
    args: 'VARS_IN VARS_OUT',
    arity: [2, 2],
    options: {
      pk: { type: 'string', value: 'CERT', description: 'the platform key certificate (required)' },
      kek: {
        type: 'string',
        multiple: true,
        value: 'CERT',
        description: 'a key exchange key certificate (required)',
      },
      db: {
        type: 'string',
        multiple: true,
        value: 'CERT|sha256:HEX',
        description: 'a db entry: a certificate, or an image digest (required)',
      },
      dbx: { type: 'string', multiple: true, value: 'CERT|sha256:HEX', description: 'a dbx entry' },
      owner: { type: 'string', value: 'GUID', description: 'the owner GUID of the entries' },
      time: {
        type: 'string',
        value: 'DATE',
        description: "the variables' timestamp (default 2020-01-01, reproducible)",
      },
    },
    details: "VARS_IN is e.g. Debian's /usr/share/OVMF/OVMF_VARS_4M.fd; its other variables are kept.",
    async run(ctx, [input, output], options) {
      if (typeof options.pk !== 'string' || !options.kek || !options.db)
        throw new UsageError('--pk, --kek and --db are required');
      const state = await enrollVarstoreFile(input!, output!, {
        pk: readCertificates(options.pk),
        kek: (options.kek as string[]).flatMap(readCertificates),
        db: databaseEntries(options.db, 'db'),
        dbx: databaseEntries(options.dbx, 'dbx'),
        owner: options.owner as string | undefined,
        time: dateOption(options.time, 'time'),
      });
      const summary = {
        output,
        secureBoot: state.enabled,
        pk: state.pk.length,
        kek: state.kek.length,
        db: state.db.length,
        dbx: state.dbx.length,
      };
      ctx.result(summary);
      ctx.print(
        `${output}: Secure Boot ${state.enabled ? 'enabled' : 'NOT enabled'}; PK ${state.pk.length}, KEK ${state.kek.length}, db ${state.db.length}, dbx ${state.dbx.length} entries`,
      );
      return 0;
    },
  },
  {
    path: ['secureboot', 'list'],
    summary: 'List the variables of an OVMF varstore and the entries of PK, KEK, db and dbx',
    args: 'VARS',
    arity: [1, 1],
    async run(ctx, [path], _options) {
      const varstore = Varstore.parse(readFileSync(path!), path!);
      const state = secureBootState(varstore);
      const variables = varstore.variables().map((v) => ({
        name: v.name,
        guid: v.guid,
        attributes: v.attributes,
        size: v.data.length,
        ...(variableTime(v) ? { time: variableTime(v)!.toISOString() } : {}),
      }));
      const keys = {
        PK: state.pk.map(describeEntry),
        KEK: state.kek.map(describeEntry),
        db: state.db.map(describeEntry),
        dbx: state.dbx.map(describeEntry),
      };
      ctx.result({ secureBoot: state.enabled, setupMode: state.setupMode, variables, keys });
      ctx.print(
        `Secure Boot: ${state.enabled ? 'enabled' : state.setupMode ? 'off (setup mode: no PK)' : 'off'}`,
      );
      for (const v of variables)
        ctx.print(
          `${v.name.padEnd(24)} ${(GUID_NAMES[v.guid] ?? v.guid).padEnd(36)} attr 0x${v.attributes.toString(16).padStart(2, '0')} ${String(v.size).padStart(6)} bytes${v.time ? `  ${v.time}` : ''}`,
        );
      for (const [name, entries] of Object.entries(keys))
        for (const e of entries)
          ctx.print(
            `${name}: ${e.type}${e.subject ? ` ${e.subject}` : ''}${e.digest ? ` ${e.digest}` : ''} (owner ${e.owner})`,
          );
      return 0;
    },
  },
  {
    path: ['secureboot', 'auth'],
    summary: 'Sign an update of PK, KEK, db or dbx (a .auth payload, as sign-efi-sig-list makes)',
    args: 'VAR OUT',
    arity: [2, 2],
    options: {
      ...signerSpecs,
      add: {
        type: 'string',
        multiple: true,
        value: 'CERT|sha256:HEX',
        description: 'an entry of the new value (required)',
      },
      append: { type: 'boolean', description: 'add to the variable instead of replacing it' },
      time: { type: 'string', value: 'DATE', description: 'the timestamp (default: now)' },
      owner: { type: 'string', value: 'GUID', description: 'the owner GUID of the entries' },
    },
    details:
      'VAR is PK, KEK, db or dbx. PK and KEK updates are signed with the PK key, db and dbx updates with a KEK key. Write the result with efi-updatevar, or to efivarfs after the 4-byte attributes.',
    async run(ctx, [name, output], options) {
      if (!['PK', 'KEK', 'db', 'dbx'].includes(name!)) throw new UsageError('VAR is PK, KEK, db or dbx');
      const entries = databaseEntries(options.add, 'add');
      if (entries.length === 0) throw new UsageError('--add is required');
      const signer = signerOptions(options);
      const payload = signedVariableUpdate({
        name: name!,
        entries,
        append: options.append === true,
        time: dateOption(options.time, 'time'),
        owner: options.owner as string | undefined,
        key: signer.key,
        certificate: signer.certificates[0]!,
      });
      await writeFileAtomic(output!, payload);
      ctx.result({ output, variable: name, entries: entries.length, size: payload.length });
      ctx.print(
        `${output}: signed ${options.append ? 'append to' : 'new value of'} ${name} (${entries.length} entries, ${payload.length} bytes)`,
      );
      return 0;
    },
  },
];
