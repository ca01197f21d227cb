#!/usr/bin/env bash
# Builds what a real node of the test cluster runs, from Go modules and sources, once per version:
# the kubelet and kube-proxy (tools/kube, the control plane's own k8s.io/kubernetes), containerd v2
# with ctr and its runc shim, runc, the CNI plugins (bridge, host-local, loopback, portmap),
# CoreDNS (tools/coredns), the pause image from Kubernetes' own build/pause, and a tiny busybox
# image the tests run. Everything lands in $LLMCTL_CACHE/<name>-<version>/ (default
# ~/.cache/llmctl) and is reused. tests/cluster/node.py starts them.
# stdout: NAME=PATH lines (sourceable); stderr: progress and the time each build took.
# Needs Go >= 1.26, the Go module proxy, gcc with a static libc (libc6-dev), libseccomp-dev
# (runc's seccomp), buildah and busybox-static (Debian); scripts/test.sh installs them.
# --cached: build nothing, print the paths or say what is missing; one build at a time, each
# result renamed into place from a unique temporary path (scripts/lib/cache.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cache.sh "$@"
# shellcheck source=../tools/versions.env
source tools/versions.env
export GOFLAGS="-trimpath -buildvcs=false"

log() { echo "build-node: $*" >&2; }
command -v go >/dev/null || { log "go is not installed (Go >= 1.26 is needed)"; exit 1; }
cache_lock

# timed NAME CMD...: run CMD, logging how long it took.
timed() {
  local name=$1 start; shift
  start=$(date +%s)
  log "building $name ..."
  "$@"
  log "built $name in $(( $(date +%s) - start ))s"
}

K8S_BIN="$CACHE/k8s-$K8S_VERSION/bin"
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
# The same version stamp as scripts/build-control-plane.sh (k/k's hack/lib/version.sh).
K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
for cmd in kubelet kube-proxy; do
  if [ ! -x "$K8S_BIN/$cmd" ] && cache_needs "$cmd"; then
    cache_tmp tmp "$K8S_BIN/$cmd"
    timed "$cmd" bash -c "cd tools/kube && CGO_ENABLED=0 nice go build -ldflags='$K8S_LDFLAGS' \
      -o '$tmp' k8s.io/kubernetes/cmd/$cmd"
    mv "$tmp" "$K8S_BIN/$cmd"
  fi
done

# containerd v2 (the kubelet of Kubernetes 1.36 needs 2.x; Debian 12 has 1.6). Its go.mod has no
# replace lines, so `go install module@version` builds it as released. No cgo and without the
# btrfs/devmapper/zfs snapshotters: the node uses overlayfs.
CONTAINERD_DIR="$CACHE/containerd-$CONTAINERD_VERSION"
if [ ! -x "$CONTAINERD_DIR/bin/containerd-shim-runc-v2" ] && cache_needs containerd; then
  mod=github.com/containerd/containerd/v2
  cache_tmpdir gobin "$CONTAINERD_DIR"
  timed "containerd $CONTAINERD_VERSION" env GOBIN="$gobin" CGO_ENABLED=0 nice go install \
    -tags 'no_btrfs no_devmapper no_zfs' \
    -ldflags "-s -w -X $mod/version.Version=$CONTAINERD_VERSION" \
    "$mod/cmd/containerd@$CONTAINERD_VERSION" "$mod/cmd/ctr@$CONTAINERD_VERSION" \
    "$mod/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  cache_put_dir "$CONTAINERD_DIR/bin" "$gobin"
fi

# runc from its module rather than Debian's 1.1.5: the version is pinned here like every other
# part (1.1 is out of support), and it is the runc containerd 2.x is released against. cgo, for
# its seccomp support (libseccomp-dev).
RUNC_DIR="$CACHE/runc-$RUNC_VERSION"
if [ ! -x "$RUNC_DIR/bin/runc" ] && cache_needs runc; then
  cache_tmpdir gobin "$RUNC_DIR"
  timed "runc $RUNC_VERSION" env GOBIN="$gobin" CGO_ENABLED=1 nice go install -tags seccomp \
    -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
  cache_put_dir "$RUNC_DIR/bin" "$gobin"
fi

CNI_DIR="$CACHE/cni-plugins-$CNI_PLUGINS_VERSION"
if [ ! -x "$CNI_DIR/bin/portmap" ] && cache_needs "CNI plugins"; then
  mod=github.com/containernetworking/plugins
  cache_tmpdir gobin "$CNI_DIR"
  timed "CNI plugins $CNI_PLUGINS_VERSION" env GOBIN="$gobin" CGO_ENABLED=0 nice go install \
    -ldflags "-s -w -X $mod/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "$mod/plugins/main/bridge@$CNI_PLUGINS_VERSION" "$mod/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
    "$mod/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" "$mod/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
  cache_put_dir "$CNI_DIR/bin" "$gobin"
fi

