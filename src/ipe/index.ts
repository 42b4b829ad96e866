/** IPE policies: what the kernel lets the system execute, by where it comes from. */
export {
  IPE_OPERATIONS,
  IPE_TRUST,
  IpeError,
  type IpeOperation,
  type IpePolicyOptions,
  type IpeTrust,
  ipePolicy,
  signIpePolicy,
} from './policy.ts';
