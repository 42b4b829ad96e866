/**
 * The SEV-SNP launch digest: what the PSP computes while the hypervisor adds pages to a guest
 * (SNP_LAUNCH_UPDATE). It starts as 48 zero bytes; each page adds
 * `digest = SHA-384(PAGE_INFO)`, where PAGE_INFO (0x70 bytes, SNP ABI "PAGE_INFO") is
 * `digest ‖ contents ‖ u16 0x70 ‖ u8 page type ‖ u8 is_imi ‖ u8 vmpl3/2/1 perms ‖ u8 0 ‖ u64 gpa`,
 * and `contents` is SHA-384 of the page for NORMAL and VMSA pages, 48 zero bytes otherwise.
 */
import { createHash } from 'node:crypto';

export const PAGE_SIZE = 4096;
export const DIGEST_SIZE = 48;
const PAGE_INFO_SIZE = 0x70;
const ZEROS = Buffer.alloc(DIGEST_SIZE);

/** Page types of SNP_LAUNCH_UPDATE. */
export const PageType = {
  NORMAL: 0x01,
  VMSA: 0x02,
  ZERO: 0x03,
  UNMEASURED: 0x04,
  SECRETS: 0x05,
  CPUID: 0x06,
} as const;

/**
 * The VMSA pages are added at GPA (u64)-1 masked to a page in the low 52 bits, the value the
 * PSP records for them.
 */
export const VMSA_GPA = 0xffff_ffff_f000n;

export class SnpLaunchDigest {
  private digest: Buffer;
  private readonly info = Buffer.alloc(PAGE_INFO_SIZE);

  constructor(seed: Uint8Array = ZEROS) {
    if (seed.length !== DIGEST_SIZE) throw new RangeError(`an SNP launch digest is ${DIGEST_SIZE} bytes`);
    this.digest = Buffer.from(seed);
    this.info.writeUInt16LE(PAGE_INFO_SIZE, 96);
  }

  /** The digest so far (a copy). */
  value(): Buffer {
    return Buffer.from(this.digest);
  }

  private update(pageType: number, gpa: bigint | number, contents: Uint8Array): void {
    const info = this.info;
    this.digest.copy(info, 0);
    info.set(contents, 48);
    info[98] = pageType;
    info.fill(0, 99, 104); // is_imi, vmpl3..1 permissions, reserved
    info.writeBigUInt64LE(BigInt(gpa), 104);
    this.digest = createHash('sha384').update(info).digest();
  }

  /** Pages of `data` (whole pages) added as NORMAL pages from `gpa` on. */
  normalPages(gpa: number, data: Uint8Array): void {
    if (data.length % PAGE_SIZE !== 0) throw new RangeError('NORMAL pages are whole pages');
    for (let off = 0; off < data.length; off += PAGE_SIZE) {
      const page = data.subarray(off, off + PAGE_SIZE);
      this.update(PageType.NORMAL, gpa + off, createHash('sha384').update(page).digest());
    }
  }

  vmsaPage(page: Uint8Array): void {
    if (page.length !== PAGE_SIZE) throw new RangeError('a VMSA is one page');
    this.update(PageType.VMSA, VMSA_GPA, createHash('sha384').update(page).digest());
  }

  zeroPages(gpa: number, length: number): void {
    for (let off = 0; off < length; off += PAGE_SIZE) this.update(PageType.ZERO, gpa + off, ZEROS);
  }

  unmeasuredPages(gpa: number, length: number): void {
    for (let off = 0; off < length; off += PAGE_SIZE) this.update(PageType.UNMEASURED, gpa + off, ZEROS);
  }

  secretsPage(gpa: number): void {
    this.update(PageType.SECRETS, gpa, ZEROS);
  }

  cpuidPage(gpa: number): void {
    this.update(PageType.CPUID, gpa, ZEROS);
  }
}
