/**
 * PCR prediction for a Seal boot (OVMF-style UEFI firmware, optionally systemd-boot, a UKI on
 * systemd-stub): the events that firmware and stub measure into PCRs 4, 7 and 11, from the
 * artifacts alone, for any bank.
 *   PCR 4: EV_EFI_ACTION "Calling EFI Application from Boot Option", EV_SEPARATOR, then
 *     EV_EFI_BOOT_SERVICES_APPLICATION with the Authenticode digest of each image the firmware
 *     loads: the boot manager, the UKI, and — when Secure Boot is off — the embedded kernel, which
 *     the stub hands to the firmware's LoadImage.
 *   PCR 7: EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db, dbx (empty when absent),
 *     EV_SEPARATOR, then (Secure Boot on) EV_EFI_VARIABLE_AUTHORITY with each distinct db entry
 *     that admitted an image.
 *   PCR 11: the stub's measurements of the UKI sections it knows, in its order: H(name ‖ NUL),
 *     then H(section contents); optionally the phase words systemd extends later.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  encodeSignatureData,
  encodeVariableData,
  GUIDS,
  type SecureBootState,
  secureBootState,
  Varstore,
} from '../efi/index.ts';
import { authenticodeDigests, PeImage, sectionSource, withPeImage } from '../pe/index.ts';
import { type Bank, digest, extend, zeros } from './banks.ts';
import { MeasureError } from './errors.ts';
import { EV, eventTypeName } from './events.ts';

/** The sections systemd-stub measures, in its order, by the version that introduced the list. */
const STUB_SECTIONS: [fromVersion: number, sections: string[]][] = [
  [254, ['.linux', '.osrel', '.cmdline', '.initrd', '.splash', '.dtb', '.uname', '.sbat', '.pcrpkey']],
  [0, ['.linux', '.osrel', '.cmdline', '.initrd', '.splash', '.dtb', '.pcrpkey']],
];
/**
 * Stubs start the kernel with the firmware's LoadImage, which measures it into PCR 4 — unless
 * Secure Boot is on, when the stub's security override admits the kernel without the firmware's
 * handlers (seen in qemu with OVMF on systemd 252 and 254).
 */
const STUB_LOADS_KERNEL_IMAGE = 252;
export const PHASES = ['enter-initrd', 'leave-initrd', 'sysinit', 'ready', 'shutdown', 'final'] as const;
export const CALLING_EFI_APPLICATION = 'Calling EFI Application from Boot Option';

export interface PredictedEvent {
  pcr: number;
  type: string;
  description: string;
  /** What is hashed (the event's data for variable events, or the digest that is extended). */
  digests: Partial<Record<Bank, Buffer>>;
  /** The event's data, for events whose digests are its hash (variables, separators, actions, names). */
  data?: Buffer;
}

export interface PcrPrediction {
  banks: Bank[];
  pcrs: number[];
  /** PCR values by bank and index. */
  values: Partial<Record<Bank, Record<number, Buffer>>>;
  events: PredictedEvent[];
  secureBoot: boolean;
  /** The stub's systemd version, as its .sdmagic says. */
  stubVersion: number | undefined;
  warnings: string[];
}

export interface PredictOptions {
  uki: string;
  /** A boot manager (systemd-boot) the firmware starts first, which then loads the UKI. */
  bootManager?: string;
  /** The varstore the firmware boots with (Secure Boot state and keys). */
  varstore?: string | Varstore;
  banks?: Bank[];
  pcrs?: number[];
  /** Phase words systemd extends into PCR 11 after the stub (`enter-initrd`, …). */
  phases?: string[];
}

/** The systemd version of a stub, from its `.sdmagic` LoaderInfo string. */
export function stubVersion(image: PeImage): number | undefined {
  const section = image.section('.sdmagic');
  if (!section || section.virtualSize > 4096) return undefined;
  const m = /systemd-stub (\d+)/.exec(image.sectionData(section).toString('latin1'));
  return m ? Number(m[1]) : undefined;
}

