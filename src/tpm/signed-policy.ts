/**
 * The signed policy file: what a product's policy-signing key approves for one boot image —
 * PolicyPCR(PCR 7 of that image) ∧ PolicyNV(policy version == N) — in a self-describing JSON
 * document that ships inside the initrd. A device replays its policy commands in a policy
 * session and shows the TPM the signature (TPM2_VerifySignature → ticket → PolicyAuthorize).
 *
 *   {
 *     "type": "seal-tpm-signed-policy",
 *     "format": 1,
 *     "role": "production" | "management",
 *     "policyVersion": N,
 *     "hash": "sha256",
 *     "policy": [
 *       { "command": "PolicyPCR", "bank": "sha256", "pcrs": { "7": "<hex PCR value>" } },
 *       { "command": "PolicyNV", "index": "0x01500020", "name": "<hex NV Name>",
 *         "operandB": "<hex, 8 bytes: N>", "offset": 0, "operation": "eq" }
 *     ],
 *     "approvedPolicy": "<hex: the policy digest of the steps above>",
 *     "policyRef": "<hex: empty for production, 'seal:management' for management>",
 *     "signingKey": { "publicKey": "<PEM SubjectPublicKeyInfo>", "name": "<hex TPM Name>" },
 *     "signature": "<hex TPMT_SIGNATURE over SHA-256(approvedPolicy ‖ policyRef)>"
 *   }
 *
 * The signing key's TPM public area is the one TPM2_LoadExternal (and tpm2_loadexternal) builds
 * from the PEM key (`externalPublic`); `name` is its Name, stated for readers and checked.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { EO, OPERATIONS, type Operation } from './constants.ts';
import { TpmError } from './errors.ts';
import { digestSize, HASHES, type HashName, hash } from './hash.ts';
import { POLICY_REF, type PolicyRole, VERSION_INDEX, versionName, versionOperand } from './layout.ts';
import { marshal, Reader } from './marshal.ts';
import { authorizeMessage, PolicyBuilder } from './policy.ts';
import {
  objectName,
  type PcrSelection,
  type PublicArea,
  readSignature,
  type Signature,
  writeSignature,
} from './structures.ts';
import { externalPublic, signForTpm, verifyTpmSignature } from './templates.ts';

export const POLICY_FILE_TYPE = 'seal-tpm-signed-policy';

export interface PolicyPcrStep {
  command: 'PolicyPCR';
  bank: HashName;
  /** PCR index → value, in ascending PCR order. */
  pcrs: [number, Buffer][];
}

export interface PolicyNvStep {
  command: 'PolicyNV';
  index: number;
  name: Buffer;
  operandB: Buffer;
  offset: number;
  operation: Operation;
}

export interface SignedPolicy {
  role: PolicyRole;
  policyVersion: number;
  hash: 'sha256';
  pcr: PolicyPcrStep;
  nv: PolicyNvStep;
  approvedPolicy: Buffer;
  policyRef: Buffer;
  signingKey: { pem: string; public: PublicArea; name: Buffer };
  signature: Signature;
}

export function pcrSelectionOf(step: PolicyPcrStep): PcrSelection[] {
  return [{ hash: step.bank, pcrs: step.pcrs.map(([pcr]) => pcr) }];
}

/** PolicyPCR's pcrDigest for the step's values (policy hash SHA-256). */
export function pcrDigestOf(step: PolicyPcrStep): Buffer {
  return hash('sha256', ...step.pcrs.map(([, v]) => v));
}

/** The policy digest the steps produce: what `approvedPolicy` must be. */
export function computeApproved(p: Pick<SignedPolicy, 'pcr' | 'nv'>): Buffer {
  return new PolicyBuilder('sha256')
    .pcr(pcrSelectionOf(p.pcr), pcrDigestOf(p.pcr))
    .nv(p.nv.name, p.nv.operandB, p.nv.offset, p.nv.operation).digest;
}

export interface SignPolicyOptions {
  /** The product's policy-signing private key (ECDSA P-256/P-384 or RSA). */
  key: KeyObject;
  role: PolicyRole;
  /** The policy version N the TPM's version index must hold. */
  version: number;
  /** The PCR values the boot image yields: by default just PCR 7 of the SHA-256 bank. */
  pcrs: [number, Buffer][];
  bank?: HashName;
}

