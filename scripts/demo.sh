#!/usr/bin/env bash
# Seal's main job, end to end, on a real Debian root filesystem:
#   build the root filesystem (cached), import it into a store as an OCI image, inspect it,
#   write it as squashfs, EROFS and composefs, seal it in all three formats, catch tampering,
#   sign the composefs image for the kernel, sign a system manifest with a product PKI, refuse a
#   rollback, build and sign the boot image (a UKI) for Secure Boot and predict its PCRs, publish
#   it through a registry and verify it in a fresh device store; then a device in a VM (Secure
#   Boot, TPM): installed, booted, attested at every boot to a verifier beside it (which releases
#   it a secret), updated from the registry, falling back by itself from a broken update, refusing
#   a foreign-signed UKI.
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

step "Product PKI: the manifest-signing CA, a product signing certificate, a device identity"
product=6f1c0c1e-2a49-4a7e-9d1b-8a3c2f0e5d11
pki="$work/pki"
seal pki init "$pki"
seal pki product new "$pki" --name "Demo appliance" --id "$product"
seal pki device new "$pki" --product "$product" --serial SN0001
openssl verify -CAfile "$pki/manifest-ca.pem" -purpose any "$pki/products/$product.pem"

step "Sign the sealed composefs image for the kernel with the product key, check the signature offline"
# fs-verity signatures (what FS_IOC_ENABLE_VERITY takes) of its merged and per-layer EROFS, its
# manifest and config, attached as the composefs signature artifact (docs/signatures.md).
seal image sign-verity debian:sealed-composefs --key "$pki/products/$product.key" --cert "$pki/products/$product.pem"
seal image verify debian:sealed-composefs --cert "$pki/products/$product.pem" | tail -2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/stranger.key" \
  -out "$work/stranger.pem" -subj /CN=stranger -days 1 2>/dev/null
if seal image verify debian:sealed-composefs --cert "$work/stranger.pem" >/dev/null; then
  echo "a stranger's certificate was accepted" >&2
  exit 1
fi
echo "refused with a stranger's certificate"
seal ipe policy "$work/ipe-policy" --key "$pki/products/$product.key" --cert "$pki/products/$product.pem"

system_yaml() { # VERSION
  cat <<EOF
product: $product
version: $1
update_type: complete
targets:
  - name: hostfs
    image: debian:sealed-erofs
    role: host
  - name: shell
    image: debian:sealed-composefs
    role: service
    service: { command: ["/bin/sh", "-c", "sleep infinity"], env: { MODE: prod }, restart: always }
EOF
}
sign() { seal manifest sign "$1" --key "$pki/products/$product.key" --cert "$pki/products/$product.pem" --chain "$pki/manifest-ca.pem"; }

step "A system manifest pinning the sealed images, signed with the product key, verified as a device does"
system_yaml 7 >"$work/system-7.yaml"
seal manifest build "$work/system-7.yaml" appliance:7
sign appliance:7
seal manifest verify appliance:7 --ca "$pki/manifest-ca.pem" --product "$product" --state "$work/device-state.json" --deep

step "A cosign-compatible signature on the sealed host image (Sigstore bundle attached as a referrer, key-based)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/cosign.key"
openssl pkey -in "$work/cosign.key" -pubout -out "$work/cosign.pub"
seal sign debian:sealed-erofs --key "$work/cosign.key"
seal verify-signature debian:sealed-erofs --key "$work/cosign.pub"

step "Anti-rollback: an older system, validly signed, is refused and the device state is unchanged"
system_yaml 6 >"$work/system-6.yaml"
seal manifest build "$work/system-6.yaml" appliance:6
sign appliance:6
cp "$work/device-state.json" "$work/device-state.before"
if seal manifest verify appliance:6 --ca "$pki/manifest-ca.pem" --product "$product" --state "$work/device-state.json"; then
  echo "an older system was accepted" >&2
  exit 1
fi
cmp "$work/device-state.json" "$work/device-state.before" && echo "refused; state unchanged"

step "The boot image: a UKI for the demo system, signed for Secure Boot, enrolled in a varstore, its PCRs predicted"
kernel="$(bash scripts/vm-kernel.sh)/vmlinuz"
# The initrd carries the manifest-signing CA the device checks system manifests against.
mkdir -p "$work/initrd/etc/seal"
cp "$pki/manifest-ca.pem" "$work/initrd/etc/seal/manifest-ca.pem"
node_modules/.bin/node --input-type=module -e '
  const { treeFromDirectory } = await import("./src/tree/index.ts");
  const { treeToCpio } = await import("./src/cpio/index.ts");
  const { writeFileSync } = await import("node:fs");
  writeFileSync(process.argv[2], await treeToCpio(await treeFromDirectory(process.argv[1], { xattrs: false })));
' "$work/initrd" "$work/initrd.cpio"
seal pki kernel new "$pki"
seal secureboot keys "$work/secureboot"
seal secureboot enroll /usr/share/OVMF/OVMF_VARS_4M.fd "$work/OVMF_VARS.fd" --pk "$work/secureboot/PK.crt" \
  --kek "$work/secureboot/KEK.crt" --db "$pki/kernel-ca.pem"
