"""The rendered stack on the real node (tests/cluster/node.py): the router image built from the
unchanged Dockerfile (scripts/build-image.sh) imported into the node's containerd, and either a
Kustomize overlay, written by the test, on top of the committed `clusters/<cloud>/base`
(tests/cluster/test_pods.py), or the Helm chart with a values file of the same changes
(`chart_values`, tests/cluster/test_helm_pods.py).

Both change only what a test on this machine must, each for a stated reason:
- the router image (the fetcher's too: the same image) -> the locally built tag: nothing is
  pulled here;
- the model URL -> an HTTP server on the node's bridge address serving the SmolLM2 GGUF (the
  pods reach the node's bridge, nothing else), under the file name the base expects;
- the model volume's StorageClass -> `llmctl-real-node`, whose PersistentVolumes the test makes
  (hostPath on this machine, owned by the pods' user): no volume provisioner runs here;
- placement -> the real node's label and taint (the kwok nodes keep every other pod);
- one replica of each Deployment and smaller CPU requests: the node is a shared 2-core machine,
  and the base asks for 2 x 1 CPU for llama-server alone.
Everything else (commands, args, probes, users, security contexts, volumes, preStop hooks, the
router's ConfigMap and Services) is the base as rendered.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import yaml

from llmctl.config import Stack
from tests.cluster.controlplane import REPO, ControlPlane, NotBuilt
from tests.cluster.kit import get_json, wait_for
from tests.support.range_server import Served, range_server

STORAGE_CLASS = "llmctl-real-node"
POD_USER = 10001  # the pods' runAsUser (manifests/render.py POD_SECURITY)
ROUTER_IMAGE = "ghcr.io/llmctl/llm-router"
MODEL = "tinyllama"  # the CPU tier's alias in the router's table
# The llama-server container's CPU request: the node is a shared 2-core machine, and the base
# asks for 2 x 1 CPU for llama-server alone.
SERVER_CPU = "250m"


@dataclass(frozen=True)
class BuiltImages:
    router: str  # the reference the router image was built as
    archives: dict[str, Path]  # reference -> OCI archive


def built_images() -> BuiltImages:
    """The images scripts/build-image.sh built for this source tree (`--cached`: it builds
    nothing here and fails naming the command when they are missing): `REFERENCE ARCHIVE`
    lines, the router image first, then the stand-in llama.cpp base the llama-server pods run."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh"), "--cached"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise NotBuilt(done.stderr.strip().splitlines()[-1])
    out = done.stdout
    pairs = [line.split(" ", 1) for line in out.splitlines() if line.strip()]
    return BuiltImages(router=pairs[0][0], archives={ref: Path(path) for ref, path in pairs})


def import_images(node: Any) -> BuiltImages:
    """The images built (cached) and imported into the real node's containerd."""
    images = built_images()
    for archive in images.archives.values():
        node.import_image(archive)
    return images


@dataclass(frozen=True)
class ServedModel:
    served: Served  # what the pods asked of the server
    url: str  # the model URL the pods fetch
    path: str  # where the pods keep it (the base's cpu.model.path)
    size: int  # bytes
    sha256: str  # the served file's: the catalog's pin is the real model's, not this one's


@contextmanager
def serving_model(node: Any) -> Iterator[ServedModel]:
    """The SmolLM2 GGUF served over HTTP on the node's bridge address (the only address the
    pods reach), under the file name the base expects."""
    from tests.cli.test_inference_cmd import smollm2_path

    gguf = smollm2_path()
    filename = PurePosixPath(Stack().cpu.model.path).name
    assert node.slot is not None
    with range_server({f"models/{filename}": gguf}, host=node.slot.gateway) as served:
        yield ServedModel(
            served=served,
            url=f"{served.base_url}/models/{filename}",
            path=f"/models/{filename}",
            size=gguf.stat().st_size,
            sha256=hashlib.sha256(gguf.read_bytes()).hexdigest(),
        )


def model_volumes(
    root: Path, count: int, prefix: str = "llmctl-real-node-model"
) -> list[dict[str, Any]]:
    """`count` hostPath PersistentVolumes of class STORAGE_CLASS, each an empty directory under
    `root` owned by the pods' user (hostPath volumes get no fsGroup ownership): one for each
    llama-server pod started, since each pod's ephemeral claim takes a volume of its own and
    keeps it (reclaim policy Retain). `prefix` keeps two test modules' volumes apart."""
    volumes = []
    for i in range(count):
        name = f"{prefix}-{i}"
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, POD_USER, POD_USER)
        volumes.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": STORAGE_CLASS,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(path), "type": "Directory"},
                },
            }
        )
    return volumes


def placement() -> dict[str, Any]:
    """The real node's label and the toleration of its taint (the kwok nodes keep every other
    pod)."""
    from tests.cluster.node import REAL_NODE_LABEL, REAL_NODE_TAINT

    key, value = REAL_NODE_LABEL
    return {
        "nodeSelector": {key: value},
        "tolerations": [{**REAL_NODE_TAINT, "operator": "Equal"}],
    }


