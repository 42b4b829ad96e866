/**
 * Verification of an SEV-SNP attestation report: the AMD certificate chain (ARK, self-signed
 * RSA-PSS 4096 → ASK or ASVK → VCEK or VLEK, every signature RSASSA-PSS with SHA-384), the
 * report's ECDSA P-384 signature by the VCEK/VLEK, the TCB and chip ID the VCEK was issued for,
 * and the fields a verifier expects (measurement, policy, host data, report data…).
 */
import { createHash, X509Certificate as NodeCertificate, verify as verifySignature } from 'node:crypto';
import { RsaSaPssParams } from '@peculiar/asn1-rsa';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate as Asn1Certificate } from '@peculiar/asn1-x509';
import { CvmError } from './errors.ts';
import { parseSnpReport, type SnpReport, type TcbVersion } from './snp-report.ts';

/** SHA-256 fingerprints of AMD's root keys (ARK) as published by the AMD Key Distribution Service. */
export const AMD_ARK_FINGERPRINTS: Readonly<Record<string, string>> = {
  '69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd': 'ARK-Milan',
  '4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1': 'ARK-Genoa',
  '1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a': 'ARK-Turin',
};

const OID = {
  productName: '1.3.6.1.4.1.3704.1.2',
  blSPL: '1.3.6.1.4.1.3704.1.3.1',
  teeSPL: '1.3.6.1.4.1.3704.1.3.2',
  snpSPL: '1.3.6.1.4.1.3704.1.3.3',
  ucodeSPL: '1.3.6.1.4.1.3704.1.3.8',
  fmcSPL: '1.3.6.1.4.1.3704.1.3.9',
  hwID: '1.3.6.1.4.1.3704.1.4',
};

export interface Certificate {
  name: string;
  der: Buffer;
  /** Node's certificate (OpenSSL): verifies signatures. */
  node: NodeCertificate;
  /** The outer signature algorithm: its OID and, for RSASSA-PSS, its hash and salt length. */
  signature: { oid: string; hashOid?: string; saltLength?: number };
  /** Extensions by OID: the contents of their extnValue. */
  extensions: ReadonlyMap<string, Buffer>;
}

const RSASSA_PSS = '1.2.840.113549.1.1.10';
const SHA384 = '2.16.840.1.101.3.4.2.2';

function parseCertificate(der: Buffer, name: string): Certificate {
  const node = new NodeCertificate(der);
  const asn = AsnConvert.parse(der, Asn1Certificate);
  const alg = asn.signatureAlgorithm;
  const signature: Certificate['signature'] = { oid: alg.algorithm };
  if (alg.algorithm === RSASSA_PSS && alg.parameters) {
    const params = AsnConvert.parse(alg.parameters, RsaSaPssParams);
    signature.hashOid = params.hashAlgorithm.algorithm;
    signature.saltLength = params.saltLength;
  }
  const extensions = new Map<string, Buffer>();
  for (const e of asn.tbsCertificate.extensions ?? [])
    extensions.set(e.extnID, Buffer.from(e.extnValue.buffer));
  return { name, der, node, signature, extensions };
}

/** Reads DER or PEM certificates from bytes (a PEM file may hold several, e.g. AMD's ASK+ARK bundle). */
export function readCertificates(bytes: Uint8Array, name: string): Certificate[] {
  const buf = Buffer.from(bytes);
  const text = buf.toString('latin1');
  const ders = text.includes('-----BEGIN CERTIFICATE-----')
    ? [...text.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g)].map(
        (m) => Buffer.from((m[1] as string).replace(/\s+/g, ''), 'base64'),
      )
    : [buf];
  if (ders.length === 0)
    throw new CvmError('CVM_BAD_CERTIFICATE', `${name}: no certificate in it`, { subject: name });
  return ders.map((der, i) => {
    const label = ders.length > 1 ? `${name}#${i + 1}` : name;
    try {
      return parseCertificate(der, label);
    } catch (cause) {
      throw new CvmError('CVM_BAD_CERTIFICATE', `${label}: not an X.509 certificate`, {
        subject: label,
        cause,
      });
    }
  });
}

function chainError(message: string, subject: string): CvmError {
  return new CvmError('CVM_CHAIN_INVALID', message, { subject });
}

function checkPssSignature(cert: Certificate, issuer: Certificate): void {
  const alg = cert.signature;
  if (alg.oid !== RSASSA_PSS || alg.hashOid !== SHA384 || alg.saltLength !== 48)
    throw chainError(`${cert.name}: signed with ${alg.oid}, not RSASSA-PSS SHA-384 (salt 48)`, cert.name);
  if (cert.node.issuer !== issuer.node.subject)
    throw chainError(
      `${cert.name}: issued by "${oneLine(cert.node.issuer)}", not by ${issuer.name}`,
      cert.name,
    );
  let ok = false;
  try {
    ok = cert.node.verify(issuer.node.publicKey);
  } catch {
    ok = false;
  }
  if (!ok)
    throw chainError(`${cert.name}: its signature does not verify with the key of ${issuer.name}`, cert.name);
}