/** The sections a stub of `version` measures, in order. */
export function measuredSections(version: number | undefined): string[] {
  return (STUB_SECTIONS.find(([from]) => (version ?? 254) >= from) ?? STUB_SECTIONS[0]!)[1];
}

class Recorder {
  readonly events: PredictedEvent[] = [];
  readonly banks: Bank[];
  constructor(banks: Bank[]) {
    this.banks = banks;
  }

  /** An event whose digest is the hash of `data`. */
  data(pcr: number, type: number, data: Uint8Array, description: string): void {
    this.events.push({
      pcr,
      type: eventTypeName(type),
      description,
      digests: Object.fromEntries(this.banks.map((b) => [b, digest(b, data)])),
      data: Buffer.from(data),
    });
  }

  /** An event whose digest is given per bank (an Authenticode digest, a section hash). */
  digest(pcr: number, type: number, digests: Partial<Record<Bank, Buffer>>, description: string): void {
    this.events.push({ pcr, type: eventTypeName(type), description, digests });
  }
}

/** The UKI sections' measurements as systemd-stub makes them (PCR 11). */
export function sectionMeasurements(
  image: PeImage,
  banks: Bank[],
  version: number | undefined,
): PredictedEvent[] {
  const recorder = new Recorder(banks);
  for (const name of measuredSections(version)) {
    const section = image.section(name);
    if (!section) continue;
    recorder.data(11, EV.IPL, Buffer.from(`${name}\0`, 'latin1'), name);
    const hashes = banks.map((b) => ({ b, h: createHash(b) }));
    for (const chunk of image.sectionChunks(section)) for (const { h } of hashes) h.update(chunk);
    recorder.digest(
      11,
      EV.IPL,
      Object.fromEntries(hashes.map(({ b, h }) => [b, h.digest()])),
      `${name} contents (${section.virtualSize} bytes)`,
    );
  }
  return recorder.events;
}

function loadVarstore(input: string | Varstore | undefined): Varstore | undefined {
  if (input === undefined || input instanceof Varstore) return input;
  return Varstore.parse(readFileSync(input), input);
}

/**
 * Predicts PCRs 4, 7 and 11 (or `pcrs`) for booting `uki` with `varstore`. Only what the asked
 * PCRs need is computed: PCR 11 alone hashes the UKI's sections and nothing else.
 */