seal uki build --linux "$kernel" --initrd "$work/initrd.cpio" --cmdline "console=ttyS0 quiet" \
  --os-release "$rootfs/etc/os-release" --key "$pki/kernel/uki.key" --cert "$pki/kernel/uki.pem" \
  --chain "$pki/kernel-ca.pem" "$work/demo.efi"
seal uki verify "$work/demo.efi" --db "$work/OVMF_VARS.fd"
sbverify --cert "$pki/kernel-ca.pem" "$work/demo.efi"
seal uki inspect "$work/demo.efi"
seal pcr predict --uki "$work/demo.efi" --vars "$work/OVMF_VARS.fd" --banks sha256,sha384

step "Publish the signed system to a registry, install it into a fresh device store, verify it there"
port=$(node_modules/.bin/node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
storage: { filesystem: { rootdirectory: $work/registry/data } }
http: { addr: 127.0.0.1:$port }
log: { level: error }
EOF
/usr/bin/docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
seal sync appliance:7 "docker://127.0.0.1:$port/appliance/system:7"
SEAL_STORE="$work/device" seal sync "docker://127.0.0.1:$port/appliance/system:7" system:7
SEAL_STORE="$work/device" seal manifest verify system:7 --ca "$pki/manifest-ca.pem" --product "$product" --deep
composefs=$(seal image inspect debian:sealed-composefs --json |
  node_modules/.bin/node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).descriptor.digest))')
SEAL_STORE="$work/device" seal image verify "shell@$composefs" --cert "$pki/products/$product.pem" | tail -1

step "The device: initrd with the agent, signed UKI and TPM policy, factory TPM, installed disk; booted in a VM"
deb=$(bash scripts/kernel-package.sh)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/policy.key"
openssl pkey -in "$work/policy.key" -pubout -out "$work/policy.pub"
# PCR 7 names the db entry that vouches for the signer, not the image: any UKI it signed predicts it.
seal tpm policy sign --key "$work/policy.key" --uki "$work/demo.efi" --vars "$work/OVMF_VARS.fd" --version 1 \
  "$work/policy.json"
