#!/usr/bin/env bash
# Install everything the harness needs on a fresh machine of this kind, reusing caches:
#   1. Debian packages (Redis, Prometheus, Alertmanager, promtool, podman, docker-registry, ...), only those missing;
#   2. the virtualenv (scripts/venv.sh, cached outside the repo by requirements hash);
#   3. the control-plane binaries built from the Go module proxy (cached by version).
# Every step prints what it does and how long it took.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export HARNESS_CACHE=${HARNESS_CACHE:-$HOME/.cache/gpu-serving-harness}
t0=$SECONDS
say() { printf '[bootstrap %4ds] %s\n' "$((SECONDS - t0))" "$*"; }

# podman, netavark (its network backend; only a recommendation of podman), buildah, skopeo, runc, uidmap:
# the image builder (roles/images); docker-registry: the local registry.
# containerd, containernetworking-plugins, iptables, conntrack: the real node (roles/real_node);
# busybox-static: the one binary of the real node's test image; socat: the relay from the node's IP to the apiserver;
# ipset: the teardown removes the sets kube-router (the node's NetworkPolicy firewall) made.
apt_packages=(redis-server prometheus prometheus-alertmanager debootstrap sox podman netavark buildah skopeo runc uidmap docker-registry
  containerd containernetworking-plugins iptables conntrack busybox-static socat ipset)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these as system services on install; the harness runs its own instances on its own ports.
  for s in redis-server prometheus prometheus-alertmanager docker-registry containerd; do $sudo_ service "$s" stop >/dev/null 2>&1 || true; done
fi
say "Debian packages present"

# The Go builds (CPU) and the virtualenv (mostly download and unpacking) are independent: on a cold machine
# they run side by side, which saves most of the shorter one's time. Each prints its own progress lines.
version() { sed -n "s/^local_cluster_$1_version: \"\(.*\)\"$/\1/p" "$here/roles/local_cluster/defaults/main.yml"; }
export K8S_VERSION=$(version kubernetes) ETCD_VERSION=$(version etcd) KWOK_VERSION=$(version kwok) \
  ADAPTER_VERSION=$(version prometheus_adapter) KSM_VERSION=$(version kube_state_metrics) \
  COREDNS_VERSION=$(version coredns) METRICS_SERVER_VERSION=$(version metrics_server) \
  KUBE_ROUTER_VERSION=$(version kube_router) PROMETHEUS_OPERATOR_VERSION=$(version prometheus_operator) \
  PROMETHEUS_VERSION=$(version prometheus)
# kubelet and kube-proxy for the real node: BUILD_NODE=1 (the real_node role builds them itself when enabled).
export BUILD_NODE=${BUILD_NODE:-0}
for v in K8S_VERSION ETCD_VERSION KWOK_VERSION ADAPTER_VERSION KSM_VERSION COREDNS_VERSION METRICS_SERVER_VERSION KUBE_ROUTER_VERSION PROMETHEUS_OPERATOR_VERSION PROMETHEUS_VERSION; do
  [ -n "${!v}" ] || { echo "bootstrap: could not read $v from roles/local_cluster/defaults/main.yml" >&2; exit 1; }
done
"$here/roles/local_cluster/files/build-binaries.sh" &
builds=$!
venv_out=$(mktemp)
trap 'rm -f "$venv_out"' EXIT
if ! "$here/scripts/venv.sh" >"$venv_out"; then
  wait "$builds" || true
  echo "bootstrap: the virtualenv could not be built (output above)" >&2
  exit 1
fi
say "virtualenv: $(tail -n 1 "$venv_out")"
if ! wait "$builds"; then
  echo "bootstrap: building the control plane binaries failed (output above)" >&2
  exit 1
fi
say "bootstrap done"
