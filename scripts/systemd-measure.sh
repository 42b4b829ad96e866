#!/usr/bin/env bash
# Unpacks (once) systemd 254's systemd-measure from bookworm-backports' systemd package, without
# installing it, for the benchmark that compares PCR prediction with it; prints the directory
# holding lib/systemd/systemd-measure (run it with LD_LIBRARY_PATH=DIR/lib/x86_64-linux-gnu/systemd,
# where its libsystemd-shared, from the package of that name, is unpacked too).
# Cache: ${XDG_CACHE_HOME:-~/.cache}/seal/systemd-254.
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/seal/systemd-254
if [ -f "$cache/.complete" ]; then
  echo "$cache"
  exit 0
fi
version=$(apt-cache madison systemd | awk '$3 ~ /^254\./ { print $3; exit }')
[ -n "$version" ] || {
  echo "systemd-measure: no systemd 254 in the apt sources (is bookworm-backports configured? run scripts/setup.sh)" >&2
  exit 1
}
mkdir -p "$(dirname "$cache")"
work=$(mktemp -d "$(dirname "$cache")/.fetch-XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "systemd=$version" "libsystemd-shared=$version" >/dev/null 2>&1) || {
  echo "systemd-measure: cannot download systemd=$version and libsystemd-shared=$version" >&2
  exit 1
}
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
rm -rf "$cache"
mv "$work/root" "$cache"
touch "$cache/.complete"
echo "$cache"
