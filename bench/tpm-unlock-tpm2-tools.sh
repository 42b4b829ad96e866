#!/usr/bin/env bash
# The device unlock of Seal's EA design done with tpm2-tools, for bench/tpm.ts: one salted,
# parameter-encrypted policy session (bound to the storage key at 0x81000001), the signed
# policy's ticket, then for each secret PolicyPCR(7) ∧ PolicyNV(version == N) ∧ PolicyAuthorize
# and an NV read, then the PCR 7 lock. Every input is a file the benchmark prepared in WORKDIR;
# the secrets go to WORKDIR/secret-*. TPM2TOOLS_TCTI names the TPM; SEAL_UNLOCK_INDICES the NV
# indices to read (default: device certificate, device key, LUKS passphrase). Runs under bash and
# under busybox sh (bench/boot's reference initrd).
#   tpm-unlock-tpm2-tools.sh WORKDIR
set -euo pipefail
cd "$1"
tpm2_startauthsession --policy-session -S session.ctx -c 0x81000001
tpm2_loadexternal -Q -C o -G ecc -u policy-key.pem -c key.ctx -n key.name
tpm2_verifysignature -Q -c key.ctx -g sha256 -m approved.bin -s signature.bin -t verified.tkt
tpm2_flushcontext -t
for index in ${SEAL_UNLOCK_INDICES:-0x01500021 0x01500022 0x01500040}; do
  tpm2_policypcr -Q -S session.ctx -l sha256:7 -f pcr7.bin
  tpm2_policynv -Q -S session.ctx -i version.bin 0x01500020 eq
  tpm2_policyauthorize -Q -S session.ctx -i approved.bin -n key.name -t verified.tkt
  tpm2_nvread -Q -P session:session.ctx -o "secret-$index" "$index"
done
tpm2_pcrextend "7:sha256=$(cat lock.hex)"
tpm2_flushcontext session.ctx
