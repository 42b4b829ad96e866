/**
 * The device's side of an attestation: a quote of its PCRs by the TPM-resident identity key with
 * the verifier's nonce, the firmware's event log and the identity certificate chain, made into an
 * evidence document — and, when a secret is to be released to it, a binding key:
 *
 *   a restricted decryption key created in the TPM under the storage root key (the identity
 *   key's parent), whose policy is PolicyPCR over the PCR values being quoted, certified by the
 *   identity key with the same nonce (TPM2_Certify). The verifier protects a credential with it
 *   for the identity key's Name (TPM2_MakeCredential, offline); TPM2_ActivateCredential gives it
 *   back only in this TPM, only while the PCRs still hold the attested values.
 */
import { readFile } from 'node:fs/promises';
import { type Bank, DIGEST_SIZES } from '../measure/index.ts';
import {
  type AuthSession,
  bindingTemplate,
  type HashName,
  hash,
  IDENTITY_HANDLE,
  identityPublic,
  type PcrSelection,
  type PublicArea,
  pinnedSaltKey,
  policy,
  quoteIdentity,
  SRK_HANDLE,
  type Tpm,
  TpmError,
} from '../tpm/index.ts';
import { AttestError } from './errors.ts';
import { type EvidenceParts, encodeEvidence } from './evidence.ts';

/** Where Linux exposes the firmware's TCG2 event log (securityfs). */
export const EVENT_LOG_PATH = '/sys/kernel/security/tpm0/binary_bios_measurements';

/**
 * The PCRs quoted by default: the firmware's (0-7), the boot loader's and the kernel's initrd
 * measurements (8, 9) and the UKI's (11). PCR 10 is IMA's, explained by IMA's own log, not the
 * firmware's: quote it with `pcrs` when wanted.
 */
export const DEFAULT_QUOTE_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11];

export interface QuoteOptions {
  /** The verifier's nonce (1 to 64 bytes). */
  nonce: Uint8Array;
  pcrs?: number[];
  bank?: Bank;
  /** The event log's bytes; default read from `eventLogPath`. */
  eventLog?: Uint8Array;
  eventLogPath?: string;
  /** The identity key's certificate (DER), then intermediates. */
  certificates: Uint8Array[];
  /** Also create and certify a binding key (kept loaded: release it with `binding.release()`). */
  bind?: boolean;
  /** The storage root key's Name, as provisioning recorded it: a different key is refused. */
  storageKeyName?: Buffer;
}

/** A loaded binding key, usable for ActivateCredential while the PCRs hold `values`. */
export interface BindingKey {
  handle: number;
  public: PublicArea;
  name: Buffer;
  selection: PcrSelection[];
  pcrDigest: Buffer;
  /** Flushes it from the TPM. */
  release(): Promise<void>;
}

export interface Quoted {
  /** The evidence document (JSON text). */
  evidence: string;
  parts: EvidenceParts;
  binding?: BindingKey;
}

async function readEventLog(options: QuoteOptions): Promise<Uint8Array> {
  if (options.eventLog) return options.eventLog;
  const path = options.eventLogPath ?? EVENT_LOG_PATH;
  try {
    return await readFile(path);
  } catch (error) {
    throw new AttestError(
      'ATTEST_EVENT_LOG',
      `cannot read the event log ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}${path === EVENT_LOG_PATH ? ' (is securityfs mounted?)' : ''}`,
      { subject: path, cause: error },
    );
  }
}

async function pcrValues(tpm: Tpm, bank: HashName, pcrs: number[]): Promise<Map<number, Buffer>> {
  const values = await tpm.pcrRead([{ hash: bank, pcrs }]);
  return new Map(values.map((v) => [v.pcr, v.value]));
}

function digestOf(bank: HashName, pcrs: number[], values: Map<number, Buffer>): Buffer {
  return hash(bank, ...pcrs.map((p) => values.get(p)!));
}

