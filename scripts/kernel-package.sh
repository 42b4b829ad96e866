#!/usr/bin/env bash
# Fetches (once) the kernel package Seal devices and test VMs boot — bookworm-backports' cloud
# kernel, 6.12 — and prints the path of the .deb (what `seal initrd build --kernel` takes).
# Cache: ${XDG_CACHE_HOME:-~/.cache}/seal/kernel/.
set -euo pipefail
package=${SEAL_VM_KERNEL:-linux-image-6.12.95+deb12-cloud-amd64}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/seal/kernel
mkdir -p "$cache"
found=$(find "$cache" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
if [ -z "$found" ]; then
  work=$(mktemp -d "$cache/.fetch-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download "$package" >/dev/null 2>&1) || {
    echo "kernel-package: cannot download $package (is bookworm-backports configured? run scripts/setup.sh)" >&2
    exit 1
  }
  mv "$work"/*.deb "$cache/"
  found=$(find "$cache" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
fi
echo "$found"
