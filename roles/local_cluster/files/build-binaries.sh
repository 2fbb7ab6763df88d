#!/usr/bin/env bash
# Build the local target's control plane from the Go module proxy into a cache outside the repo.
#
# Why from source: this kind of machine reaches the Go module proxy but no release downloads, so the
# real kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok/kwokctl and
# prometheus-adapter are compiled once and cached, keyed by version. A warm run only checks stamps.
#
# Inputs (environment): K8S_VERSION ETCD_VERSION KWOK_VERSION ADAPTER_VERSION KSM_VERSION COREDNS_VERSION
#   METRICS_SERVER_VERSION KUBE_ROUTER_VERSION PROMETHEUS_OPERATOR_VERSION PROMETHEUS_VERSION HARNESS_CACHE (CoreDNS,
#   metrics-server, kube-router, prometheus-operator and Prometheus are the real node's add-ons: their images are built
#   with the others, so they are built here too)
#   BUILD_NODE=1 also builds kubelet and kube-proxy for the local target's real node (roles/real_node);
#   BUILD_NODE=only builds just those two (then only K8S_VERSION and HARNESS_CACHE are needed).
# Output: $HARNESS_CACHE/bin/<component>-<version>/<binaries> and a .stamp file in each directory.
# Progress goes to stdout, one line per step with elapsed seconds; exit code is non-zero on failure.
set -euo pipefail

: "${K8S_VERSION:?K8S_VERSION is required, e.g. 1.35.4}"
if [ "${BUILD_NODE:-0}" != only ]; then
  : "${ETCD_VERSION:?ETCD_VERSION is required, e.g. 3.6.16}"
  : "${KWOK_VERSION:?KWOK_VERSION is required, e.g. 0.8.0}"
  : "${ADAPTER_VERSION:?ADAPTER_VERSION is required, e.g. 0.12.0}"
  : "${KSM_VERSION:?KSM_VERSION is required, e.g. 2.16.0}"
  : "${COREDNS_VERSION:?COREDNS_VERSION is required, e.g. 1.14.7}"
  : "${METRICS_SERVER_VERSION:?METRICS_SERVER_VERSION is required, e.g. 0.8.0}"
  : "${KUBE_ROUTER_VERSION:?KUBE_ROUTER_VERSION is required, e.g. 2.1.0}"
  : "${PROMETHEUS_OPERATOR_VERSION:?PROMETHEUS_OPERATOR_VERSION is required, e.g. 0.85.0}"
  : "${PROMETHEUS_VERSION:?PROMETHEUS_VERSION is required, e.g. 3.5.0}"
fi
: "${HARNESS_CACHE:?HARNESS_CACHE is required}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export GOMODCACHE="$HARNESS_CACHE/go/mod" GOCACHE="$HARNESS_CACHE/go/build"
BIN="$HARNESS_CACHE/bin"
WORK="$HARNESS_CACHE/go/work"
mkdir -p "$BIN" "$WORK"

# With BUILD_LOG set (the role's async run), progress also goes to that file for `tail -f`.
if [ -n "${BUILD_LOG:-}" ]; then exec > >(tee -a "$BUILD_LOG") 2>&1; fi

start_all=$SECONDS
log() { printf '[build %4ds] %s\n' "$((SECONDS - start_all))" "$*"; }

# Run a noisy go command with its output in a log; on failure show the end of the log and the path.
quiet() {
  local logf="$WORK/last-command.log"
  if ! "$@" >"$logf" 2>&1; then
    log "FAILED: $*"; tail -n 30 "$logf"; log "full output: $logf"; return 1
  fi
}

# A component is rebuilt only when its stamp is missing (a half-finished build leaves no stamp).
built() { [ -f "$1/.stamp" ]; }
finish() { date -u +%FT%TZ >"$1/.stamp"; log "$2 ready in $1 ($(($SECONDS - $3))s)"; }

# Version stamps so `/version` and `kubelet --version` say which release this is.
k8s_ldflags() {
  local minor="${K8S_VERSION#*.}" ldf="-s -w" pkg; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldf+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%FT%TZ)"
  done
  printf '%s' "$ldf"
}

