#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run, from Go modules, once per version:
# kube-apiserver, kube-controller-manager, kube-scheduler and etcd (tools/kube), kwok, and the
# KEDA operator and metrics adapter (tools/keda); copies the CRDs (KEDA's, kwok's,
# prometheus-operator's) from the modules that ship them. Everything lands in
# $LLMCTL_CACHE/<name>-<version>/ (default ~/.cache/llmctl, as for llama-server and the test
# model) and is reused.
# stdout: NAME=PATH lines (sourceable); stderr: progress and the time each build took.
# Needs Go >= 1.26 (every module here says `go 1.26.0`) and the Go module proxy.
# --cached: build nothing, print the paths or say what is missing; one build at a time, each
# result renamed into place from a unique temporary path (scripts/lib/cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cache.sh "$@"
# shellcheck source=../tools/versions.env
source tools/versions.env
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

log() { echo "build-control-plane: $*" >&2; }
[ "$CACHE_ONLY" = 1 ] || command -v go >/dev/null || { log "go is not installed (Go >= 1.26 is needed)"; exit 1; }
cache_lock

# build NAME OUT MODULE_DIR PACKAGE [LDFLAGS]
build() {
  local name=$1 out=$2 dir=$3 pkg=$4 ldflags=${5:-} start tmp
  if [ -x "$out" ]; then return; fi
  cache_needs "$name" || return 0
  cache_tmp tmp "$out"
  start=$(date +%s)
  log "building $name ($pkg) ..."
  (cd "$dir" && nice go build -ldflags="-s -w $ldflags" -o "$tmp" "$pkg")
  mv "$tmp" "$out"
  log "built $name in $(( $(date +%s) - start ))s"
}

# module_dir MODULE_ROOT MODULE -> the module's source directory in the module cache
module_dir() { (cd "$1" && go mod download "$2" && go list -m -f '{{.Dir}}' "$2"); }

K8S_BIN="$CACHE/k8s-$K8S_VERSION/bin"
# What k/k's own build stamps in (hack/lib/version.sh): without it the binaries say
# v0.0.0-master, and Helm and kubectl read the server's version from /version.
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
K8S_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  build "$cmd" "$K8S_BIN/$cmd" tools/kube "k8s.io/kubernetes/cmd/$cmd" "$K8S_LDFLAGS"
done
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION/bin/etcd"
build etcd "$ETCD_BIN" tools/kube ./etcd

KWOK_DIR="$CACHE/kwok-$KWOK_VERSION"
if [ ! -x "$KWOK_DIR/bin/kwok" ] && cache_needs kwok; then
  start=$(date +%s)
  log "building kwok (go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION) ..."
  # kwok's go.mod has no replace lines, so `go install module@version` builds it as released.
  cache_tmpdir gobin "$KWOK_DIR"
  GOBIN="$gobin" nice go install -ldflags='-s -w' "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mkdir -p "$KWOK_DIR/bin" && mv "$gobin/kwok" "$KWOK_DIR/bin/kwok"
  log "built kwok in $(( $(date +%s) - start ))s"
fi
# copied_in DIR TMP: replace DIR with the directory TMP (filled, marked done) in one rename.
copied_in() {
  chmod -R u+w "$2"
  touch "$2/.done"
  cache_put_dir "$1" "$2"
}
if [ ! -f "$KWOK_DIR/crds/.done" ] && cache_needs "kwok CRDs"; then
  src=$(cd "$HOME" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  cache_tmpdir crds "$KWOK_DIR"
  cache_tmpdir stages "$KWOK_DIR"
  # The kinds the control plane enables (--enable-crds): pods' logs and port-forwards.
  for kind in logs clusterlogs portforwards clusterportforwards; do
    cp "$src/kustomize/crd/bases/kwok.x-k8s.io_$kind.yaml" "$crds/"
  done
  # kwok's own node stages: nodes become Ready and keep a lease. The pod stages are ours
  # (tests/cluster/kwok/), adapted from kwok's.
  cp "$src/kustomize/stage/node/fast/node-initialize.yaml" \
     "$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" "$stages/"
  copied_in "$KWOK_DIR/stages" "$stages"
  copied_in "$KWOK_DIR/crds" "$crds"
fi

KEDA_DIR="$CACHE/keda-$KEDA_VERSION"
# LLMCTL_WITHOUT_KEDA=1 skips the longest build (KEDA's operator carries every scaler's SDK): the
# control plane then runs without KEDA (its CRDs are still installed), and the scale-from-zero
# test fails saying so.
if [ "${LLMCTL_WITHOUT_KEDA:-0}" != 1 ]; then
  build keda-operator "$KEDA_DIR/bin/keda-operator" tools/keda github.com/kedacore/keda/v2/cmd/operator
  # The metrics adapter (external.metrics.k8s.io): the HPAs KEDA makes read their metrics through
  # it. Same module, so the operator's packages are already in Go's build cache.
  build keda-adapter "$KEDA_DIR/bin/keda-adapter" tools/keda github.com/kedacore/keda/v2/cmd/adapter
fi
if [ ! -f "$KEDA_DIR/crds/.done" ] && cache_needs "KEDA CRDs"; then
  src=$(module_dir tools/keda github.com/kedacore/keda/v2)
  cache_tmpdir crds "$KEDA_DIR"
  cp "$src"/config/crd/bases/*.yaml "$crds/"
  copied_in "$KEDA_DIR/crds" "$crds"
fi

PROM_DIR="$CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if [ ! -f "$PROM_DIR/crds/.done" ] && cache_needs "prometheus-operator CRDs"; then
  src=$(cd "$HOME" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  cache_tmpdir crds "$PROM_DIR"
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$crds/"
  done
  copied_in "$PROM_DIR/crds" "$crds"
fi
cache_checked

cat <<OUT
KUBE_APISERVER=$K8S_BIN/kube-apiserver
KUBE_CONTROLLER_MANAGER=$K8S_BIN/kube-controller-manager
KUBE_SCHEDULER=$K8S_BIN/kube-scheduler
ETCD=$ETCD_BIN
KWOK=$KWOK_DIR/bin/kwok
KWOK_CRDS=$KWOK_DIR/crds
KWOK_STAGES=$KWOK_DIR/stages
KEDA_CRDS=$KEDA_DIR/crds
PROMETHEUS_OPERATOR_CRDS=$PROM_DIR/crds
OUT
if [ "${LLMCTL_WITHOUT_KEDA:-0}" != 1 ]; then
  echo "KEDA_OPERATOR=$KEDA_DIR/bin/keda-operator"
  echo "KEDA_ADAPTER=$KEDA_DIR/bin/keda-adapter"
fi
