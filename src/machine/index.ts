/** Running Seal systems: the software TPM (and, as it lands, the VM launcher and installer). */

export {
  OVMF_CODE,
  OVMF_CODE_SECURE_BOOT,
  OVMF_VARS,
  type QemuOptions,
  type QemuResult,
  qemuArguments,
  runQemu,
} from './qemu.ts';
export { MachineError, type MachineErrorCode, Swtpm, type SwtpmOptions } from './swtpm.ts';
