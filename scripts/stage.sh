#!/usr/bin/env bash
# Run one stage of the test command, print when it began and how long it took, and append that to
# $TEST_STAGE_LOG (set by .ci/run) so that a run cut short can still say where its time went.
#   scripts/stage.sh NAME COMMAND [ARGS...]
set -uo pipefail
name=$1; shift
log=${TEST_STAGE_LOG:-/dev/null}
began=$(date -u +%T) t=$SECONDS
printf '[stage] %s began at %s UTC\n' "$name" "$began"
printf '%s began %s UTC (running)\n' "$name" "$began" >>"$log"
"$@"
rc=$?
printf '[stage] %s: rc=%d in %ds\n' "$name" "$rc" "$((SECONDS - t))"
[ "$log" = /dev/null ] || sed -i "s/^$name began $began UTC (running)\$/$name began $began UTC: rc=$rc in $((SECONDS - t))s/" "$log"
exit "$rc"
