#!/usr/bin/env bash
# Run `molecule test` for every scenario under molecule/, report each, fail if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=() passed=()
for dir in molecule/*/; do
  s=$(basename "$dir")
  [ -f "$dir/molecule.yml" ] || continue
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
