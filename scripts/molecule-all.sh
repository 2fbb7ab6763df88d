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
  if molecule test -s "$s"; then passed+=("$s ($((SECONDS - t))s)"); else failed+=("$s ($((SECONDS - t))s)"); fi
done
echo "molecule: passed: ${passed[*]:-none}"
echo "molecule: failed: ${failed[*]:-none}"
echo "${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
