#!/usr/bin/env bash
# Install everything the harness needs on a fresh machine of this kind, reusing caches:
#   1. Debian packages (Redis, Prometheus, Alertmanager, promtool, ...), only those missing;
#   2. the virtualenv (scripts/venv.sh, cached outside the repo by requirements hash);
#   3. the control-plane binaries built from the Go module proxy (cached by version).
# Every step prints what it does and how long it took.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export HARNESS_CACHE=${HARNESS_CACHE:-$HOME/.cache/gpu-serving-harness}
t0=$SECONDS
say() { printf '[bootstrap %4ds] %s\n' "$((SECONDS - t0))" "$*"; }

apt_packages=(redis-server prometheus prometheus-alertmanager debootstrap sox)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these as system services on install; the harness runs its own instances on its own ports.
  for s in redis-server prometheus prometheus-alertmanager; do $sudo_ service "$s" stop >/dev/null 2>&1 || true; done
fi
say "Debian packages present"

venv=$("$here/scripts/venv.sh" | tail -n 1)
say "virtualenv: $venv"

# Versions come from the local_cluster role's defaults: one source of truth.
eval "$("$venv/bin/python" - "$here/roles/local_cluster/defaults/main.yml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
for env, key in [("K8S_VERSION", "kubernetes"), ("ETCD_VERSION", "etcd"), ("KWOK_VERSION", "kwok"),
                 ("ADAPTER_VERSION", "prometheus_adapter"), ("KSM_VERSION", "kube_state_metrics")]:
    print(f"export {env}={d[f'local_cluster_{key}_version']}")
PY
)"
"$here/roles/local_cluster/files/build-binaries.sh"
say "bootstrap done"
