#!/usr/bin/env bash
# Stop mutmut workers whose test run hangs (used by `make mutate`).
#
# mutmut limits a worker's CPU time only: a test run asleep in the event loop for ever
# (a mutant that never gives a slot back, say) would hold its worker, and the run would
# never end. Each worker renames itself "mutmut: <mutant>"; one older than
# MUTATE_HANG_SEC is killed, and mutmut lists its mutant as `segfault` (detected).
set -u
limit="${MUTATE_HANG_SEC:-180}"
while sleep 15; do
  for pid in $(pgrep -f '^mutmut: '); do
    age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
    if [ -n "$age" ] && [ "$age" -gt "$limit" ]; then
      echo "mutmut-watchdog: stopping $(ps -o args= -p "$pid" 2>/dev/null) after ${age} s" >&2
      kill -9 "$pid" 2>/dev/null
    fi
  done
done
