#!/bin/sh
# A stand-in model server for the guard checks: idles; when /run/vmtest-grow exists it grows without
# end (tail /dev/zero buffers one endless line) until the kernel kills it in its box.
# The grower runs as a child waited for, so that a TERM to this script ends it too (a grower left
# behind outside its box once the guard ended grew to 12 GiB in the Debian 12 guest and starved the
# integration tests that came after it).
grower=
trap '[ -n "$grower" ] && kill "$grower" 2>/dev/null; exit 0' TERM INT
while :; do
  if [ -e /run/vmtest-grow ]; then
    rm -f /run/vmtest-grow
    tail /dev/zero &
    grower=$!
    wait "$grower"
    grower=
  fi
  sleep 1
done
