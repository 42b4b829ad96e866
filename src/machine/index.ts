/** Running Seal systems: the software TPM (and, as it lands, the VM launcher and installer). */
export { MachineError, type MachineErrorCode, Swtpm, type SwtpmOptions } from './swtpm.ts';
