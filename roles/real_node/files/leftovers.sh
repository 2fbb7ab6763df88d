#!/usr/bin/env bash
# List what the real node (roles/real_node) could leave behind on this machine; print nothing when it is clean.
# usage: leftovers.sh STATE_DIR BRIDGE POD_CIDR
# One line per leftover: "<kind> <what>". Exit code 0 either way (the caller judges the output).
set -uo pipefail
dir=${1:?state directory}; bridge=${2:?bridge name}; cidr=${3:?pod CIDR}
net=${cidr%/*}; prefix=${net%.*}   # e.g. 10.244.0 for 10.244.0.0/24

# Processes: containerd with our config, its shims, kubelet and kube-proxy of this node (matched by their paths),
# and the apiserver relay (socat bound to an address of the pod network).
for p in /proc/[0-9]*; do
  cmd=$( (tr '\0' ' ' <"$p/cmdline") 2>/dev/null) || continue
  case $cmd in
    *"$dir/containerd"*|*"$dir/kubelet"*|*"$dir/kube-proxy"*|*"$dir/kubeconfig"*|*socat*"bind=$prefix."*) echo "process ${p#/proc/} $cmd" ;;
  esac
done
# Mounts under the state directory (overlay rootfs, sandbox shm, kubelet volumes).
findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1 { print "mount " $0 }'
# Network namespaces the CRI made for pods (podman names its own netns-*).
ls /var/run/netns 2>/dev/null | grep '^cni-' | sed 's/^/netns /'
# The bridge, and veths still attached to it.
ip -o link show "$bridge" 2>/dev/null | awk '{print "interface " $2}'
ip -o link show master "$bridge" 2>/dev/null | awk '{print "interface " $2}'
# Addresses of the pod network on any interface.
ip -4 -o addr show 2>/dev/null | awk -v p="$prefix." 'index($4, p) == 1 {print "address " $2 " " $4}'
# iptables and ip6tables rules and chains of the kubelet and kube-proxy (KUBE-*), the CNI plugins (CNI-*), and the node's own FORWARD rules.
for ipt in iptables ip6tables; do
  for t in filter nat mangle raw; do
    "$ipt-save" -t "$t" 2>/dev/null | grep -E 'KUBE-|CNI-|harness-real-node|'"$bridge"'|'"${prefix//./\\.}"'\.' |
      sed "s/^/$ipt $t /"
  done
done
# The kubelet's fixed device-plugin directory.
[ -e /var/lib/kubelet/device-plugins ] && echo "directory /var/lib/kubelet/device-plugins"
# ipsets of the NetworkPolicy firewall (kube-router).
ipset list -n 2>/dev/null | grep -E '^(inet6?:)?(KUBE-|kube-router)' | sed 's/^/ipset /'
# cgroups the kubelet created (cgroupfs driver, cgroup v1).
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do [ -d "$c" ] && echo "cgroup $c"; done
# containerd 1.6's paths outside its root: the CNI result cache and shim sockets nothing listens on.
ls /var/lib/cni/results 2>/dev/null | grep -E '^(harness-real-node|cni-loopback)-' | sed 's|^|cni-cache /var/lib/cni/results/|'
listening=$(ss -xlnH 2>/dev/null | awk '{print $5}')
for f in /run/containerd/s/*; do [ -S "$f" ] && ! grep -qxF "$f" <<<"$listening" && echo "socket $f"; done
[ -d /run/containerd/runc/k8s.io ] && ls /run/containerd/runc/k8s.io | sed 's|^|runc-state /run/containerd/runc/k8s.io/|'
# The state directory itself.
[ -e "$dir" ] && echo "directory $dir"
exit 0
