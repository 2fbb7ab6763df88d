#!/usr/bin/env bash
# Create (or reuse) the harness virtualenv outside the repo, keyed by the hash of requirements.txt
# and the Python version, and print its path on the last line of stdout.
# Why outside: CI clones the repo fresh each time; the venv (torch alone is gigabytes) must survive.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${HARNESS_CACHE:-$HOME/.cache/gpu-serving-harness}
py=${PYTHON:-python3}
key=$( { cat "$here/requirements.txt"; $py -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
venv="$cache/venv/$key"
mkdir -p "$cache/venv"
# One builder at a time: a second caller waits here, then finds the venv complete.
exec 9>"$cache/venv/.lock-$key"
if [ ! -f "$venv/.complete" ] && ! flock -n 9; then
  echo "[venv] another process is building $venv; waiting for it" >&2
  flock 9
fi
if [ ! -f "$venv/.complete" ]; then
  echo "[venv] creating $venv (first run downloads torch and the models: several minutes)" >&2
  rm -rf "$venv"; mkdir -p "$cache/venv"
  $py -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  # --progress-bar on keeps the long download visible in a terminal; CI logs get one line per package.
  "$venv/bin/pip" install --progress-bar on -r "$here/requirements.txt" >&2
  date -u +%FT%TZ >"$venv/.complete"
  echo "[venv] ready: $venv" >&2
fi
echo "$venv"
