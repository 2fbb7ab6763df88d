#!/usr/bin/env bash
# Run `molecule test` for every scenario under molecule/ (or the ones named), report each, fail if any failed.
#   scripts/molecule-all.sh                    # every scenario
#   scripts/molecule-all.sh real_node          # the ones named
#   scripts/molecule-all.sh --skip real_node   # every scenario but these
set -uo pipefail
cd "$(dirname "$0")/.."
failed=() passed=() only=() skip=()
while [ $# -gt 0 ]; do
  case "$1" in
    --skip) skip+=("${2:?--skip needs a scenario name}"); shift 2 ;;
    *) only+=("$1"); shift ;;
  esac
done
for s in "${only[@]}" "${skip[@]}"; do
  [ -f "molecule/$s/molecule.yml" ] || { echo "molecule-all: no scenario '$s' (allowed: $(cd molecule && ls -- */molecule.yml | cut -d/ -f1 | tr '\n' ' '))" >&2; exit 2; }
done
for dir in molecule/*/; do
  s=$(basename "$dir")
  [ -f "$dir/molecule.yml" ] || continue
  if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $s "* ]]; then continue; fi
  if [ ${#skip[@]} -gt 0 ] && [[ " ${skip[*]} " == *" $s "* ]]; then continue; fi
  echo "=== molecule test -s $s"
  t=$SECONDS
  # The unmanaged driver never resets a scenario's state, so a second run would skip `prepare`
  # (node_prep's root filesystem): start each scenario from a clean ephemeral directory.
  molecule reset -s "$s" >/dev/null 2>&1 || true
  if molecule test -s "$s"; then passed+=("$s ($((SECONDS - t))s)"); r=passed; else failed+=("$s ($((SECONDS - t))s)"); r=FAILED; fi
  # .ci/run prints this log if CI stops the run, so a cut-short run still says which scenarios took how long.
  [ -z "${TEST_STAGE_LOG:-}" ] || echo "  molecule $s: $r in $((SECONDS - t))s" >>"$TEST_STAGE_LOG"
done
echo "molecule: passed: ${passed[*]:-none}"
echo "molecule: failed: ${failed[*]:-none}"
echo "${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
