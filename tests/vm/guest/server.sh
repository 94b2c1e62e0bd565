#!/bin/sh
# A stand-in model server for the guard checks: idles; when /run/vmtest-grow exists it grows without
# end (tail /dev/zero buffers one endless line) until the kernel kills it in its box.
while :; do
  if [ -e /run/vmtest-grow ]; then rm -f /run/vmtest-grow; tail /dev/zero; fi
  sleep 1
done