seal initrd build "$pki/manifest-ca.pem" "$work/initrd.zst" --kernel "$deb" --policy "$work/policy.json"
# The device follows the registry's stable tag (reached at 10.0.2.100 through qemu's restricted network).
cmdline="console=ttyS0 quiet loglevel=3 panic=-1 seal.net=10.0.2.15/24,gw=10.0.2.2 seal.registry-insecure"
cmdline+=" seal.follow=docker://10.0.2.100:$port/appliance/system:stable seal.follow-interval=3 seal.trial-boots=1"
# At every boot, before PCR 7 is locked, the device attests to a verifier beside it (reached at
# 10.0.2.101) and fetches its API token, which its services read at /run/secrets/api-token.
vport=$(node_modules/.bin/node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
cmdline+=" seal.attest=http://10.0.2.101:$vport/ seal.attest-secret=api-token"
# The UKI of a system version (its command line names it), sealed as that system's boot image.
boot_image() {
  seal uki build --linux "$kernel" --initrd "$work/initrd.zst" --cmdline "$cmdline demo.version=$1" \
    --os-release "$rootfs/etc/os-release" --key "$pki/kernel/uki.key" --cert "$pki/kernel/uki.pem" \
    --chain "$pki/kernel-ca.pem" "$work/device-$1.efi" >/dev/null
  seal uki image "$work/device-$1.efi" "appliance:boot-$1" --policy "$work/policy.json"
}
# systemd-boot, signed like the UKIs, starts them and counts the boots of a new one.
seal uki sign /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$work/systemd-boot.efi" \
  --key "$pki/kernel/uki.key" --cert "$pki/kernel/uki.pem"
# Version VERSION of the device's system: the Debian host, the UKI of version BOOT, and a greeter
# service that says GREETING and then runs THEN; published as the registry's stable tag.
device_system() {
  local version=$1 boot=$2 greeting=$3 then=$4
  local greeter="n=\$(cat /data/boots 2>/dev/null || echo 0); n=\$((n+1)); echo \$n >/data/boots; sync"
  greeter+="; . /etc/os-release; echo \"greeter: $greeting from \$PRETTY_NAME, boot \$n\""
  greeter+="; echo \"greeter: the API token the verifier released has sha256 \$(sha256sum </run/secrets/api-token | cut -c1-16)…\"; $then"
  {
    echo "product: $product"
    echo "version: $version"
    echo "targets:"
    echo "  - { name: host, image: debian:sealed, role: host }"
    echo "  - { name: boot, image: appliance:boot-$boot, role: boot }"
    echo "  - name: greeter"
    echo "    image: debian:sealed"
    echo "    role: service"
    echo "    service:"
    echo "      command: [\"/bin/sh\", \"-c\", $(node_modules/.bin/node -p 'JSON.stringify(process.argv[1])' "$greeter")]"
    echo "      mounts: [{ source: state, target: /data }]"
    echo "storage: [{ name: state, size: 16M }]"
  } >"$work/device-$version.yaml"
  seal manifest build "$work/device-$version.yaml" "appliance:$version" >/dev/null
  sign "appliance:$version" >/dev/null
  seal sync "appliance:$version" "docker://127.0.0.1:$port/appliance/system:stable" >/dev/null
  echo "published version $version as appliance/system:stable"
}
# The UKIs of versions 8 and 10 (10 comes with the broken update below), made now so that the
# verifier's reference accepts the boots of both, through the signed systemd-boot.
boot_image 8
boot_image 10
seal attest reference --product "$product" --uki "$work/device-8.efi" --uki "$work/device-10.efi" \
  --boot-manager "$work/systemd-boot.efi" --vars "$work/OVMF_VARS.fd" "$work/reference.json"
head -c 32 /dev/urandom | base64 >"$work/api-token"
seal attest serve --reference "$work/reference.json" --device-ca "$pki/device-ca.pem" \
  --secret "api-token=$work/api-token" --listen "127.0.0.1:$vport" >"$work/verifier.log" 2>&1 &
verifier_pid=$!
trap 'kill $registry_pid $verifier_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^listening' "$work/verifier.log" && break; sleep 0.1; done
echo "verifier: $(head -1 "$work/verifier.log"); the API token's sha256 is $(sha256sum <"$work/api-token" | cut -c1-16)…"
device_system 8 8 hello 'exec sleep infinity'
export SEAL_MACHINES="$work/machines"
# The factory: the device's identity key is made in its TPM and certified by the device CA.
seal machine create demo --vars "$work/OVMF_VARS.fd" --manifest "docker://127.0.0.1:$port/appliance/system:stable" \
  --ca "$pki/manifest-ca.pem" --boot-manager "$work/systemd-boot.efi" \
  --registry "127.0.0.1:$port" --attest "127.0.0.1:$vport" --provision-policy-key "$work/policy.pub" \
  --identity-in-tpm --pki "$pki" --product "$product" --serial DEMO-0001
# Waits (at most 5 minutes) until the console of the running MACHINE shows PATTERN after line FROM,
# then shows the agent's lines since FROM.
console_wait() {
  local log="$SEAL_MACHINES/$1/console.log" shown=0
  for _ in $(seq 300); do
    if tail -n +"$3" "$log" 2>/dev/null | grep -qaE "$2"; then shown=1; break; fi
    sleep 1
  done
  tail -n +"$3" "$log" | grep -aE '^seal: (\[( ok |FAIL)\]|boot complete|update|fallback|following)|greeter:' || true
  [ "$shown" = 1 ]
}
lines() { wc -l <"$SEAL_MACHINES/$1/console.log"; }
seal machine start demo --detach
console_wait demo 'greeter: the API token' 1
echo "the verifier says: $(grep -m1 -E '^(released|refused)' "$work/verifier.log")"

step "An update: version 9 changes the greeter's command; only it restarts (its image is the same: only the new manifest is fetched)"
from=$(lines demo)
device_system 9 8 'hello again' 'exec sleep infinity'
console_wait demo 'greeter: hello again' "$from"

step "An automatic fallback: version 10 brings a new UKI whose greeter never comes up; systemd-boot passes it over"
from=$(lines demo)
device_system 10 10 broken 'exit 3'
console_wait demo 'seal: boot complete: .* version 9 is running' "$from"
seal machine stop demo --timeout 10s >/dev/null
echo "the verifier's decisions, one per boot:"
grep -E '^(released|refused)' "$work/verifier.log"
seal machine list

# Boots MACHINE until its console shows PATTERN (at most 5 minutes), stops it, shows what the agent said.
boot_until() {
  seal machine start "$1" --detach
  local shown=0
  for _ in $(seq 300); do
    if grep -qaE "$2" "$SEAL_MACHINES/$1/console.log" 2>/dev/null; then shown=1; break; fi
    sleep 1
  done
  seal machine stop "$1" --timeout 5s >/dev/null
  grep -aE '^seal: \[( ok |FAIL)\]|seal: boot complete|Access Denied' "$SEAL_MACHINES/$1/console.log" || true
  [ "$shown" = 1 ]
}

step "Tamper: a UKI signed by a key the device's db does not hold is refused by the firmware"
seal secureboot keys "$work/foreign-keys"
seal uki sign "$work/device-8.efi" "$work/foreign.efi" --key "$work/foreign-keys/db.key" --cert "$work/foreign-keys/db.crt"
seal machine create demo-foreign --uki "$work/foreign.efi" --vars "$work/OVMF_VARS.fd" --disk "$work/machines/demo/disk.img"
boot_until demo-foreign 'Access Denied' && echo "refused by the firmware; the agent never ran"
seal machine rm demo-foreign
seal machine list

step "Check the store"
seal store fsck

echo
echo "demo: done"
