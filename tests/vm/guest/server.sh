#!/bin/sh
# A stand-in model server for the guard checks: idles; when /run/vmtest-grow holds its own pid it
# grows without end (tail /dev/zero buffers one endless line) until the kernel kills it in its box.
# The pid in the file makes it one-shot: a server the agent restarted runs inside the agent's unit
# sandbox (ProtectSystem=strict: /run is read-only to it, docs/guard.md "--restart"), so it cannot
# remove the file, and each restart used to grow again and be killed again (a restart loop that
# the guard stage's checks raced on).
# The grower runs as a child waited for, so that a TERM to this script ends it too (a grower left
# behind outside its box once the guard ended grew to 12 GiB in the Debian 12 guest and starved the
# integration tests that came after it).
grower=
trap '[ -n "$grower" ] && kill "$grower" 2>/dev/null; exit 0' TERM INT
while :; do
  if [ "$(cat /run/vmtest-grow 2>/dev/null)" = "$$" ]; then
    rm -f /run/vmtest-grow 2>/dev/null
    tail /dev/zero &
    grower=$!
    wait "$grower"
    grower=
  fi
  sleep 1
done
