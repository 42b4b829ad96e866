#!/usr/bin/env bash
# Seal's main job, end to end, on a real Debian root filesystem:
#   build the root filesystem (cached), import it into a store as an OCI image, inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
seal() { ./bin/seal "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=${SEAL_DEMO_DIR:-$PWD/.work/demo}
rm -rf "$work"
mkdir -p "$work"
export SEAL_STORE="$work/store"

step "Debian 12 minimal root filesystem (debootstrap, cached)"
rootfs=$(bash scripts/corpus.sh)
echo "$rootfs: $(find "$rootfs" | wc -l) entries, $(du -sh "$rootfs" | cut -f1)"

step "Import it as an OCI image into the store $SEAL_STORE"
seal image import "dir:$rootfs" debian:bookworm

step "Inspect it"
seal image inspect debian:bookworm
seal image ls

step "Check the store"
seal store fsck

echo
echo "demo: done"
