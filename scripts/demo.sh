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

step "Unpack it again and compare with the original (contents, owners, modes, xattrs)"
seal image unpack debian:bookworm "$work/unpacked"
describe() { # type, mode, owner, mtime, link target, device, xattrs and content hash of every entry
  (cd "$1" && find . -printf '%p %y %m %U:%G %T@ %l\n' | LC_ALL=C sort &&
    find . -type f -exec sha256sum {} + | LC_ALL=C sort -k2 &&
    find . \( -type c -o -type b \) -exec stat -c '%n %t:%T' {} + | LC_ALL=C sort &&
    getfattr -R -d -m - -e hex --absolute-names . 2>/dev/null)
}
if cmp -s <(describe "$rootfs") <(describe "$work/unpacked"); then
  echo "identical: $(describe "$rootfs" | wc -l) lines of metadata, contents and xattrs compared"
else
  echo "the unpacked tree differs from the original" >&2
  exit 1
fi

step "Write it as a squashfs image (zstd) and list it like unsquashfs -lln"
seal squashfs create debian:bookworm "$work/debian.sqfs" --compression zstd
seal squashfs ls "$work/debian.sqfs" | head -5
echo "..."

step "Append its dm-verity tree (the stacker/atomfs layout) and verify it; then flip one byte"
seal verity format "$work/debian.sqfs" --append --salt - | tee "$work/verity.txt"
root=$(sed -n 's/^Root hash:[[:space:]]*//p' "$work/verity.txt")
offset=$(sed -n 's/^Hash offset:[[:space:]]*//p' "$work/verity.txt")
seal verity verify "$work/debian.sqfs" "$work/debian.sqfs" "$root" --hash-offset "$offset"
veritysetup verify "$work/debian.sqfs" "$work/debian.sqfs" "$root" --hash-offset "$offset" && echo "veritysetup agrees"
printf '\x00' | dd of="$work/debian.sqfs" bs=1 seek=5000000 conv=notrunc status=none
if seal verity verify "$work/debian.sqfs" "$work/debian.sqfs" "$root" --hash-offset "$offset"; then
  echo "tampering went unnoticed" >&2
  exit 1
fi
echo "tampering caught"

step "Seal the image: every layer a squashfs image with its dm-verity tree (stacker/atomfs layout)"
seal image seal debian:bookworm debian:sealed --compression zstd
seal image verify debian:sealed

step "Check the store"
seal store fsck

echo
echo "demo: done"