export function signPolicy(options: SignPolicyOptions): SignedPolicy {
  const bank = options.bank ?? 'sha256';
  if (!Number.isSafeInteger(options.version) || options.version < 1)
    throw new TpmError('TPM_INVALID_ARGUMENT', `policy version ${options.version} is not a whole number ≥ 1`);
  if (options.pcrs.length === 0)
    throw new TpmError('TPM_INVALID_ARGUMENT', 'a signed policy needs PCR values');
  for (const [pcr, value] of options.pcrs) {
    if (!Number.isInteger(pcr) || pcr < 0 || pcr > 23)
      throw new TpmError('TPM_INVALID_ARGUMENT', `PCR ${pcr} is not 0-23`);
    if (value.length !== digestSize(bank))
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        `a ${bank} PCR value is ${digestSize(bank)} bytes, not ${value.length}`,
        {
          subject: value.toString('hex'),
        },
      );
  }
  const pcr: PolicyPcrStep = {
    command: 'PolicyPCR',
    bank,
    pcrs: [...options.pcrs].sort((a, b) => a[0] - b[0]),
  };
  const nv: PolicyNvStep = {
    command: 'PolicyNV',
    index: VERSION_INDEX,
    name: versionName(),
    operandB: versionOperand(options.version),
    offset: 0,
    operation: 'eq',
  };
  const approvedPolicy = computeApproved({ pcr, nv });
  const policyRef = POLICY_REF[options.role];
  const pem = createPublicKey(options.key).export({ type: 'spki', format: 'pem' }) as string;
  const pub = externalPublic(createPublicKey(options.key));
  return {
    role: options.role,
    policyVersion: options.version,
    hash: 'sha256',
    pcr,
    nv,
    approvedPolicy,
    policyRef,
    signingKey: { pem, public: pub, name: objectName(pub) },
    signature: signForTpm(options.key, authorizeMessage(approvedPolicy, policyRef)),
  };
}

