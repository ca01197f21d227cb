"""`llmctl test-inference --gpu-check`: run nvidia-smi in a pod on one of llmctl's GPU nodes,
print what it says, and always delete the pod.

The pod is built here (pure) with the same nodeSelector and tolerations the GPU overlay gives
`gpu-llm-server`, so it lands where the model server would; `run_check` is the adapter that
creates it through `kube/client.py`, waits, reads its log and deletes it in a `finally`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmctl import catalog, kube
from llmctl.catalog import CloudName
from llmctl.config import NAMESPACE, Stack
from llmctl.errors import LlmctlError
from llmctl.manifests.render import gpu_node_selector, gpu_tolerations

# A CUDA base image with nvidia-smi's libraries mounted by the NVIDIA runtime; pinned, not latest.
CHECK_IMAGE = "nvidia/cuda:12.4.1-base-ubuntu22.04"
CHECK_NAME_PREFIX = "llmctl-gpu-check-"
DEFAULT_TIMEOUT_S = 600.0  # a GPU pool scaling from zero needs minutes for a node
# Waiting reasons after which the pod never starts by itself.
HOPELESS_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


# The namespace enforces the `restricted` Pod Security level: nvidia-smi needs no privilege (the
# NVIDIA runtime hands the claimed GPU's device nodes to the container), so it runs as nobody.
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


NVIDIA_HANDLER = "nvidia"


def nvidia_runtime_class(classes: dict[str, str]) -> str:
    """The RuntimeClass the check pod names, from the cluster's (name -> handler): `nvidia`
    (what `gpu enable` and the overlays create), else one whose handler is nvidia (the Helm
    chart's `<release>-nvidia` on a cluster set up by Helm alone), else `nvidia`, which the API
    server then refuses by name."""
    if NVIDIA_HANDLER in classes:
        return NVIDIA_HANDLER
    return next(
        (name for name, handler in sorted(classes.items()) if handler == NVIDIA_HANDLER),
        NVIDIA_HANDLER,
    )


def runtime_class_in(api: Any, cloud: CloudName) -> str | None:
    """The RuntimeClass for this cloud's check pod, read from the cluster; None where the
    cloud's GPU nodes need none."""
    if not catalog.CLOUD_FACTS[cloud].nvidia_runtime_handler:
        return None
    return nvidia_runtime_class(kube.runtime_classes(api))


def check_pod(
    stack: Stack,
    cloud: CloudName,
    name: str | None = None,
    namespace: str = NAMESPACE,
    runtime_class: str = NVIDIA_HANDLER,
) -> dict[str, Any]:
    """The check pod: nvidia-smi, one GPU, on a GPU node of this cloud, never restarted."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": gpu_node_selector(stack, cloud),
        "tolerations": gpu_tolerations(cloud),
        "terminationGracePeriodSeconds": 0,
        # A backstop for a pod left behind by a killed llmctl: the kubelet stops it.
        "activeDeadlineSeconds": int(DEFAULT_TIMEOUT_S) + 300,
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": [
            {
                "name": "nvidia-smi",
                "image": CHECK_IMAGE,
                "command": ["nvidia-smi"],
                "resources": {
                    "limits": {stack.gpu.resource_name: 1},
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                },
                "securityContext": CONTAINER_SECURITY,
            }
        ],
    }

    if catalog.CLOUD_FACTS[cloud].nvidia_runtime_handler:
        spec["runtimeClassName"] = runtime_class
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or CHECK_NAME_PREFIX + secrets.token_hex(3),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "llmctl-gpu-check",
                "app.kubernetes.io/component": "gpu-check",
                "app.kubernetes.io/part-of": "llm-router",
                "app.kubernetes.io/managed-by": "llmctl",
            },
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class CheckResult:
    pod: str
    phase: str
    node: str | None
    log: str
    deleted: bool
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.phase == "Succeeded"


def describe(pod: dict[str, Any]) -> str:
    """One line on where a pod stands: its phase and why it waits."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{phase}: {condition.get('reason', '')} {condition.get('message', '')}".strip()
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{phase}: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return f"{phase}: exit code {terminated.get('exitCode')} {terminated.get('reason', '')}"
    return phase


def _hopeless(pod: dict[str, Any]) -> str | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in HOPELESS_WAITING:
            return str(waiting.get("reason"))
    return None


def run_check(
    api: Any,
    pod: dict[str, Any],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = 1.0,
    on_status: Callable[[str], None] | None = None,
) -> CheckResult:
    """Create the pod, wait until it ends, read its log; delete it whatever happens (an error,
    a timeout, Ctrl-C)."""
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    started = time.monotonic()
    created = False
    phase, node, log = "Pending", None, ""
    deleted = attempted = False
    try:
        # Marked before the call: Ctrl-C while the create is in flight may leave a pod behind.
        attempted = True
        kube.create_pod(api, pod)
        created = True
        last = ""
        while True:
            current = kube.read_pod(api, namespace, name)
            status = current.get("status") or {}
            phase = str(status.get("phase") or "Pending")
            node = (current.get("spec") or {}).get("nodeName") or node
            line = describe(current)
            if line != last and on_status is not None:
                on_status(line)
            last = line
            if phase in ("Succeeded", "Failed"):
                break
            stuck = _hopeless(current)
            if stuck:
                phase = f"Failed ({stuck})"
                break
            if time.monotonic() - started > timeout_s:
                raise LlmctlError(
                    f"the GPU check pod {name} did not finish within {timeout_s:g} s ({line})",
                    hint="no GPU node may be up yet: check `llmctl gpu status --cloud ...`; a "
                    "pool scaling from zero takes several minutes (raise --gpu-check-timeout)",
                )
            time.sleep(poll_s)
        try:
            log = kube.pod_log(api, namespace, name)
        except LlmctlError as exc:
            if phase == "Succeeded":
                raise
            log = f"(no log: {exc.message})"  # a container that never started has none
    finally:
        if attempted:
            try:
                deleted = kube.delete_pod(api, namespace, name)
            except LlmctlError:
                if created:
                    raise
                # The create failed too (no rights, no namespace): its error is the one to show.
    return CheckResult(name, phase, node, log, deleted, time.monotonic() - started)
