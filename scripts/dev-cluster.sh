#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, without a cloud or Docker: etcd,
# kube-apiserver (PodSecurity admission, RBAC, ServiceAccount tokens), controller-manager,
# scheduler, kwok (fake nodes whose pods run), and the KEDA operator, each a process on loopback,
# and one real node (containerd, runc, a CNI bridge, kubelet, kube-proxy, CoreDNS) that runs pods.
#
#   bash scripts/dev-cluster.sh up     # builds the binaries once (cached), starts, prints the kubeconfig
#   bash scripts/dev-cluster.sh up --no-node   # the same without the real node (no root needed)
#   bash scripts/dev-cluster.sh down   # stops it (its data stays in the directory until the next `up`)
#
# The pytest fixture `control_plane` (tests/conftest.py) runs the same code, tests/cluster/controlplane.py.
# LLMCTL_DEV_CLUSTER_DIR chooses where it keeps its data, certificates and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${LLMCTL_DEV_CLUSTER_DIR:-$HOME/.cache/llmctl/dev-cluster}"
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
case "${1:-}" in
  up)
    if [ -f "$dir/pids.json" ]; then
      echo "dev-cluster: already up ($dir/kubeconfig); run 'down' first" >&2
      exit 1
    fi
    # --one-file-system: never into a mount a crashed node may have left (`down` removes them).
    rm -rf --one-file-system "$dir/etcd" "$dir/logs" "$dir/ports.json" "$dir/node"
    node=--node
    [ "${2:-}" = --no-node ] && node=
    kubeconfig=$("$python" -m tests.cluster.controlplane up --dir "$dir" $node)
    echo "export KUBECONFIG=$kubeconfig" >&2
    echo "$kubeconfig"
    ;;
  down)
    "$python" -m tests.cluster.controlplane down --dir "$dir"
    ;;
  *)
    echo "usage: $0 up [--no-node] | down" >&2
    exit 2
    ;;
esac
