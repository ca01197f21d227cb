"""What the tests of `--gpu-check` share (the pod's own tests in tests/probe and the command's in
tests/cli), against the real API server of the `control_plane` fixture: nvidia-smi's output as
kwok serves it for the check pod, and the check pods left in the namespace."""

from __future__ import annotations

from pathlib import Path

from llmctl.config import NAMESPACE
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import apply_objects, cri_log, get_json

SMI_LOG = (
    "+-----------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |\n"
    "|   0  Tesla T4            On   | 00000000:00:1E.0 Off |                    0 |\n"
)


def check_pods(plane: ControlPlane) -> list[str]:
    pods = get_json(plane, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=gpu-check")
    return [p["metadata"]["name"] for p in pods["items"]]


def serve_smi_log(plane: ControlPlane, tmp_path: Path, text: str) -> None:
    """kwok serves `text` as the log of every nvidia-smi container in the namespace."""
    (tmp_path / "nvidia-smi.log").write_text(cri_log(text))
    apply_objects(plane, [{
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": "nvidia-smi"},
        "spec": {
            "selector": {"matchNamespaces": [NAMESPACE]},
            "logs": [{"containers": ["nvidia-smi"], "logsFile": str(tmp_path / "nvidia-smi.log")}],
        },
    }])  # fmt: skip