/** Quotes the PCRs and assembles the evidence (with a binding key when asked). */
export async function quoteEvidence(tpm: Tpm, options: QuoteOptions): Promise<Quoted> {
  const bank = options.bank ?? 'sha256';
  if (bank !== 'sha256' && options.bind)
    throw new AttestError('ATTEST_INVALID_OPTION', 'a binding key is bound to sha256 PCR values');
  const pcrs = [...new Set(options.pcrs ?? DEFAULT_QUOTE_PCRS)].sort((a, b) => a - b);
  if (pcrs.length === 0 || pcrs.some((p) => !Number.isInteger(p) || p < 0 || p > 23))
    throw new AttestError('ATTEST_INVALID_OPTION', `PCRs ${pcrs.join(',')}: PCRs are 0 to 23`);
  const nonce = Buffer.from(options.nonce);
  if (nonce.length === 0 || nonce.length > 64)
    throw new AttestError('ATTEST_INVALID_OPTION', `a nonce is 1 to 64 bytes, not ${nonce.length}`);
  if (options.certificates.length === 0)
    throw new AttestError('ATTEST_INVALID_OPTION', "the identity key's certificate is needed");
  const eventLog = await readEventLog(options);
  const identity = await identityPublic(tpm);
  if (!identity)
    throw new TpmError(
      'TPM_NOT_PROVISIONED',
      'the TPM has no identity key to quote with (seal tpm identity create, then seal pki device new --public-key)',
    );
  const selection: PcrSelection[] = [{ hash: bank, pcrs }];
  // The PCRs may move between reading and quoting (an extend by another process): try again.
  for (let attempt = 1; ; attempt++) {
    const values = await pcrValues(tpm, bank, pcrs);
    const expected = digestOf(bank, pcrs, values);
    let binding:
      | (BindingKey & { parentQualifiedName: Buffer; certify: Awaited<ReturnType<Tpm['certify']>> })
      | undefined;
    try {
      if (options.bind)
        binding = await createBinding(tpm, selection, expected, nonce, options.storageKeyName);
      const quote = await quoteIdentity(tpm, nonce, selection);
      if (!quote.attest.quote?.pcrDigest.equals(expected) || expected.length !== DIGEST_SIZES[bank]) {
        await binding?.release();
        if (attempt < 3) continue;
        throw new AttestError('ATTEST_PCR_VALUES', 'the PCRs kept changing while they were quoted');
      }
      const parts: EvidenceParts = {
        nonce,
        attestationKey: identity.public,
        quote: { attestBytes: quote.attestBytes, signature: quote.signature },
        bank,
        pcrs: values,
        eventLog,
        certificates: options.certificates,
        ...(binding
          ? {
              binding: {
                public: binding.public,
                parentQualifiedName: binding.parentQualifiedName,
                certify: { attestBytes: binding.certify.attestBytes, signature: binding.certify.signature },
              },
            }
          : {}),
      };
      return {
        evidence: encodeEvidence(parts),
        parts,
        ...(binding
          ? {
              binding: {
                handle: binding.handle,
                public: binding.public,
                name: binding.name,
                selection,
                pcrDigest: expected,
                release: binding.release,
              },
            }
          : {}),
      };
    } catch (error) {
      await binding?.release().catch(() => {});
      throw error;
    }
  }
}

/** Creates, loads and certifies the binding key for the PCR values `pcrDigest` of `selection`. */
async function createBinding(
  tpm: Tpm,
  selection: PcrSelection[],
  pcrDigest: Buffer,
  nonce: Buffer,
  storageKeyName: Buffer | undefined,
) {
  const srk = await pinnedSaltKey(tpm, storageKeyName);
  if (srk.transient) {
    await tpm.flushContext(srk.handle).catch(() => {});
    throw new TpmError(
      'TPM_NOT_PROVISIONED',
      `the TPM has no storage root key at 0x${SRK_HANDLE.toString(16)}`,
    );
  }
  const { qualifiedName: parentQualifiedName } = await tpm.readPublic(SRK_HANDLE);
  const authPolicy = policy('sha256').pcr(selection, pcrDigest).digest;
  const created = await tpm.create(SRK_HANDLE, bindingTemplate(authPolicy));
  const loaded = await tpm.load(SRK_HANDLE, created.private, created.public);
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await tpm.flushContext(loaded.handle);
  };
  try {
    const certify = await tpm.certify(loaded.handle, IDENTITY_HANDLE, { qualifyingData: nonce });
    return {
      handle: loaded.handle,
      public: loaded.public,
      name: loaded.name,
      selection,
      pcrDigest,
      parentQualifiedName,
      certify,
      release,
    };
  } catch (error) {
    await release().catch(() => {});
    throw error;
  }
}

/**
 * TPM2_ActivateCredential with the identity key and a binding key: the credential back, when
 * the PCRs still hold the values the binding key is bound to. The policy session is salted with
 * the storage root key and encrypts the response, so the credential never crosses the bus in clear.
 */
export async function activateWithBinding(
  tpm: Tpm,
  binding: BindingKey,
  credentialBlob: Uint8Array,
  secret: Uint8Array,
  storageKeyName?: Buffer,
): Promise<Buffer> {
  const salt = await pinnedSaltKey(tpm, storageKeyName);
  let session: AuthSession | undefined;
  try {
    session = (await tpm.startAuthSession({ type: 'policy', salt })).encrypting({ encrypt: true });
    await tpm.policyPCR(session, binding.selection, binding.pcrDigest);
    return await tpm.activateCredential(IDENTITY_HANDLE, binding.handle, credentialBlob, secret, {
      keyAuth: { session },
    });
  } finally {
    if (session) await tpm.flushSession(session).catch(() => {});
    if (salt.transient) await tpm.flushContext(salt.handle).catch(() => {});
  }
}
