#!/bin/sh
# The reference boot of bench/boot, in the host target's root (the initrd at /seal): each service
# under crun with its precomputed runtime configuration, over a fresh overlay of its verified
# layers, until crun reports both running and they stay up 3 s (the agent's rule); then the marker
# bench/boot waits for.
export PATH=/seal/bin LC_ALL=C
REF=/seal/etc/ref
. $REF/lib.sh
ok # the switch, begun in the initrd

# The initrd's crun through the initrd's loader and libraries (the host root has neither).
crun() {
  /seal/lib64/ld-linux-x86-64.so.2 --library-path /seal/lib/x86_64-linux-gnu:/seal/usr/lib/x86_64-linux-gnu \
    /seal/usr/bin/crun "$@"
}

step 'start the services'
count=0
while read -r service image; do
  dir=$RUN/services/$service
  read -r lowers <"$RUN/images/$image/lowers"
  overlay "$lowers" "$dir/rootfs" "$dir/rw"
  mkdir -p "$dir/bundle" $RUN/data/journal
  while read -r volume; do mkdir -p "$RUN/data/volumes/$volume"; done <"$REF/config/$service.volumes"
  cp "$REF/config/$service.json" "$dir/bundle/config.json"
  {
    crun run --bundle "$dir/bundle" "$service" </dev/null 2>&1 | while IFS= read -r line; do
      echo "ref: [$service] $line"
      echo "$line" >>"$RUN/data/journal/$service.log"
    done
  } &
  echo "ref: service $service: started"
  count=$((count + 1))
done <$REF/services
# running SERVICES: how many crun reports running.
running() {
  up=0
  while read -r service _; do
    case $(crun state "$service" 2>/dev/null) in *'"status"'*'"running"'*) up=$((up + 1)) ;; esac
  done <$REF/services
}
tries=0
while :; do
  running
  [ $up = $count ] && break
  tries=$((tries + 1))
  [ $tries -lt 600 ] || fail "services not running after 60 s"
  sleep 0.1
done
# As the agent: a service counts as come up once it stayed up 3 s (the shell never restarts one).
sleep 3
running
[ $up = $count ] || fail "services not running after 3 s"
ok "$count running"
read -r up _ </proc/uptime
echo "ref: boot complete: $count services running ($up s since the kernel started)"
while :; do sleep 3600; done
