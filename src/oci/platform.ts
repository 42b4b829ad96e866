import { arch } from 'node:os';

/** Node's names for CPU architectures, as OCI (GOARCH) spells them. */
const GO_ARCH: Record<string, string> = {
  x64: 'amd64',
  ia32: '386',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

/** This machine's architecture in OCI platform terms (`amd64`, `arm64`, …). */
export function hostArchitecture(): string {
  return GO_ARCH[arch()] ?? arch();
}
