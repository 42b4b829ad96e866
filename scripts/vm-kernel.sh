#!/usr/bin/env bash
# Fetches (once) the kernel the test VM boots — bookworm-backports' cloud kernel, 6.12 — and
# unpacks it with the modules the tests load, decompressed; prints the directory.
# Cache: ${XDG_CACHE_HOME:-~/.cache}/seal/vm/<version>.
set -euo pipefail
package=${SEAL_VM_KERNEL:-linux-image-6.12.95+deb12-cloud-amd64}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/seal/vm
target="$cache/$package"
if [ -f "$target/.complete-3" ]; then
  echo "$target"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch-XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$package" >/dev/null 2>&1) || {
  echo "vm-kernel: cannot download $package (is bookworm-backports configured? run scripts/setup.sh)" >&2
  exit 1
}
dpkg-deb -x "$work"/*.deb "$work/root"
rm -rf "$target"
mkdir -p "$target/modules"
cp "$work"/root/boot/vmlinuz-* "$target/vmlinuz"
version=$(ls "$work/root/lib/modules")
for module in drivers/md/dm-mod drivers/md/dm-bufio drivers/md/dm-verity lib/reed_solomon/reed_solomon \
  lib/libcrc32c fs/erofs/erofs fs/overlayfs/overlay fs/squashfs/squashfs drivers/block/loop \
  drivers/block/virtio_blk fs/efivarfs/efivarfs; do
  xz -dc "$work/root/lib/modules/$version/kernel/$module.ko.xz" >"$target/modules/$(basename "$module").ko"
done
echo "$version" >"$target/version"
touch "$target/.complete-3"
echo "$target"
