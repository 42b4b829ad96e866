/** Running Seal systems: the software TPM, qemu, the machines of `seal machine`, and the installer. */

export { ConsoleText, type FollowOptions, followFile, safeText } from './console.ts';
export {
  ATTEST_GUEST_ADDRESS,
  type CreateOptions,
  checkName,
  FILES as MACHINE_FILES,
  Machine,
  type MachineConfig,
  type MachineFile,
  type MachineStatus,
  machinesRoot,
  parseConfig as parseMachineConfig,
  REGISTRY_GUEST_ADDRESS,
  removeMachine,
  type StartOptions,
  type StopResult,
} from './machines.ts';
export {
  OVMF_CODE,
  OVMF_CODE_SECURE_BOOT,
  OVMF_VARS,
  type QemuOptions,
  type QemuResult,
  qemuArguments,
  runQemu,
  type UserNetwork,
} from './qemu.ts';
export { Qmp } from './qmp.ts';
export { MachineError, type MachineErrorCode, Swtpm, type SwtpmOptions } from './swtpm.ts';