function checkValidity(cert: Certificate, at: Date): void {
  const from = new Date(cert.node.validFrom);
  const to = new Date(cert.node.validTo);
  if (!(at >= from && at <= to))
    throw chainError(
      `${cert.name}: not valid at ${at.toISOString()} (valid ${from.toISOString()} to ${to.toISOString()})`,
      cert.name,
    );
}

function oneLine(dn: string): string {
  return dn.replace(/\n/g, ', ');
}

export interface ChainOptions {
  /** Accept an ARK that is not one of AMD's (a test or lab root): the caller vouches for it. */
  trustArk?: boolean;
  /** Time the certificates must be valid at (default now). */
  at?: Date;
}

export interface VerifiedChain {
  /** AMD's name for the root (ARK-Milan, ARK-Genoa, ARK-Turin), or "caller-trusted". */
  root: string;
  ark: Certificate;
  ask: Certificate;
  vek: Certificate;
}

/** Verifies ARK → ASK → VCEK/VLEK; returns the endorsement key's certificate. */
export function verifyAmdChain(
  vek: Certificate,
  ask: Certificate,
  ark: Certificate,
  options: ChainOptions = {},
): VerifiedChain {
  const at = options.at ?? new Date();
  const fingerprint = createHash('sha256').update(ark.der).digest('hex');
  const amd = AMD_ARK_FINGERPRINTS[fingerprint];
  if (amd === undefined && !options.trustArk)
    throw chainError(`${ark.name}: not one of AMD's root keys (SHA-256 ${fingerprint})`, ark.name);
  const arkKey = ark.node.publicKey;
  if (arkKey.asymmetricKeyType !== 'rsa' && arkKey.asymmetricKeyType !== 'rsa-pss')
    throw chainError(`${ark.name}: the ARK key is not RSA`, ark.name);
  if (arkKey.asymmetricKeyDetails?.modulusLength !== 4096)
    throw chainError(`${ark.name}: the ARK key is not RSA 4096`, ark.name);
  checkPssSignature(ark, ark);
  checkPssSignature(ask, ark);
  checkPssSignature(vek, ask);
  for (const c of [ark, ask, vek]) checkValidity(c, at);
  const key = vek.node.publicKey;
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1')
    throw chainError(`${vek.name}: the endorsement key is not ECDSA P-384`, vek.name);
  return { root: amd ?? 'caller-trusted', ark, ask, vek };
}

/** The small DER values of AMD's VCEK extensions: INTEGER, IA5String or a raw OCTET STRING. */
function extensionValue(cert: Certificate, oid: string): Buffer | undefined {
  return cert.extensions.get(oid);
}

function extensionInteger(cert: Certificate, oid: string): number | undefined {
  const v = extensionValue(cert, oid);
  if (v === undefined) return undefined;
  if (v.length < 3 || v[0] !== 0x02 || v[1] !== v.length - 2 || v.length > 6)
    throw new CvmError('CVM_BAD_CERTIFICATE', `${cert.name}: extension ${oid} is not a small INTEGER`, {
      subject: cert.name,
    });
  return v.subarray(2).reduce((n, b) => n * 256 + b, 0);
}

/** What an endorsement certificate says about the chip and TCB it was issued for. */
export function endorsementClaims(cert: Certificate): {
  productName?: string;
  hwId?: Buffer;
  tcb: Partial<Record<'bootloader' | 'tee' | 'snp' | 'microcode' | 'fmc', number>>;
} {
  const name = extensionValue(cert, OID.productName);
  const hwId = extensionValue(cert, OID.hwID);
  const tcb: Partial<Record<'bootloader' | 'tee' | 'snp' | 'microcode' | 'fmc', number>> = {};
  for (const [key, oid] of [
    ['bootloader', OID.blSPL],
    ['tee', OID.teeSPL],
    ['snp', OID.snpSPL],
    ['microcode', OID.ucodeSPL],
    ['fmc', OID.fmcSPL],
  ] as const) {
    const v = extensionInteger(cert, oid);
    if (v !== undefined) tcb[key] = v;
  }
  return {
    ...(name && name.length >= 2 && name[0] === 0x16
      ? { productName: name.subarray(2).toString('latin1') }
      : {}),
    ...(hwId ? { hwId } : {}),
    tcb,
  };
}

