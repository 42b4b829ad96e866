/** The device runtime: the agent that boots a Seal device as PID 1, and the initrd that carries it. */
export { type AgentParameters, parseCommandLine } from './cmdline.ts';
export { AgentError, type AgentErrorCode } from './errors.ts';
export { AGENT_PROGRAMS, buildInitrd, type InitrdOptions, type InitrdResult } from './initrd.ts';
export type { BootRecord, StepRecord } from './log.ts';
export { AGENT_MODULES, type KernelModule, resolveModules } from './modules.ts';