export function serializePolicy(p: SignedPolicy): string {
  const doc = {
    type: POLICY_FILE_TYPE,
    format: 1,
    role: p.role,
    policyVersion: p.policyVersion,
    hash: p.hash,
    policy: [
      {
        command: 'PolicyPCR',
        bank: p.pcr.bank,
        pcrs: Object.fromEntries(p.pcr.pcrs.map(([n, v]) => [String(n), v.toString('hex')])),
      },
      {
        command: 'PolicyNV',
        index: `0x${p.nv.index.toString(16).padStart(8, '0')}`,
        name: p.nv.name.toString('hex'),
        operandB: p.nv.operandB.toString('hex'),
        offset: p.nv.offset,
        operation: p.nv.operation,
      },
    ],
    approvedPolicy: p.approvedPolicy.toString('hex'),
    policyRef: p.policyRef.toString('hex'),
    signingKey: { publicKey: p.signingKey.pem, name: p.signingKey.name.toString('hex') },
    signature: marshal((w) => writeSignature(w, p.signature)).toString('hex'),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** The largest policy file read (a few KiB with an RSA-4096 key). */
export const MAX_POLICY_FILE = 64 * 1024;

/** Parses a signed policy file; anything malformed is TPM_POLICY_FILE naming the field. Semantics are the TPM's to judge. */
export function parsePolicy(text: string | Buffer, subject = 'signed policy'): SignedPolicy {
  const bad = (why: string): never => {
    throw new TpmError('TPM_POLICY_FILE', `${subject}: ${why}`, { subject });
  };
  if (text.length > MAX_POLICY_FILE) bad(`larger than ${MAX_POLICY_FILE} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text.toString());
  } catch (error) {
    return bad(`not JSON (${(error as Error).message})`);
  }
  const obj = (v: unknown, field: string): Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : bad(`${field} is not an object`);
  const str = (v: unknown, field: string): string =>
    typeof v === 'string' ? v : bad(`${field} is not a string`);
  const hex = (v: unknown, field: string, size?: number): Buffer => {
    const s = str(v, field);
    if (!/^([0-9a-f]{2})*$/.test(s)) bad(`${field} is not lowercase hex`);
    const b = Buffer.from(s, 'hex');
    if (size !== undefined && b.length !== size) bad(`${field} is ${b.length} bytes, not ${size}`);
    return b;
  };
  const int = (v: unknown, field: string, min: number, max: number): number =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max
      ? v
      : bad(`${field} is not a whole number in ${min}-${max}`);
  const top = obj(doc, 'the document');
  if (top.type !== POLICY_FILE_TYPE) bad(`type is not "${POLICY_FILE_TYPE}"`);
  if (top.format !== 1) bad(`format ${JSON.stringify(top.format)} is not 1`);
  const role = str(top.role, 'role') as PolicyRole;
  if (role !== 'production' && role !== 'management') bad('role is neither production nor management');
  const policyVersion = int(top.policyVersion, 'policyVersion', 1, Number.MAX_SAFE_INTEGER);
  if (top.hash !== 'sha256') bad('hash is not sha256');
  if (!Array.isArray(top.policy) || top.policy.length !== 2) bad('policy is not [PolicyPCR, PolicyNV]');
  const steps = top.policy as unknown[];
  const pcrDoc = obj(steps[0], 'policy[0]');
  if (pcrDoc.command !== 'PolicyPCR') bad('policy[0] is not PolicyPCR');
  const bank = str(pcrDoc.bank, 'policy[0].bank') as HashName;
  if (!HASHES.includes(bank)) bad(`policy[0].bank ${bank} is not one of ${HASHES.join(', ')}`);
  const pcrEntries = Object.entries(obj(pcrDoc.pcrs, 'policy[0].pcrs'));
  if (pcrEntries.length === 0 || pcrEntries.length > 24) bad('policy[0].pcrs names no PCR');
  const pcrs: [number, Buffer][] = pcrEntries.map(([k, v]) => {
    if (!/^(0|[1-9]\d?)$/.test(k) || Number(k) > 23) bad(`policy[0].pcrs has PCR ${JSON.stringify(k)}`);
    return [Number(k), hex(v, `policy[0].pcrs.${k}`, digestSize(bank))];
  });
  pcrs.sort((a, b) => a[0] - b[0]);
  const nvDoc = obj(steps[1], 'policy[1]');
  if (nvDoc.command !== 'PolicyNV') bad('policy[1] is not PolicyNV');
  const indexText = str(nvDoc.index, 'policy[1].index');
  if (!/^0x01[0-9a-f]{6}$/.test(indexText))
    bad(`policy[1].index ${indexText} is not an NV index (0x01xxxxxx)`);
  const operation = str(nvDoc.operation, 'policy[1].operation') as Operation;
  if (!OPERATIONS.includes(operation)) bad(`policy[1].operation is not one of ${Object.keys(EO).join(', ')}`);
  const nv: PolicyNvStep = {
    command: 'PolicyNV',
    index: Number.parseInt(indexText.slice(2), 16),
    name: hex(nvDoc.name, 'policy[1].name'),
    operandB: hex(nvDoc.operandB, 'policy[1].operandB'),
    offset: int(nvDoc.offset, 'policy[1].offset', 0, 0xffff),
    operation,
  };
  if (nv.name.length !== 34 || nv.name.readUInt16BE(0) !== 0x000b)
    bad('policy[1].name is not a SHA-256 Name');
  if (nv.operandB.length === 0 || nv.operandB.length > 64) bad('policy[1].operandB is empty or too long');
  const approvedPolicy = hex(top.approvedPolicy, 'approvedPolicy', 32);
  const policyRef = hex(top.policyRef, 'policyRef');
  if (policyRef.length > 64) bad('policyRef is longer than 64 bytes');
  const keyDoc = obj(top.signingKey, 'signingKey');
  const pem = str(keyDoc.publicKey, 'signingKey.publicKey');
  let pub: PublicArea;
  try {
    pub = externalPublic(createPublicKey({ key: pem, format: 'pem' }));
  } catch (error) {
    return bad(`signingKey.publicKey is not a usable public key (${(error as Error).message})`);
  }
  const name = hex(keyDoc.name, 'signingKey.name');
  if (!name.equals(objectName(pub))) bad('signingKey.name is not the Name of signingKey.publicKey');
  const sigBytes = hex(top.signature, 'signature');
  let signature: Signature;
  try {
    const r = new Reader(sigBytes, 'signature');
    signature = readSignature(r);
    r.end();
  } catch (error) {
    return bad(`signature is not a TPMT_SIGNATURE (${(error as Error).message})`);
  }
  return {
    role,
    policyVersion,
    hash: 'sha256',
    pcr: { command: 'PolicyPCR', bank, pcrs },
    nv,
    approvedPolicy,
    policyRef,
    signingKey: { pem, public: pub, name },
    signature,
  };
}

export interface PolicyCheck {
  /** approvedPolicy is the digest of the steps. */
  consistent: boolean;
  /** The signature verifies with signingKey over approvedPolicy ‖ policyRef. */
  signatureValid: boolean;
  /** policyRef is the role's, operandB is policyVersion, the NV step names the version index. */
  wellFormed: boolean;
  problems: string[];
}

/** Checks a policy offline (for `seal tpm policy show` and for explaining a TPM's refusal). */
export function checkPolicy(p: SignedPolicy): PolicyCheck {
  const problems: string[] = [];
  const consistent = computeApproved(p).equals(p.approvedPolicy);
  if (!consistent) problems.push('approvedPolicy is not the digest of the PolicyPCR and PolicyNV steps');
  const signatureValid = verifyTpmSignature(
    createPublicKey(p.signingKey.pem),
    authorizeMessage(p.approvedPolicy, p.policyRef),
    p.signature,
  );
  if (!signatureValid) problems.push('the signature does not verify with signingKey');
  let wellFormed = true;
  if (!p.policyRef.equals(POLICY_REF[p.role])) {
    wellFormed = false;
    problems.push(`policyRef is not the ${p.role} role's`);
  }
  if (
    p.nv.index !== VERSION_INDEX ||
    !p.nv.operandB.equals(versionOperand(p.policyVersion)) ||
    p.nv.operation !== 'eq' ||
    p.nv.offset !== 0
  ) {
    wellFormed = false;
    problems.push(`the PolicyNV step is not "version index == ${p.policyVersion}"`);
  }
  return { consistent, signatureValid, wellFormed, problems };
}
