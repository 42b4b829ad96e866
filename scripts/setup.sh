#!/usr/bin/env bash
# Installs what Seal, its tests and its demo need, idempotently, saying what it installs:
# Debian packages for the interoperability tools the tests compare against, and npm packages
# (including the pinned Node.js runtime).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the test suite and demo run against (reference readers/writers, registries, VMs).
DEBIAN_PACKAGES=(
  attr            # getfattr/setfattr: xattrs of directory trees
  cryptsetup-bin  # veritysetup: dm-verity reference
  debootstrap     # builds the Debian corpus root filesystem
  docker-registry # a real OCI registry for tests
  erofs-utils     # mkfs.erofs / fsck.erofs
  fsverity        # fs-verity digest reference
  lz4 lzop xz-utils zstd
  skopeo umoci    # OCI image interoperability
  squashfs-tools  # mksquashfs / unsquashfs
  apache2-utils   # htpasswd for registry auth tests
  openssl
  time            # GNU time: the memory-budget tests read a child's peak resident set (%M)
  busybox-static  # the test VM's shell
  e2fsprogs       # mkfs.ext4 -O verity for fs-verity in the test VM
  keyutils        # keyctl: certificates into the test VM's .fs-verity keyring, dm-verity signatures
  g++ make python3 # node-gyp builds the addons (native/)
  libdeflate-dev liblzma-dev liblzo2-dev # the codecs addon: squashfs gzip, xz and LZO
  # The device side: Secure Boot firmware and a software TPM for the VM tests, the reference
  # tools the UKI, Secure Boot and TPM code is checked against, and what the device agent calls.
  ovmf            # OVMF_CODE_4M.secboot.fd / OVMF_VARS_4M.fd
  swtpm swtpm-tools tpm2-tools
  strace          # the TPM tests check at the system-call level that unlock writes no secret anywhere
  sbsigntool osslsigncode efitools binutils # sbsign/sbverify, Authenticode, EFI signature lists, objcopy
  crun            # OCI containers on the device
  dosfstools mtools fdisk # FAT and GPT for device disks
  kmod cpio       # modinfo and cpio: the initrd's modules and contents checked against them
  socat           # seal machine --registry: relays each guest connection to the registry on 127.0.0.1
  time            # /usr/bin/time: the memory bound of the UKI builder's test
)
# blockhash's multi-buffer engine: Intel's library hashes many verity blocks at once on each core
# (x86-64 only; without it the addon hashes one block at a time with OpenSSL).
[ "$(dpkg --print-architecture)" = amd64 ] && DEBIAN_PACKAGES+=(libipsec-mb-dev)
# From bookworm-backports: qemu 10 (bookworm's 7.2 crashed 2 of 8 TCG boots of the test kernel;
# 10.0 booted 16 of 16) and systemd 254's UEFI stub and boot manager.
BACKPORTS_PACKAGES=(qemu-system-x86 qemu-system-data qemu-system-common systemd-boot-efi)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# The test VM boots bookworm-backports' kernel (6.12: overlayfs data-only layers with verity=).
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "setup: adding the bookworm-backports apt source (for the test VM's kernel)"
  echo 'deb http://deb.debian.org/debian bookworm-backports main' | "${sudo_cmd[@]}" tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  "${sudo_cmd[@]}" apt-get update -qq
fi

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stale_backports=()
for pkg in "${BACKPORTS_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null | grep -q 'install ok installed .*bpo' ||
    stale_backports+=("$pkg")
done
if [ ${#stale_backports[@]} -gt 0 ]; then
  echo "setup: installing from bookworm-backports: ${stale_backports[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports "${stale_backports[@]}" >/dev/null
fi

if [ ! -x node_modules/node/bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
  [ package.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages, including Node.js $(node -p 'require("./package.json").devDependencies.node')"
  # npm install, not npm ci: npm here writes lockfiles without other platforms' optional
  # packages (biome's), which npm ci then refuses; install honours the lockfile all the same.
  npm install --no-audit --no-fund --loglevel=error
fi

# The addons (native/*.c: block hashing, xz/LZO codecs, the filesystem and init system calls Node lacks), built
# against the Node-API headers npm is set to use (Debian's nodejs ships them in /usr/include/node).
stale=false
for addon in blockhash codecs fsops system; do
  built=build/Release/$addon.node
  if [ ! -f "$built" ] || [ -n "$(find native binding.gyp -newer "$built")" ]; then stale=true; fi
done
if $stale; then
  echo "setup: building the native addons"
  nodedir=$(npm config get nodedir 2>/dev/null || true)
  [ -n "$nodedir" ] && [ "$nodedir" != "undefined" ] || nodedir=/usr
  PATH="$PWD/node_modules/.bin:$PATH" node-gyp rebuild --nodedir="$nodedir" --loglevel=error >/dev/null
fi
