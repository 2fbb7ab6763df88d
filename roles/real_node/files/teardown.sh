#!/usr/bin/env bash
# Remove what the real node (roles/real_node) left on the host once its supervised programs are stopped:
# containers and their shims, mounts under the state directory (deepest first), the pods' network namespaces,
# the bridge, the iptables rules of kube-proxy, the CNI plugins and the node, the kubelet's cgroups, the state
# directory; the sysctls the node changed go back to what they were before it.
# usage: teardown.sh STATE_DIR BRIDGE KUBE_PROXY_BIN
# Prints one "removed <what>" line per thing it removed (none: nothing was there).
set -uo pipefail
dir=${1:?state directory}; bridge=${2:?bridge name}; kube_proxy=${3:?kube-proxy binary}
sock="$dir/containerd/containerd.sock"

# Containers: kill each container's processes through its shim's children, then the shims of this containerd.
shims=()
for p in /proc/[0-9]*; do
  cmd=$( (tr '\0' ' ' <"$p/cmdline") 2>/dev/null) || continue
  case $cmd in *containerd-shim*"-address $sock "*) shims+=("${p#/proc/}") ;; esac
done
for s in "${shims[@]}"; do
  for c in $(cat "/proc/$s/task/$s/children" 2>/dev/null); do kill -KILL "$c" 2>/dev/null && echo "removed container process $c"; done
done
for s in "${shims[@]}"; do kill -KILL "$s" 2>/dev/null && echo "removed shim $s"; done
# Any other process still using the node's paths (a kubelet or containerd started by hand), and an apiserver relay
# still bound to the bridge's address (its forked children outlive a killed parent).
node_ip=$(ip -4 -o addr show dev "$bridge" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
for p in /proc/[0-9]*; do
  cmd=$( (tr '\0' ' ' <"$p/cmdline") 2>/dev/null) || continue
  case $cmd in
    *"$dir/containerd"*|*"$dir/kubelet"*|*"$dir/kube-proxy"*) kill -KILL "${p#/proc/}" 2>/dev/null && echo "removed process ${p#/proc/}" ;;
    *socat*"bind=${node_ip:-none},"*) kill -KILL "${p#/proc/}" 2>/dev/null && echo "removed relay process ${p#/proc/}" ;;
  esac
done
sleep 0.5

# kube-proxy removes its own KUBE-* chains and rules.
if [ -x "$kube_proxy" ] && iptables-save 2>/dev/null | grep -q 'KUBE-'; then
  "$kube_proxy" --cleanup >/dev/null 2>&1; echo "removed kube-proxy iptables rules"
fi

# Mounts under the state directory, deepest first.
findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- |
  while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; echo "removed mount $m"; done

# The pods' network namespaces (the CRI names them cni-*; podman's are netns-*).
for ns in $(ls /var/run/netns 2>/dev/null | grep '^cni-'); do ip netns delete "$ns" && echo "removed netns $ns"; done

# The bridge (veths go with their namespaces).
if ip link show "$bridge" >/dev/null 2>&1; then ip link delete "$bridge" && echo "removed interface $bridge"; fi

# iptables (IPv4 and IPv6): the node's FORWARD rules, jumps into the chains of the kubelet (KUBE-FIREWALL,
# KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT: `kube-proxy --cleanup` leaves those) and of the CNI plugins, then the
# chains themselves, flushed before any is deleted since they jump to each other.
for ipt in iptables ip6tables; do
  for t in filter nat mangle raw; do
    "$ipt-save" -t "$t" 2>/dev/null | grep -E '^-A [A-Z]+ .*(harness-real-node|-j (KUBE|CNI)-)' | sed 's/^-A /-D /' |
      while read -r rule; do eval "$ipt -t $t $rule" && echo "removed $ipt $t $rule"; done
    chains=$("$ipt-save" -t "$t" 2>/dev/null | sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p')
    for ch in $chains; do "$ipt" -t "$t" -F "$ch"; done
    for ch in $chains; do "$ipt" -t "$t" -X "$ch" && echo "removed $ipt chain $t $ch"; done
  done
done

# The ipsets of the NetworkPolicy firewall (kube-router: KUBE-SRC-*, KUBE-DST-*, ...), once no rule refers to them.
for s in $(ipset list -n 2>/dev/null | grep -E '^(inet6?:)?(KUBE-|kube-router)'); do
  ipset destroy "$s" 2>/dev/null && echo "removed ipset $s"
done

# The kubelet's device-plugin directory: the kubelet always makes it at this fixed path (its --root-dir does not
# move it) and puts kubelet.sock and its checkpoint there.
if [ -d /var/lib/kubelet/device-plugins ]; then
  rm -rf /var/lib/kubelet/device-plugins && echo "removed /var/lib/kubelet/device-plugins"
  rmdir /var/lib/kubelet 2>/dev/null && echo "removed empty directory /var/lib/kubelet"
fi

# The kubelet's cgroups (cgroupfs driver), deepest first.
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$c" ] || continue
  find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$c" ] || echo "removed cgroup $c"
done

# The sysctls as they were before the node (IPv4 forwarding, the kubelet's kernel defaults).
if [ -f "$dir/sysctl.before" ]; then
  while IFS='=' read -r key value; do
    [ -n "$key" ] && [ "$(sysctl -n "$key" 2>/dev/null)" != "$value" ] || continue
    sysctl -qw "$key=$value" && echo "restored sysctl $key=$value"
  done <"$dir/sysctl.before"
fi

# What containerd 1.6 keeps outside its configured root and state: the CNI result cache of each pod sandbox
# (go-cni's fixed /var/lib/cni/results: our network's entries and the CRI's loopback entry per sandbox), shim sockets
# no shim listens on any more (/run/containerd/s), and the directories the CRI created, when empty.
for id in $(ls "$dir/containerd/root/io.containerd.grpc.v1.cri/sandboxes" 2>/dev/null); do
  for f in /var/lib/cni/results/*-"$id"-*; do [ -e "$f" ] && rm -f "$f" && echo "removed $f"; done
done
for f in /var/lib/cni/results/harness-real-node-*; do [ -e "$f" ] && rm -f "$f" && echo "removed $f"; done
listening=$(ss -xlnH 2>/dev/null | awk '{print $5}')
for f in /run/containerd/s/*; do
  [ -S "$f" ] || continue
  grep -qxF "$f" <<<"$listening" || { rm -f "$f" && echo "removed stale shim socket $f"; }
done
for d in /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd /var/run/netns \
    /var/lib/cni/results /var/lib/cni; do
  [ -d "$d" ] && rmdir "$d" 2>/dev/null && echo "removed empty directory $d"
done

if [ -e "$dir" ]; then rm -rf "$dir" && echo "removed directory $dir"; fi
exit 0