export async function predictPcrs(options: PredictOptions): Promise<PcrPrediction> {
  const banks = options.banks ?? ['sha256'];
  const pcrs = options.pcrs ?? [4, 7, 11];
  const warnings: string[] = [];
  const varstore = loadVarstore(options.varstore);
  let state: SecureBootState | undefined;
  if (varstore) {
    state = secureBootState(varstore);
    if (!state.enabled)
      warnings.push(
        `${varstore.subject} is not Secure Boot enabled (${state.setupMode ? 'no PK: setup mode' : 'SecureBootEnable is off'}): the firmware checks no signature and measures no db authority`,
      );
  } else {
    warnings.push(
      'no varstore given: predicting for a firmware without Secure Boot keys (PK, KEK, db, dbx absent)',
    );
  }
  const secureBoot = state?.enabled ?? false;
  for (const phase of options.phases ?? [])
    if (!(PHASES as readonly string[]).includes(phase))
      throw new MeasureError(
        'MEASURE_INVALID_OPTION',
        `unknown boot phase ${JSON.stringify(phase)} (known: ${PHASES.join(', ')})`,
      );

  const recorder = new Recorder(banks);
  // PCR 7: the Secure Boot policy, then the separator.
  const variable = (name: string, guid: string, data: Buffer) =>
    recorder.data(
      7,
      EV.EFI_VARIABLE_DRIVER_CONFIG,
      encodeVariableData(name, guid, data),
      `${name} (${data.length} bytes)`,
    );
  variable('SecureBoot', GUIDS.globalVariable, Buffer.of(secureBoot ? 1 : 0));
  variable('PK', GUIDS.globalVariable, state?.data.PK ?? Buffer.alloc(0));
  variable('KEK', GUIDS.globalVariable, state?.data.KEK ?? Buffer.alloc(0));
  variable('db', GUIDS.imageSecurityDatabase, state?.data.db ?? Buffer.alloc(0));
  variable('dbx', GUIDS.imageSecurityDatabase, state?.data.dbx ?? Buffer.alloc(0));
  recorder.data(7, EV.SEPARATOR, Buffer.alloc(4), 'separator');
  // PCR 4: the boot attempt and the separator.
  recorder.data(4, EV.EFI_ACTION, Buffer.from(CALLING_EFI_APPLICATION, 'latin1'), CALLING_EFI_APPLICATION);
  recorder.data(4, EV.SEPARATOR, Buffer.alloc(4), 'separator');

  const authorities = new Set<string>();
  const wants = (pcr: number) => pcrs.includes(pcr);
  // The firmware's verdict (CMS and X.509: loaded only when Secure Boot makes it matter).
  const verdictOf =
    secureBoot && state && (wants(4) || wants(7))
      ? (await import('../pki/secure-boot.ts')).firmwareVerdict
      : undefined;
  const load = (image: PeImage, what: string) => {
    if (verdictOf && state) {
      const verdict = verdictOf(image, state.db, state.dbx);
      if (!verdict.allowed)
        throw new MeasureError(
          'MEASURE_INVALID_OPTION',
          `the firmware would refuse ${what} ${image.name}: ${verdict.reason}`,
        );
      const data = encodeSignatureData(verdict.authority!);
      const key = data.toString('hex');
      if (!authorities.has(key)) {
        authorities.add(key);
        recorder.data(
          7,
          EV.EFI_VARIABLE_AUTHORITY,
          encodeVariableData('db', GUIDS.imageSecurityDatabase, data),
          `db entry that admitted ${what} (${verdict.reason})`,
        );
      }
    }
    if (wants(4))
      recorder.digest(
        4,
        EV.EFI_BOOT_SERVICES_APPLICATION,
        authenticodeDigests(image, banks, { pad: false }),
        `${what} ${image.name}`,
      );
  };
  if (options.bootManager) withPeImage(options.bootManager, (image) => load(image, 'the boot manager'));
  let version: number | undefined;
  withPeImage(options.uki, (image) => {
    load(image, 'the UKI');
    version = stubVersion(image);
    if (version === undefined)
      warnings.push(`${options.uki}: no systemd-stub version in .sdmagic; assuming systemd 254`);
    const linux = image.section('.linux');
    if (!linux)
      throw new MeasureError('MEASURE_INVALID_OPTION', `${options.uki} has no .linux section: not a UKI`);
    if (wants(4) && !secureBoot && (version ?? 254) >= STUB_LOADS_KERNEL_IMAGE) {
      // The kernel, loaded through the firmware from the UKI's memory, is measured like any image.
      const kernel = PeImage.fromSource(sectionSource(image, linux));
      try {
        recorder.digest(
          4,
          EV.EFI_BOOT_SERVICES_APPLICATION,
          authenticodeDigests(kernel, banks, { pad: false }),
          `the kernel (${options.uki} .linux)`,
        );
      } finally {
        kernel.close();
      }
    }
    if (wants(11)) for (const e of sectionMeasurements(image, banks, version)) recorder.events.push(e);
  });
  for (const phase of options.phases ?? [])
    recorder.data(11, EV.IPL, Buffer.from(phase, 'utf8'), `phase ${phase}`);

  const values: PcrPrediction['values'] = {};
  for (const bank of banks) {
    const pcrValues: Record<number, Buffer> = {};
    for (const pcr of pcrs) pcrValues[pcr] = zeros(bank);
    for (const e of recorder.events) {
      if (!pcrs.includes(e.pcr)) continue;
      pcrValues[e.pcr] = extend(bank, pcrValues[e.pcr]!, e.digests[bank]!);
    }
    values[bank] = pcrValues;
  }
  return {
    banks,
    pcrs,
    values,
    events: recorder.events.filter((e) => pcrs.includes(e.pcr)),
    secureBoot,
    stubVersion: version,
    warnings,
  };
}
