#!/usr/bin/env bash
# Idle cost of the real node's own components: CPU % (utime+stime over the window / wall time) and RSS of
# containerd, its shims, the kubelet and kube-proxy, read from /proc. The node must be up (roles/real_node).
# usage: bench/real_node_idle.sh STATE_DIR [SECONDS]   (STATE_DIR: the node's real_node_dir)
set -euo pipefail
dir=${1:?real_node_dir, e.g. ~/.local/state/gpu-serving-harness/local/real-node}; window=${2:-60}
hz=$(getconf CLK_TCK)
pids() {  # name pattern
  for p in /proc/[0-9]*; do
    cmd=$( (tr '\0' ' ' <"$p/cmdline") 2>/dev/null) || continue
    case $cmd in $2) echo "$1 ${p#/proc/}" ;; esac
  done
}
list=$( { pids containerd "/usr/bin/containerd --config $dir/*"; pids shims "*containerd-shim*$dir/containerd*";
          pids kubelet "*kubelet --config=$dir/*"; pids kube-proxy "*kube-proxy --config=$dir/*"; } )
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A t0
while read -r name pid; do t0[$pid]=$(ticks "$pid"); done <<<"$list"
sleep "$window"
printf '%-12s %5s %8s %10s\n' component procs "cpu_%" rss_mib
for name in containerd shims kubelet kube-proxy; do
  n=0 dt=0 rss=0
  while read -r nm pid; do
    [ "$nm" = "$name" ] || continue
    n=$((n + 1)); dt=$((dt + $(ticks "$pid") - ${t0[$pid]}))
    rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
  done <<<"$list"
  awk -v n="$n" -v dt="$dt" -v hz="$hz" -v w="$window" -v rss="$rss" -v c="$name" \
    'BEGIN { printf "%-12s %5d %8.2f %10.1f\n", c, n, 100 * dt / hz / w, rss / 1024 }'
done
