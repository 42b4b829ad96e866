#!/usr/bin/env bash
# Fetches (once) Debian 12's own systemd-boot-efi (systemd 252) and unpacks it, so that UKIs can
# be built and tested on bookworm's UEFI stub as well as on backports' 254 that setup installs;
# prints the directory holding linuxx64.efi.stub.
# Cache: ${XDG_CACHE_HOME:-~/.cache}/seal/systemd-252.
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/seal/systemd-252
if [ -f "$cache/.complete" ]; then
  echo "$cache/usr/lib/systemd/boot/efi"
  exit 0
fi
version=$(apt-cache madison systemd-boot-efi | awk '$3 ~ /^252\./ { print $3; exit }')
[ -n "$version" ] || {
  echo "systemd-252: no systemd-boot-efi 252 in the apt sources" >&2
  exit 1
}
mkdir -p "$(dirname "$cache")"
work=$(mktemp -d "$(dirname "$cache")/.fetch-XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "systemd-boot-efi=$version" >/dev/null 2>&1) || {
  echo "systemd-252: cannot download systemd-boot-efi=$version" >&2
  exit 1
}
dpkg-deb -x "$work"/*.deb "$work/root"
rm -rf "$cache"
mv "$work/root" "$cache"
touch "$cache/.complete"
echo "$cache/usr/lib/systemd/boot/efi"
