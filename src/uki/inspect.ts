/**
 * What a UKI (or any PE image) holds: its sections with their SHA-256, the texts of .osrel,
 * .cmdline, .uname and .sbat, the stub's version, every signature (signer, digest, whether it is
 * intact) and the PCR 11 value systemd-stub will produce from it.
 */
import { createHash } from 'node:crypto';
import {
  type Bank,
  extend,
  measuredSections,
  sectionMeasurements,
  stubVersion,
  zeros,
} from '../measure/index.ts';
import { authenticodeDigest, imageChecksum, PeImage } from '../pe/index.ts';
import { tryReadAuthenticodeSignatures } from '../pki/authenticode.ts';

export interface InspectedSection {
  name: string;
  virtualAddress: number;
  virtualSize: number;
  fileOffset: number;
  sizeOfRawData: number;
  sha256: string;
  /** Whether the stub measures it into PCR 11. */
  measured: boolean;
}

export interface InspectedSignature {
  index: number;
  /** Whether the signature is well formed and its signer's signature verifies. */
  valid: boolean;
  /** Whether the digest it states is the image's (only for valid signatures). */
  matchesImage?: boolean;
  error?: string;
  signer?: string;
  issuer?: string;
  serialNumber?: string;
  algorithm?: string;
  digest?: string;
  signingTime?: string;
}

export interface UkiInspection {
  path: string;
  size: number;
  checksum: { stored: number; computed: number };
  authenticode: { sha256: string };
  stubVersion?: number;
  sections: InspectedSection[];
  osRelease?: string;
  cmdline?: string;
  uname?: string;
  sbat?: string;
  signatures: InspectedSignature[];
  /** PCR 11 after the stub's measurements, per bank (UKIs only). */
  pcr11?: Partial<Record<Bank, string>>;
}

const TEXT_SECTIONS = {
  '.osrel': 'osRelease',
  '.cmdline': 'cmdline',
  '.uname': 'uname',
  '.sbat': 'sbat',
} as const;

export function inspectUki(path: string, options: { banks?: Bank[] } = {}): UkiInspection {
  const banks = options.banks ?? ['sha256'];
  const image = PeImage.open(path);
  try {
    const version = stubVersion(image);
    const isUki = image.section('.linux') !== undefined;
    const measured = new Set(isUki ? measuredSections(version) : []);
    const sections = image.sections.map((s): InspectedSection => {
      const h = createHash('sha256');
      for (const chunk of image.sectionChunks(s)) h.update(chunk);
      return {
        name: s.name,
        virtualAddress: s.virtualAddress,
        virtualSize: s.virtualSize,
        fileOffset: s.pointerToRawData,
        sizeOfRawData: s.sizeOfRawData,
        sha256: h.digest('hex'),
        measured: measured.has(s.name),
      };
    });
    const result: UkiInspection = {
      path,
      size: image.size,
      checksum: { stored: image.headers.checkSum, computed: imageChecksum(image) },
      authenticode: { sha256: authenticodeDigest(image, 'sha256').toString('hex') },
      ...(version !== undefined ? { stubVersion: version } : {}),
      sections,
      signatures: [],
    };
    for (const [name, key] of Object.entries(TEXT_SECTIONS)) {
      const s = image.section(name);
      if (s && s.virtualSize <= 1 << 20)
        result[key] = image.sectionData(s).toString('utf8').replace(/\0+$/, '');
    }
    const digests = new Map<string, Buffer>();
    for (const s of tryReadAuthenticodeSignatures(image)) {
      if (s instanceof Error) {
        result.signatures.push({ index: result.signatures.length + 1, valid: false, error: s.message });
        continue;
      }
      if (!digests.has(s.algorithm)) digests.set(s.algorithm, authenticodeDigest(image, s.algorithm));
      result.signatures.push({
        index: s.index,
        valid: true,
        matchesImage: digests.get(s.algorithm)!.equals(s.signedDigest),
        signer: s.signer.subject.replace(/\n/g, ', '),
        issuer: s.signer.issuer.replace(/\n/g, ', '),
        serialNumber: s.signer.serialNumber.toLowerCase(),
        algorithm: s.algorithm,
        digest: s.signedDigest.toString('hex'),
        ...(s.signingTime ? { signingTime: s.signingTime.toISOString() } : {}),
      });
    }
    if (isUki) {
      const pcr11: Partial<Record<Bank, string>> = {};
      const events = sectionMeasurements(image, banks, version);
      for (const bank of banks) {
        let value = zeros(bank);
        for (const e of events) value = extend(bank, value, e.digests[bank]!);
        pcr11[bank] = value.toString('hex');
      }
      result.pcr11 = pcr11;
    }
    return result;
  } finally {
    image.close();
  }
}
