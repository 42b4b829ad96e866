# Shared by the reference initrd's scripts (bench/boot): each step printed on the console as the
# Seal agent prints its own — "[ .. ] STEP", then "[ ok ] STEP (N ms)" — timed with the shell's
# $EPOCHREALTIME (microseconds, no fork). Every input is a file under $REF, written by the
# benchmark on the host; nothing here is built from data.
RUN=/run/seal

step() {
  STEP=$1
  echo "ref: [ .. ] $1"
  START=$EPOCHREALTIME
}

ok() {
  now=$EPOCHREALTIME
  echo "ref: [ ok ] $STEP ($(( (${now%.*}${now#*.} - ${START%.*}${START#*.}) / 1000 )) ms)${1:+: $1}"
}

fail() {
  echo "ref: [FAIL] $STEP: $*"
  echo 'ref: the boot ends: poweroff'
  poweroff -f
  sleep 3600
}

# overlay LOWERS TARGET RW: overlayfs over a fresh tmpfs, with the options the agent uses.
overlay() {
  mkdir -p "$2" "$3"
  mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$3" || fail "tmpfs at $3"
  mkdir "$3/upper" "$3/work"
  mount -t overlay -o "index=off,xino=on,userxattr,lowerdir=$1,upperdir=$3/upper,workdir=$3/work" overlay "$2" ||
    fail "overlay at $2"
}