def write_overlay(
    directory: Path,
    base: Path,
    router_image: str,
    model_url: str,
    volumes: int = 8,
    server_container_cpu: str = SERVER_CPU,
    model_sha256: str | None = None,
) -> Path:
    """The overlay (module docstring) in `directory`, on top of `base`, with `volumes` model
    volumes (their directories under `directory`/volumes)."""
    name, _, tag = router_image.rpartition(":")
    on_node = placement()
    router_patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "llm-router", "namespace": "llm-server"},
        "spec": {"replicas": 1, "template": {"spec": on_node}},
    }
    server_patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cpu-llm-server", "namespace": "llm-server"},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    **on_node,
                    "initContainers": [
                        {
                            "name": "fetch-model",
                            "env": [{"name": "MODEL_URI", "value": model_url}]
                            + (
                                [{"name": "MODEL_SHA256", "value": model_sha256}]
                                if model_sha256
                                else []
                            ),
                        }
                    ],
                    "containers": [
                        {
                            "name": "llama-server",
                            "resources": {"requests": {"cpu": server_container_cpu}},
                        }
                    ],
                    "volumes": [
                        {
                            "name": "models",
                            "ephemeral": {
                                "volumeClaimTemplate": {"spec": {"storageClassName": STORAGE_CLASS}}
                            },
                        }
                    ],
                }
            },
        },
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(base, directory), "volumes.yaml"],
        "images": [{"name": ROUTER_IMAGE, "newName": name, "newTag": tag}],
        "patches": [{"path": "router.yaml"}, {"path": "cpu-llm-server.yaml"}],
    }
    directory.mkdir(parents=True, exist_ok=True)
    pvs = model_volumes(directory / "volumes", volumes)
    (directory / "volumes.yaml").write_text(yaml.safe_dump_all(pvs))
    (directory / "router.yaml").write_text(yaml.safe_dump(router_patch))
    (directory / "cpu-llm-server.yaml").write_text(yaml.safe_dump(server_patch))
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def chart_values(
    router_image: str, model_url: str, model_sha256: str | None = None
) -> dict[str, Any]:
    """The overlay's changes (module docstring) as values for charts/llm-router on top of its
    values.yaml. The llama-server image is the chart's default: the stand-in base is tagged with
    the official name. The volumes are model_volumes'."""
    return {
        "images": {"router": router_image},
        "router": {"replicas": 1, **placement()},
        "cpu": {
            "replicas": 1,
            **placement(),
            "model": {"uri": model_url, "storageClassName": STORAGE_CLASS}
            | ({"sha256": model_sha256} if model_sha256 else {}),
            "resources": {"requests": {"cpu": SERVER_CPU}},
        },
    }


def answers_through_service(plane: ControlPlane, namespace: str, service: str) -> bool:
    """Whether a chat completion through the router's Service (kube-proxy's rules on this
    machine) comes back 200."""
    found = get_json(plane, "service", "-n", namespace, service)
    address = f"{found['spec']['clusterIP']}:{found['spec']['ports'][0]['port']}"
    try:
        answer = httpx.post(
            f"http://{address}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            timeout=60,
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(plane, "pods", "-n", namespace, "-l", selector)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def wait_rollout(plane: ControlPlane, namespace: str, deployment: str, timeout_s: float) -> None:
    """Until the Deployment's rollout is complete (`kubectl rollout status`); fail with what the
    pods and events say."""
    try:
        plane.kubectl(
            "rollout", "status", "-n", namespace, f"deployment/{deployment}",
            f"--timeout={int(timeout_s)}s",
        )  # fmt: skip
    except RuntimeError as exc:
        raise AssertionError(
            f"deployment {deployment} did not roll out in {timeout_s:.0f}s: {exc}\n"
            + plane.kubectl("get", "pods,pvc", "-n", namespace, "-o", "wide")
            + plane.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")
        ) from None


def one_ready_pod(plane: ControlPlane, namespace: str, selector: str, timeout_s: float) -> str:
    """The name of the one Ready pod matching `selector` once no other pod is left."""

    def only() -> str | None:
        found = pods(plane, namespace, selector)
        if len(found) == 1 and ready(found[0]):
            return str(found[0]["metadata"]["name"])
        return None

    return wait_for(f"one Ready pod {selector}", only, timeout_s)


def exec_in(plane: ControlPlane, namespace: str, pod: str, container: str, *argv: str) -> str:
    return plane.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *argv)


def dump(plane: ControlPlane, namespace: str) -> str:
    """What a failing test shows: pods, claims and events."""
    return plane.kubectl("get", "pods,pvc,pv", "-n", namespace, "-o", "wide") + plane.kubectl(
        "get", "events", "-n", namespace, "--sort-by=.lastTimestamp"
    )


def cold_start_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    """`python -m tests.cluster.real_stack overlay DIR --model-url URL`: the overlay the tests
    apply, for the dev cluster (README, "The CPU stack on the real node")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.real_stack")
    sub = parser.add_subparsers(dest="command", required=True)
    overlay = sub.add_parser("overlay", help="write the CPU overlay for the real node")
    overlay.add_argument("directory", type=Path)
    overlay.add_argument("--model-url", required=True, help="the GGUF, from the node's bridge")
    overlay.add_argument("--base", type=Path, default=REPO / "clusters" / "aws" / "base")
    overlay.add_argument("--volumes", type=int, default=8)
    args = parser.parse_args()
    images = built_images()
    out = write_overlay(
        args.directory.resolve(), args.base.resolve(), images.router, args.model_url, args.volumes
    )
    print(f"wrote {out}: kubectl apply --server-side -k {out}")


if __name__ == "__main__":
    main()