# CoreDNS with the plugins the cluster DNS uses (tools/coredns/main.go); its version is the one
# tools/coredns/go.mod requires.
COREDNS_DIR="$CACHE/coredns-$COREDNS_VERSION"
if [ ! -x "$COREDNS_DIR/bin/coredns" ] && cache_needs CoreDNS; then
  grep -q "github.com/coredns/coredns $COREDNS_VERSION\$" tools/coredns/go.mod \
    || { log "tools/coredns/go.mod does not require CoreDNS $COREDNS_VERSION (tools/versions.env)"; exit 1; }
  cache_tmp tmp "$COREDNS_DIR/bin/coredns"
  timed "CoreDNS $COREDNS_VERSION" bash -c "cd tools/coredns && CGO_ENABLED=0 nice go build \
    -ldflags='-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION' -o '$tmp' ."
  mv "$tmp" "$COREDNS_DIR/bin/coredns"
fi

# buildah with a storage of its own (vfs: no overlay mounts to leave behind, no daemon).
BUILDAH_ROOT="$CACHE/buildah"
buildah_() {
  buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs "$@"
}
# oci_archive NAME ARCHIVE TAG CONTEXT [BUD ARGS...]: `buildah bud` CONTEXT (its Dockerfile) to
# TAG, then write it as an OCI archive, which `ctr images import` reads.
oci_archive() {
  local name=$1 archive=$2 tag=$3 context=$4 tmp; shift 4
  command -v buildah >/dev/null || { log "buildah is not installed (apt-get install buildah)"; exit 1; }
  cache_tmp tmp "$archive"
  rm -f "$tmp"  # buildah writes the archive itself
  timed "$name image" bash -c '
    set -euo pipefail
    buildah_() { buildah --root "$0/root" --runroot "$0/run" --storage-driver vfs "$@"; }
    buildah_ bud --quiet --isolation chroot --layers=false --timestamp 0 -t "$2" "${@:4}" "$3" >/dev/null
    buildah_ push --quiet "$2" "oci-archive:$1:$2"
    buildah_ rmi "$2" >/dev/null' "$BUILDAH_ROOT" "$tmp" "$tag" "$context" "$@"
  mv "$tmp" "$archive"
}

# The pause image (every pod's sandbox): pause.c and the Dockerfile from k8s.io/kubernetes'
# build/pause at K8S_VERSION, compiled as its Makefile does, tagged as its Makefile tags it. No
# registry can be reached here, so containerd is told to use this tag (tests/cluster/node.py).
K8S_SRC=$(cd tools/kube && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
PAUSE_TAG=$(sed -n 's/^TAG ?= *//p' "$K8S_SRC/build/pause/Makefile")
PAUSE_IMAGE="registry.k8s.io/pause:$PAUSE_TAG"
PAUSE_DIR="$CACHE/pause-$PAUSE_TAG-k8s-$K8S_VERSION"
if [ ! -f "$PAUSE_DIR/pause.oci.tar" ] && cache_needs "pause image"; then
  command -v gcc >/dev/null || { log "gcc is not installed (apt-get install gcc libc6-dev)"; exit 1; }
  ctx="$PAUSE_DIR/context"
  rm -rf "$ctx" && mkdir -p "$ctx/bin"
  cp "$K8S_SRC/build/pause/Dockerfile" "$ctx/Dockerfile" && chmod u+w "$ctx/Dockerfile"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-$K8S_VERSION" \
    -o "$ctx/bin/pause-linux-amd64" "$K8S_SRC/build/pause/linux/pause.c"
  oci_archive pause "$PAUSE_DIR/pause.oci.tar" "$PAUSE_IMAGE" "$ctx" \
    --build-arg ARCH=amd64 --build-arg BASE=scratch
fi

# A tiny image the tests run on the real node: Debian's static busybox and its applet links, with
# a non-root user of its own (tests/cluster/images/busybox/Dockerfile). Keyed by busybox's version.
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || { log "busybox-static is not installed (apt-get install busybox-static)"; exit 1; }
file "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' \
  || { log "$BUSYBOX is not static: apt-get install busybox-static"; exit 1; }
BUSYBOX_VERSION=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null | tr ':+~' '___')
BUSYBOX_DIR="$CACHE/busybox-image-$BUSYBOX_VERSION"
BUSYBOX_IMAGE="localhost/llmctl-test/busybox:$BUSYBOX_VERSION"
if [ ! -f "$BUSYBOX_DIR/busybox.oci.tar" ] && cache_needs "busybox image"; then
  ctx="$BUSYBOX_DIR/context"
  rm -rf "$ctx" && mkdir -p "$ctx/rootfs/bin"
  cp tests/cluster/images/busybox/Dockerfile "$ctx/"
  cp "$BUSYBOX" "$ctx/rootfs/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs/bin/$applet"
  done
  oci_archive busybox "$BUSYBOX_DIR/busybox.oci.tar" "$BUSYBOX_IMAGE" "$ctx"
fi
cache_checked

cat <<OUT
KUBELET=$K8S_BIN/kubelet
KUBE_PROXY=$K8S_BIN/kube-proxy
CONTAINERD_BIN=$CONTAINERD_DIR/bin
RUNC=$RUNC_DIR/bin/runc
CNI_BIN=$CNI_DIR/bin
COREDNS=$COREDNS_DIR/bin/coredns
PAUSE_IMAGE=$PAUSE_IMAGE
PAUSE_ARCHIVE=$PAUSE_DIR/pause.oci.tar
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
BUSYBOX_ARCHIVE=$BUSYBOX_DIR/busybox.oci.tar
OUT
