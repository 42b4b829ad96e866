#!/bin/sh
# The reference boot of bench/boot: what the Seal agent does, done by hand in a shell initrd with
# busybox, tpm2-tools, cryptsetup, veritysetup and crun — the same kernel, the same modules, the
# same disk. It verifies no signature: the layers' root hashes and hash offsets, and the services'
# runtime configurations, were computed on the host and are files in /etc/ref. Partitions are found
# by their GPT names only. The LUKS2 partitions must exist (the agent makes them on its first boot).
T0=$EPOCHREALTIME
export PATH=/bin:/usr/bin:/usr/sbin DM_DISABLE_UDEV=1 LC_ALL=C
REF=/etc/ref
. $REF/lib.sh

step 'mount the API filesystems'
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mount -t securityfs -o nosuid,nodev,noexec securityfs /sys/kernel/security
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /run/cryptsetup
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
ip link set lo up
ok
# When this shell started, in ms of the kernel's uptime (the agent reports Node.js's start alike).
read -r up _ </proc/uptime
now=$EPOCHREALTIME
echo "ref: init started $(( ${up%.*}${up#*.}0 - (${now%.*}${now#*.} - ${T0%.*}${T0#*.}) / 1000 )) ms after the kernel"

step 'read the kernel command line'
read -r cmdline </proc/cmdline
ok

step 'load kernel modules'
n=0
while read -r module; do
  insmod "$module" || fail "insmod $module"
  n=$((n + 1))
done <$REF/modules
ok "$n modules"

step 'find the disk'
STORE='' CONFIG='' DATA=''
for uevent in /sys/class/block/*/uevent; do
  name='' label=''
  while IFS='=' read -r key value; do
    case $key in DEVNAME) name=$value ;; PARTNAME) label=$value ;; esac
  done <"$uevent"
  case $label in
  seal-store) STORE=/dev/$name ;;
  seal-config) CONFIG=/dev/$name ;;
  seal-data) DATA=/dev/$name ;;
  esac
done
[ -n "$STORE" ] && [ -n "$CONFIG" ] && [ -n "$DATA" ] || fail 'no seal-store, seal-config and seal-data partitions'
ok "$STORE $CONFIG $DATA"

step 'unlock the TPM and lock PCR 7'
mkdir -p $RUN/tpm
cp $REF/tpm/* $RUN/tpm/
# The secrets the agent reads: device certificate, device key, LUKS passphrase, version authorization.
TPM2TOOLS_TCTI=device:/dev/tpmrm0 SEAL_UNLOCK_INDICES='0x01500021 0x01500022 0x01500040 0x01500041' \
  sh $REF/tpm-unlock.sh $RUN/tpm || fail 'tpm2-tools could not read the secrets'
ok

# open_luks DEVICE NAME MOUNTPOINT
open_luks() {
  cryptsetup isLuks --type luks2 "$1" || fail "$1 is not LUKS2 (boot the device with the agent once)"
  cryptsetup open --type luks2 --key-file $RUN/tpm/secret-0x01500040 "$1" "$2" || fail "cryptsetup open $1"
  mkdir -p "$3"
  mount -t ext4 -o nosuid,nodev "/dev/mapper/$2" "$3" || fail "mount /dev/mapper/$2"
}
step 'open the config partition'
open_luks "$CONFIG" seal-config $RUN/config
ok opened
step 'open the data partition'
open_luks "$DATA" seal-data $RUN/data
ok opened
rm -f $RUN/tpm/secret-*

step 'mount the store'
mkdir -p $RUN/store
mount -t ext4 -o ro,nosuid,nodev "$STORE" $RUN/store || fail "mount $STORE"
ok

# open_image NAME ID: every layer of image ID (a target's) through dm-verity — status and root hash
# checked — mounted read-only; the overlay's lowerdir (top first) goes to $RUN/images/ID/lowers.
# An image two targets share is opened once, as the agent does.
open_image() {
  n=0
  [ -e "$RUN/images/$2/lowers" ] && return
  lowers=''
  while read -r i hex fs root offset; do
    what="$1 layer $((i + 1)) (sha256:$hex)"
    blob=$RUN/store/blobs/sha256/$hex
    veritysetup open "$blob" "seal-$2-$i" "$blob" "$root" --hash-offset "$offset" || fail "$what: dm-verity refused it"
    status=$(veritysetup status "seal-$2-$i") || fail "$what: no status"
    case $status in *'status:'*verified*) ;; *) fail "$what: not verified" ;; esac
    case $status in *"root hash:"*"$root"*) ;; *) fail "$what: another root hash" ;; esac
    mkdir -p "$RUN/images/$2/layer-$i"
    mount -t "$fs" -o ro "/dev/mapper/seal-$2-$i" "$RUN/images/$2/layer-$i" || fail "$what: cannot be mounted"
    lowers=$RUN/images/$2/layer-$i${lowers:+:$lowers}
    n=$((n + 1))
  done <"$REF/images/$2"
  echo "$lowers" >"$RUN/images/$2/lowers"
}

read -r HOST HOST_IMAGE <$REF/host
step "open the host target $HOST"
open_image "$HOST" "$HOST_IMAGE"
ok "$n layers through dm-verity"

step 'mount the host root'
read -r lowers <"$RUN/images/$HOST_IMAGE/lowers"
overlay "$lowers" /sysroot "$RUN/targets/$HOST/rw"
pretty='no PRETTY_NAME'
while IFS='=' read -r key value; do
  case $key in PRETTY_NAME) pretty=${value#\"} pretty=${pretty%\"} ;; esac
done </sysroot/etc/os-release || fail 'the host target cannot be read'
ok "$pretty"

while read -r service image; do
  step "open the service image $service"
  open_image "$service" "$image"
  ok "$n layers through dm-verity"
done <$REF/services

# The agent's switch: the initrd kept at /seal, the API filesystems moved, the new root moved onto
# / and chrooted into; the shell stays PID 1 (exec).
step 'switch into the host root'
mkdir -p /sysroot/seal
mount --bind / /sysroot/seal || fail 'bind the initrd at /seal'
for api in dev proc sys run; do
  mkdir -p /sysroot/$api
  mount --move /$api /sysroot/$api || fail "move /$api"
done
cd /sysroot || fail 'no /sysroot'
mount --move . / || fail 'move the new root onto /'
export STEP START
exec chroot . /seal/bin/sh /seal/etc/ref/services.sh