# Point a fresh module at k8s.io/kubernetes with each staging module replaced by its published version.
k8s_module() {  # dir
  local mod=$1 staging="0.${K8S_VERSION#1.}"
  log "kubernetes v$K8S_VERSION: resolving modules in $mod (staging v$staging)"
  rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
  go mod init local/k8sbuild >/dev/null 2>&1
  go mod download k8s.io/kubernetes@"v$K8S_VERSION"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging paths;
  # replaces in a dependency are ignored, so point each one at its published version instead.
  local gomod="$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod" m
  for m in $(grep -oE '=> \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | sed 's|=> ./staging/src/||' | sort -u); do
    go mod edit -replace="$m=$m@v$staging"
  done
}

build_kubernetes() {
  local out="$BIN/kubernetes-v$K8S_VERSION" t=$SECONDS
  if built "$out"; then log "kubernetes v$K8S_VERSION cached in $out"; return; fi
  k8s_module "$WORK/kubernetes-v$K8S_VERSION"
  # `go get` of the command packages (not just the module) records go.sum entries for every import.
  local cmds="kube-apiserver kube-controller-manager kube-scheduler kubectl" pkgs=() c
  for c in $cmds; do pkgs+=("k8s.io/kubernetes/cmd/$c@v$K8S_VERSION"); done
  quiet go get "${pkgs[@]}"
  local ldf; ldf=$(k8s_ldflags)
  mkdir -p "$out.tmp"
  log "kubernetes v$K8S_VERSION: compiling kube-apiserver kube-controller-manager kube-scheduler kubectl (cold: 15-30 min on 2 cores)"
  # Report progress while the compiler runs: the number of packages in the build cache grows.
  ( while sleep 60; do log "kubernetes: still compiling, build cache $(du -sh "$GOCACHE" 2>/dev/null | cut -f1)"; done ) &
  local ticker=$!
  if ! quiet go build -trimpath -ldflags "$ldf" -o "$out.tmp/" "${pkgs[@]%@*}"; then
    kill "$ticker" 2>/dev/null; return 1
  fi
  kill "$ticker" 2>/dev/null || true
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish "$out" "kubernetes v$K8S_VERSION" "$t"
}

# The real node's kubelet and kube-proxy: same source and module set as the control plane, so a warm
# build cache from build_kubernetes makes this about 7 minutes on 2 cores instead of a second cold build.
build_kubernetes_node() {
  local out="$BIN/kubernetes-node-v$K8S_VERSION" t=$SECONDS
  if built "$out"; then log "kubelet/kube-proxy v$K8S_VERSION cached in $out"; return; fi
  k8s_module "$WORK/kubernetes-node-v$K8S_VERSION"
  local pkgs=("k8s.io/kubernetes/cmd/kubelet@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-proxy@v$K8S_VERSION")
  quiet go get "${pkgs[@]}"
  local ldf; ldf=$(k8s_ldflags)
  mkdir -p "$out.tmp"
  log "kubernetes v$K8S_VERSION: compiling kubelet kube-proxy (about 7 min on 2 cores with a warm build cache)"
  ( while sleep 60; do log "kubelet/kube-proxy: still compiling, build cache $(du -sh "$GOCACHE" 2>/dev/null | cut -f1)"; done ) &
  local ticker=$!
  if ! quiet go build -trimpath -ldflags "$ldf" -o "$out.tmp/" "${pkgs[@]%@*}"; then
    kill "$ticker" 2>/dev/null; return 1
  fi
  kill "$ticker" 2>/dev/null || true
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish "$out" "kubelet/kube-proxy v$K8S_VERSION" "$t"
}

build_etcd() {
  local out="$BIN/etcd-v$ETCD_VERSION" t=$SECONDS
  if built "$out"; then log "etcd v$ETCD_VERSION cached in $out"; return; fi
  # `go install go.etcd.io/etcd/server/v3@...` refuses modules with replaces; build it as a dependency.
  local mod="$WORK/etcd-v$ETCD_VERSION"
  rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
  go mod init local/etcdbuild >/dev/null 2>&1
  log "etcd v$ETCD_VERSION: resolving and compiling"
  quiet go get go.etcd.io/etcd/server/v3@"v$ETCD_VERSION"
  mkdir -p "$out.tmp"
  quiet go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish "$out" "etcd v$ETCD_VERSION" "$t"
}

# Build one command of a module as a dependency of a throwaway module. `go install ...@v` asks the proxy
# for the module's version list (a deprecation check), which the proxy refuses for some modules here.
build_as_dependency() {  # name version module package binary ldflags [module-version, default: version]
  local name=$1 version=$2 module=$3 package=$4 binary=$5 ldflags=$6 modversion=${7:-$2}
  local out="$BIN/$name-v$version" t=$SECONDS
  if built "$out"; then log "$name v$version cached in $out"; return; fi
  local mod="$WORK/$name-v$version"
  rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
  go mod init "local/$name-build" >/dev/null 2>&1
  log "$name v$version: resolving and compiling"
  quiet go get "$package@v$modversion"
  mkdir -p "$out.tmp"
  quiet go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$binary" "$package"
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish "$out" "$name v$version" "$t"
}

go_install() {  # name version out packages...
  local name=$1 version=$2 out=$3 t=$SECONDS; shift 3
  if built "$out"; then log "$name v$version cached in $out"; return; fi
  log "$name v$version: compiling $*"
  mkdir -p "$out.tmp"
  local p; for p in "$@"; do GOBIN="$out.tmp" quiet go install -trimpath -ldflags "-s -w" "$p@v$version"; done
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish "$out" "$name v$version" "$t"
}

if [ "${BUILD_NODE:-0}" = only ]; then build_kubernetes_node; log "done (total $((SECONDS - start_all))s)"; exit 0; fi
build_kubernetes
if [ "${BUILD_NODE:-0}" = 1 ]; then build_kubernetes_node; fi
build_etcd
go_install kwok "$KWOK_VERSION" "$BIN/kwok-v$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
build_as_dependency prometheus-adapter "$ADAPTER_VERSION" sigs.k8s.io/prometheus-adapter \
  sigs.k8s.io/prometheus-adapter/cmd/adapter adapter "-s -w"
build_as_dependency kube-state-metrics "$KSM_VERSION" k8s.io/kube-state-metrics/v2 k8s.io/kube-state-metrics/v2 \
  kube-state-metrics "-s -w -X k8s.io/kube-state-metrics/v2/pkg/version.Version=v$KSM_VERSION"
# CoreDNS, metrics-server and kube-router have no replaces: built as dependencies like the adapter. CoreDNS's version
# variable is what `coredns -version` prints.
build_as_dependency coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns coredns \
  "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION"
build_as_dependency metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server \
  sigs.k8s.io/metrics-server/cmd/metrics-server metrics-server \
  "-s -w -X k8s.io/client-go/pkg/version.gitVersion=v$METRICS_SERVER_VERSION"
build_as_dependency kube-router "$KUBE_ROUTER_VERSION" github.com/cloudnativelabs/kube-router/v2 \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router kube-router \
  "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION"
# prometheus-operator's go.mod replaces its two API modules with local paths; as a dependency those replaces are
# ignored and the published pkg/apis/monitoring and pkg/client of the same version are used. The operator, its
# config reloader (the sidecar it adds to Prometheus and Alertmanager pods) and the CRDs of that release, which the
# module carries under example/prometheus-operator-crd, land in one directory.
build_prometheus_operator() {
  local version=$PROMETHEUS_OPERATOR_VERSION out="$BIN/prometheus-operator-v$PROMETHEUS_OPERATOR_VERSION" t=$SECONDS
  if built "$out"; then log "prometheus-operator v$version cached in $out"; return; fi
  local module=github.com/prometheus-operator/prometheus-operator mod="$WORK/prometheus-operator-v$version"
  local ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
  ldflags+=" -X github.com/prometheus/common/version.Revision=v$version -X github.com/prometheus/common/version.Branch=release"
  rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
  go mod init local/prometheus-operator-build >/dev/null 2>&1
  log "prometheus-operator v$version: resolving and compiling the operator and its config reloader"
  quiet go get "$module/cmd/operator@v$version" "$module/cmd/prometheus-config-reloader@v$version"
  mkdir -p "$out.tmp/crds"
  quiet go build -trimpath -ldflags "$ldflags" -o "$out.tmp/operator" "$module/cmd/operator"
  quiet go build -trimpath -ldflags "$ldflags" -o "$out.tmp/prometheus-config-reloader" \
    "$module/cmd/prometheus-config-reloader"
  cp "$(go list -m -f '{{.Dir}}' "$module")"/example/prometheus-operator-crd/*.yaml "$out.tmp/crds/"
  chmod u+w "$out.tmp/crds"/*.yaml
  rm -rf "$out" && mv "$out.tmp" "$out"
  finish "$out" "prometheus-operator v$version" "$t"
}
build_prometheus_operator

# Prometheus for the operator's pods. Debian's package is built without Kubernetes service
# discovery, which every ServiceMonitor needs, and 2.42 is below the operator's compatibility matrix (v2.45+).
# Prometheus v3.X.Y is the Go module's v0.3XX.Y. Every discovery plugin is compiled in (v3.5 has no build tag that
# leaves them out). Without the builtinassets tag the web UI's assets are not embedded (upstream builds them with
# npm first): the UI's pages answer with an error, the HTTP API is complete.
build_prometheus() {
  local major=${PROMETHEUS_VERSION%%.*} rest=${PROMETHEUS_VERSION#*.}; local minor=${rest%%.*} patch=${rest#*.}
  local v=$PROMETHEUS_VERSION; local ldflags="-s -w -X github.com/prometheus/common/version.Version=$v"
  ldflags+=" -X github.com/prometheus/common/version.Revision=v$v -X github.com/prometheus/common/version.Branch=release"
  build_as_dependency prometheus "$v" github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/prometheus \
    prometheus "$ldflags" "0.$((major * 100 + minor)).$patch"
}
build_prometheus
log "all binaries ready under $BIN (total $((SECONDS - start_all))s)"
