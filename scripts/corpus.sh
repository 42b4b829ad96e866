#!/usr/bin/env bash
# Builds (once) and caches a real Debian 12 minimal root filesystem with debootstrap, then prints
# its path. The demo, the interoperability tests and the benchmarks use it as their real-world input.
# Cache: $SEAL_CORPUS, else ${XDG_CACHE_HOME:-~/.cache}/seal/corpus/debian-bookworm-minbase.
set -euo pipefail
target=${SEAL_CORPUS:-${XDG_CACHE_HOME:-$HOME/.cache}/seal/corpus/debian-bookworm-minbase}
mirror=${SEAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ -f "$target.complete" ]; then
  echo "$target"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "corpus: debootstrap is missing: run scripts/setup.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "corpus: debootstrap needs root" >&2; exit 1; }

mkdir -p "$(dirname "$target")"
work="$target.partial"
rm -rf "$work"
echo "corpus: building a Debian bookworm minbase root filesystem with debootstrap (once, a few minutes)" >&2
debootstrap --variant=minbase bookworm "$work" "$mirror" >"$work.log" 2>&1 || {
  echo "corpus: debootstrap failed; see $work.log" >&2
  exit 1
}
# The apt caches hold nothing a root filesystem image needs and vary from run to run.
rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/* "$work"/var/log/*.log
rm -rf "$target" "$target.complete"
mv "$work" "$target"
touch "$target.complete"
rm -f "$work.log"
echo "$target"