/** Expected values a verifier compares a report with; absent ones are not compared. */
export interface ReportExpectations {
  measurement?: Uint8Array;
  policy?: bigint;
  hostData?: Uint8Array;
  /** Compared with the report data zero-padded to 64 bytes on the right. */
  reportData?: Uint8Array;
  idKeyDigest?: Uint8Array;
  chipId?: Uint8Array;
  vmpl?: number;
}

export interface ReportVerification {
  report: SnpReport;
  /** Undefined when no endorsement key was given: the signature was then not checked. */
  chain?: VerifiedChain;
  signatureVerified: boolean;
  /** Names of the expectations compared (all equal, or verification would have failed). */
  compared: string[];
}

function mismatch(field: string, got: string, want: string, subject: string): CvmError {
  return new CvmError('CVM_REPORT_MISMATCH', `${subject}: ${field} is ${got}, expected ${want}`, { subject });
}

function checkTcb(report: SnpReport, vek: Certificate, name: string): void {
  const claims = endorsementClaims(vek);
  const reported: TcbVersion = report.reportedTcb;
  for (const [key, value] of Object.entries(claims.tcb) as [keyof TcbVersion, number][]) {
    if (key === 'fmc' && reported.fmc === undefined) continue;
    if (reported[key] !== value)
      throw mismatch(
        `reported TCB ${key} level`,
        String(reported[key]),
        `${value} (the ${vek.name} was issued for it)`,
        name,
      );
  }
  if (
    claims.hwId !== undefined &&
    report.signingKey === 'vcek' &&
    !report.maskChipKey &&
    !claims.hwId.equals(report.chipId)
  )
    throw mismatch(
      'chip ID',
      report.chipId.toString('hex'),
      `${claims.hwId.toString('hex')} (${vek.name})`,
      name,
    );
}

/**
 * Parses and verifies a report. With `vek` (and `ask`, `ark`) the chain and signature are
 * verified; expectations are compared either way.
 */
export function verifySnpReport(
  bytes: Uint8Array,
  options: {
    name?: string;
    vek?: Certificate;
    ask?: Certificate;
    ark?: Certificate;
    chain?: ChainOptions;
    expect?: ReportExpectations;
  } = {},
): ReportVerification {
  const name = options.name ?? 'report';
  const report = parseSnpReport(bytes, name);
  let chain: VerifiedChain | undefined;
  if (options.vek !== undefined) {
    if (options.ask === undefined || options.ark === undefined)
      throw new CvmError('CVM_INVALID_OPTION', 'verifying a report needs the ASK and the ARK with the VCEK');
    if (report.signingKey === 'none')
      throw new CvmError('CVM_REPORT_SIGNATURE', `${name}: the report says it is not signed`, {
        subject: name,
      });
    chain = verifyAmdChain(options.vek, options.ask, options.ark, options.chain);
    const signature = Buffer.concat([report.signature.r, report.signature.s]);
    let ok = false;
    try {
      ok = verifySignature(
        'sha384',
        report.signed,
        { key: options.vek.node.publicKey, dsaEncoding: 'ieee-p1363' },
        signature,
      );
    } catch {
      ok = false;
    }
    if (!ok)
      throw new CvmError(
        'CVM_REPORT_SIGNATURE',
        `${name}: the signature does not verify with ${options.vek.name}`,
        {
          subject: name,
        },
      );
    checkTcb(report, options.vek, name);
  }
  const compared: string[] = [];
  const e = options.expect ?? {};
  const bytesEqual = (field: string, got: Buffer, want: Uint8Array | undefined, pad = false) => {
    if (want === undefined) return;
    const w =
      pad && want.length < got.length
        ? Buffer.concat([want, Buffer.alloc(got.length - want.length)])
        : Buffer.from(want);
    if (!w.equals(got)) throw mismatch(field, got.toString('hex'), w.toString('hex'), name);
    compared.push(field);
  };
  bytesEqual('measurement', report.measurement, e.measurement);
  if (e.policy !== undefined) {
    if (report.policy.raw !== e.policy)
      throw mismatch('policy', `0x${report.policy.raw.toString(16)}`, `0x${e.policy.toString(16)}`, name);
    compared.push('policy');
  }
  bytesEqual('host data', report.hostData, e.hostData);
  bytesEqual('report data', report.reportData, e.reportData, true);
  bytesEqual('ID key digest', report.idKeyDigest, e.idKeyDigest);
  bytesEqual('chip ID', report.chipId, e.chipId);
  if (e.vmpl !== undefined) {
    if (report.vmpl !== e.vmpl) throw mismatch('VMPL', String(report.vmpl), String(e.vmpl), name);
    compared.push('VMPL');
  }
  return { report, ...(chain ? { chain } : {}), signatureVerified: chain !== undefined, compared };
}
