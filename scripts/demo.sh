#!/usr/bin/env bash
# Seal's main job, end to end, on a real Debian root filesystem:
#   build the root filesystem (cached), import it into a store as an OCI image, inspect it,
#   write it as squashfs, EROFS and composefs, seal it in all three formats, catch tampering.
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

step "Write it as an EROFS image (fsck.erofs agrees) and as composefs (image + object store)"
seal erofs create debian:bookworm "$work/debian.erofs"
fsck.erofs "$work/debian.erofs" && echo "fsck.erofs agrees"
seal erofs ls "$work/debian.erofs" | head -3
seal composefs create debian:bookworm "$work/debian.cfs" --objects "$work/objects"
seal composefs dump "$work/debian.cfs" | sed -n '2,4p'
mkdir -p "$work/composefs-mnt"
seal composefs mount "$work/debian.cfs" "$work/composefs-mnt" --objects "$work/objects"
cmp "$work/composefs-mnt/etc/os-release" "$rootfs/etc/os-release" && echo "the mounted composefs reads the original contents"
seal composefs umount "$work/composefs-mnt"

step "Seal the image in the three formats and verify each"
seal image seal debian:bookworm debian:sealed --compression zstd
seal image verify debian:sealed
seal image seal debian:bookworm debian:sealed-erofs --format erofs
seal image verify debian:sealed-erofs
seal image seal debian:bookworm debian:sealed-composefs --format composefs
seal image verify debian:sealed-composefs

step "Tamper with the sealed EROFS layer: verify names it, mount refuses"
layer=$(seal image inspect debian:sealed-erofs --json |
  node_modules/.bin/node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).manifest.layers[0].digest.slice(7)))')
blob="$SEAL_STORE/blobs/sha256/$layer"
cp "$blob" "$work/layer.orig"
printf '\x01' | dd of="$blob" bs=1 seek=8192 conv=notrunc status=none
if seal image verify debian:sealed-erofs; then
  echo "tampering went unnoticed" >&2
  exit 1
fi
if seal image mount debian:sealed-erofs "$work/mnt" 2>/dev/null; then
  echo "a tampered image was mounted" >&2
  exit 1
fi
echo "tampering caught; nothing mounted"
cp "$work/layer.orig" "$blob"

step "Check the store"
seal store fsck

echo
echo "demo: done"
