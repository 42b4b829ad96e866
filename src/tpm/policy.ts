/**
 * Offline policy calculation (Part 3, the policy commands' "policyDigest update" rules): what a
 * trial session's TPM2_PolicyGetDigest would return, computed without a TPM, for the policy
 * commands Seal uses and their compositions. Bit-identical to the TPM and to tpm2-tools.
 */
import { CC, EO, type Operation } from './constants.ts';
import { TpmError } from './errors.ts';
import { digestSize, type HashName, hash } from './hash.ts';
import { type PcrSelection, pcrSelectionBytes, sortedSelections } from './structures.ts';

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** The pcrDigest of PolicyPCR: H_policy of the selected PCR values, banks in order, PCRs ascending. */
export function pcrDigest(policyHash: HashName, values: Uint8Array[]): Buffer {
  return hash(policyHash, ...values);
}

/** PolicyNV's argument hash: H(operandB ‖ offset ‖ operation). */
export function nvArgsHash(
  policyHash: HashName,
  operandB: Uint8Array,
  offset: number,
  operation: Operation,
): Buffer {
  return hash(policyHash, operandB, u16(offset), u16(EO[operation]));
}

/** A policy digest under construction; every method applies one policy command and returns `this`. */
export class PolicyBuilder {
  readonly hash: HashName;
  digest: Buffer;

  constructor(policyHash: HashName = 'sha256', start?: Uint8Array) {
    this.hash = policyHash;
    this.digest = start ? Buffer.from(start) : Buffer.alloc(digestSize(policyHash));
    if (this.digest.length !== digestSize(policyHash))
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        `a ${policyHash} policy digest is ${digestSize(policyHash)} bytes`,
      );
  }

  #extend(...parts: Uint8Array[]): this {
    this.digest = hash(this.hash, this.digest, ...parts);
    return this;
  }

  /** PolicyUpdate(cc, arg2, arg3): H(H(digest ‖ cc ‖ arg2) ‖ arg3). */
  #update(cc: number, name: Uint8Array, ref: Uint8Array): this {
    this.#extend(u32(cc), name);
    return this.#extend(ref);
  }

  #reset(): void {
    this.digest = Buffer.alloc(digestSize(this.hash));
  }

  /** PolicyPCR with the digest of the selected PCR values (see `pcrDigest`). */
  pcr(selections: PcrSelection[], digestOfValues: Uint8Array): this {
    if (digestOfValues.length !== digestSize(this.hash))
      throw new TpmError(
        'TPM_INVALID_ARGUMENT',
        `a PolicyPCR digest for a ${this.hash} policy is ${digestSize(this.hash)} bytes`,
      );
    return this.#extend(u32(CC.PolicyPCR), pcrSelectionBytes(sortedSelections(selections)), digestOfValues);
  }

  /** PolicyPCR from the PCR values themselves, in selection order (banks as given, PCRs ascending). */
  pcrValues(selections: PcrSelection[], values: Uint8Array[]): this {
    return this.pcr(selections, pcrDigest(this.hash, values));
  }

  nv(nvName: Uint8Array, operandB: Uint8Array, offset = 0, operation: Operation = 'eq'): this {
    return this.#extend(u32(CC.PolicyNV), nvArgsHash(this.hash, operandB, offset, operation), nvName);
  }

  /** PolicyAuthorize: the digest becomes H(H(0 ‖ cc ‖ keyName) ‖ policyRef) whatever came before. */
  authorize(keyName: Uint8Array, policyRef: Uint8Array = Buffer.alloc(0)): this {
    this.#reset();
    return this.#update(CC.PolicyAuthorize, keyName, policyRef);
  }

  /** PolicyAuthorizeNV: the digest becomes H(0 ‖ cc ‖ nvName). */
  authorizeNV(nvName: Uint8Array): this {
    this.#reset();
    return this.#extend(u32(CC.PolicyAuthorizeNV), nvName);
  }

  /** PolicyOR of 2 to 8 branch digests: H(0 ‖ cc ‖ d1 ‖ … ‖ dn). */
  or(digests: Uint8Array[]): this {
    if (digests.length < 2 || digests.length > 8)
      throw new TpmError('TPM_INVALID_ARGUMENT', `PolicyOR takes 2 to 8 digests, not ${digests.length}`);
    for (const d of digests)
      if (d.length !== digestSize(this.hash))
        throw new TpmError(
          'TPM_INVALID_ARGUMENT',
          `PolicyOR branch of ${d.length} bytes in a ${this.hash} policy`,
        );
    this.#reset();
    return this.#extend(u32(CC.PolicyOR), ...digests);
  }

  commandCode(code: number): this {
    return this.#extend(u32(CC.PolicyCommandCode), u32(code));
  }

  /** PolicySecret: PolicyUpdate with the authorizing entity's Name. */
  secret(authName: Uint8Array, policyRef: Uint8Array = Buffer.alloc(0)): this {
    return this.#update(CC.PolicySecret, authName, policyRef);
  }

  /** PolicySigned: PolicyUpdate with the signing key's Name. */
  signed(keyName: Uint8Array, policyRef: Uint8Array = Buffer.alloc(0)): this {
    return this.#update(CC.PolicySigned, keyName, policyRef);
  }

  /** PolicyAuthValue; PolicyPassword extends the same command code. */
  authValue(): this {
    return this.#extend(u32(CC.PolicyAuthValue));
  }

  password(): this {
    return this.authValue();
  }

  cpHash(cpHashA: Uint8Array): this {
    return this.#extend(u32(CC.PolicyCpHash), cpHashA);
  }

  locality(locality: number): this {
    return this.#extend(u32(CC.PolicyLocality), Buffer.from([locality]));
  }

  nvWritten(written: boolean): this {
    return this.#extend(u32(CC.PolicyNvWritten), Buffer.from([written ? 1 : 0]));
  }
}

export function policy(policyHash: HashName = 'sha256'): PolicyBuilder {
  return new PolicyBuilder(policyHash);
}

/** The message a policy-signing key signs to approve `approvedPolicy` for PolicyAuthorize: aHash's input. */
export function authorizeMessage(
  approvedPolicy: Uint8Array,
  policyRef: Uint8Array = Buffer.alloc(0),
): Buffer {
  return Buffer.concat([approvedPolicy, policyRef]);
}
