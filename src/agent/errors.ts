import { SealError } from '../errors.ts';

export type AgentErrorCode =
  /** A kernel package or module that cannot be used. */
  | 'AGENT_KERNEL'
  /** An initrd that cannot be built from what was given. */
  | 'AGENT_INITRD'
  /** A `seal.*` kernel command-line parameter that is malformed. */
  | 'AGENT_CMDLINE'
  /** The device's disk or one of its partitions is missing or malformed. */
  | 'AGENT_DISK'
  /** A program the agent runs (cryptsetup, veritysetup, crun, mke2fs) failed. */
  | 'AGENT_TOOL'
  /** A boot step failed: the step is named in the message. */
  | 'AGENT_BOOT'
  /** A service could not be started or supervised. */
  | 'AGENT_SERVICE'
  /** An update that cannot be applied on this device (named in the message). */
  | 'AGENT_UPDATE'
  /** A pushed update that is not what `seal push` sends (seal.push). */
  | 'AGENT_PUSH';

/** Failures of the device agent and of building its initrd. */
export class AgentError extends SealError<AgentErrorCode> {}
