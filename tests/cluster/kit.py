"""Helpers for tests against the real control plane (tests/cluster/controlplane.py): fake nodes
shaped as `llmctl gpu enable` makes them, waiting on the API, kubectl."""

from __future__ import annotations

import json
import socket
from typing import Any, TypeVar

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.clouds import get_cloud
from llmctl.clouds.base import Capacity, PoolOptions
from llmctl.config import Stack
from tests.cluster.controlplane import KWOK_NODE_ANNOTATION, ControlPlane
from tests.support.waiting import wait_for

T = TypeVar("T")

# What each cloud's node pool API needs beyond the Stack to plan a pool.
POOL_OPTIONS = {
    CloudName.AWS: PoolOptions(),
    CloudName.AZURE: PoolOptions(subscription="00000000-0000-0000-0000-000000000000"),
    CloudName.GCP: PoolOptions(project="llmctl-test"),
}


def gpu_node(cloud: CloudName, name: str, stack: Stack | None = None) -> dict[str, Any]:
    """A Node as a GPU node of `llmctl gpu enable`'s pool joins the cluster: the pool's labels
    and taints, the cloud's spot taint, the instance type and its GPUs as capacity."""
    stack = stack or Stack()
    spec = get_cloud(cloud).node_pool_spec(stack, POOL_OPTIONS[cloud], {})
    taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in spec.taints]
    spot = catalog.CLOUD_FACTS[cloud].spot_taint
    if spec.capacity is Capacity.SPOT and spot is not None:
        taints.append({"key": spot.key, "value": spot.value, "effect": spot.effect})
    resources = {
        "cpu": "4",
        "memory": "16Gi",
        "pods": "110",
        spec.gpu_resource: str(spec.gpus_per_node),
    }
    return _node(
        name,
        {**spec.labels, "node.kubernetes.io/instance-type": spec.instance_type},
        taints,
        resources,
    )


def cpu_node(name: str) -> dict[str, Any]:
    """An ordinary node with no GPU and no taint, where the router and CPU tier run."""
    return _node(
        name,
        {"node.kubernetes.io/instance-type": "cpu-small"},
        [],
        {"cpu": "8", "memory": "32Gi", "pods": "110"},
    )


def _node(
    name: str, labels: dict[str, str], taints: list[dict[str, str]], resources: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                **labels,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": resources, "allocatable": resources},
    }


def apply_objects(plane: ControlPlane, objects: list[dict[str, Any]]) -> str:
    """`kubectl apply --server-side` of these objects (a List), as a test's field manager."""
    doc = {"apiVersion": "v1", "kind": "List", "items": objects}
    return plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=llmctl-tests",
        "-f",
        "-",
        input_text=json.dumps(doc),
    )


def get_json(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", "-o", "json", *args)))


def ensure_nodes_ready(plane: ControlPlane, nodes: list[dict[str, Any]]) -> None:
    """Create (or keep) these fake nodes and wait until kwok reports them Ready."""
    if not nodes:
        return
    apply_objects(plane, nodes)
    for node in nodes:
        name = node["metadata"]["name"]

        def ready(name: str = name) -> bool:
            found = get_json(plane, "node", name)
            return any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in found.get("status", {}).get("conditions", [])
            )

        wait_for(f"node {name} Ready", ready)


def delete_namespace(plane: ControlPlane, namespace: str, timeout_s: float = 120.0) -> None:
    """Delete a namespace and wait until the namespace controller has removed it and its pods."""
    plane.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")

    def gone() -> bool:
        out = plane.kubectl("get", "namespace", "--ignore-not-found", "-o", "name", namespace)
        return not out.strip()

    wait_for(f"namespace {namespace} deleted", gone, timeout_s)


def provide_volumes(plane: ControlPlane, prefix: str, count: int, size: str = "100Gi") -> list[str]:
    """Unclaimed PersistentVolumes without a class, as an administrator provides storage on a
    cluster with no default StorageClass: the PV controller binds each model PVC (the pods'
    ephemeral volumes, no storageClassName) to one. The kwok nodes mount nothing."""
    names = [f"{prefix}-{i}" for i in range(count)]
    apply_objects(
        plane,
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": f"/tmp/llmctl-test-volumes/{name}"},
                },
            }
            for name in names
        ],
    )
    return names


def router_objects(cloud: CloudName = CloudName.AWS) -> tuple[dict[str, Any], dict[str, Any]]:
    """The router's Service and Deployment as `llmctl render` builds them."""
    from llmctl.manifests.build import built_objects

    objects = built_objects(Stack(), cloud, gpu=False)
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "llm-router"
    )
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "llm-router"
    )
    return service, deployment


def router_pod(deployment: dict[str, Any], name: str, ready: bool = True) -> dict[str, Any]:
    """A pod of the router Deployment, as the API server lists it."""
    import copy

    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def deploy_router(plane: ControlPlane, cloud: CloudName = CloudName.AWS) -> list[str]:
    """The rendered namespace, router ServiceAccount, ConfigMap, Service and Deployment applied,
    on a kwok CPU node; returns the names of its pods once kwok has them Ready."""
    from llmctl.manifests.build import built_objects

    objects = built_objects(Stack(), cloud, gpu=False)
    wanted = {("Namespace", "llm-server"), ("ServiceAccount", "llm-router"),
              ("ConfigMap", "llm-router-config"), ("Service", "llm-router"),
              ("Deployment", "llm-router")}  # fmt: skip
    chosen = [o for o in objects if (o["kind"], o["metadata"]["name"]) in wanted]
    assert len(chosen) == len(wanted), sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    ensure_nodes_ready(plane, [cpu_node("cpu-router")])
    apply_objects(plane, chosen)
    deployment = next(o for o in chosen if o["kind"] == "Deployment")
    selector = ",".join(
        f"{k}={v}" for k, v in sorted(deployment["spec"]["selector"]["matchLabels"].items())
    )
    count = int(deployment["spec"].get("replicas", 1))

    def ready_pods() -> list[str]:
        pods = get_json(plane, "pods", "-n", "llm-server", "-l", selector)["items"]
        names = [
            p["metadata"]["name"]
            for p in pods
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]
        return sorted(names) if len(names) == count else []

    try:
        return wait_for("the router pods to be Ready", ready_pods, 90)
    except AssertionError:
        raise AssertionError(
            "router pods not Ready:\n"
            + plane.kubectl("get", "pods,nodes,rs", "-A", "-o", "wide")
            + plane.kubectl("get", "events", "-n", "llm-server")
        ) from None


def port_forward_to(
    plane: ControlPlane, namespace: str, pod: str, port: int, target: int, wait: bool = True
) -> None:
    """Tell kwok (the pod's kubelet) where the pod's `port` is: a server on loopback; with
    `wait`, until an HTTP request through the API server's port-forward gets an answer (kwok
    reads the PortForward object through its informer, a moment after it is created)."""
    forward = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "PortForward",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {
            "forwards": [{"ports": [port], "target": {"port": target, "address": "127.0.0.1"}}]
        },
    }
    apply_objects(plane, [forward])
    if wait:
        wait_for(
            f"kwok to forward port {port} of pod {namespace}/{pod}",
            lambda: _answers_through_port_forward(plane, namespace, pod, port),
            30,
        )


def _answers_through_port_forward(plane: ControlPlane, namespace: str, pod: str, port: int) -> bool:
    """Whether an HTTP request sent through the API server's port-forward to the pod gets an
    HTTP answer. Until kwok's informer has the PortForward, kwok answers on the error channel
    and the client closes the stream (`getPodsForward`: "no forward found for port", kwok v0.8.0
    pkg/kwok/server/debugging_port_forword.go), which a test would see as a lost connection."""
    from kubernetes.client import CoreV1Api
    from kubernetes.stream.stream import portforward

    from llmctl import kube

    try:
        forwarded = portforward(
            CoreV1Api(
                kube.api_client(str(plane.kubeconfig))
            ).connect_get_namespaced_pod_portforward,
            pod,
            namespace,
            ports=str(port),
        )
    except Exception:  # the API server or kwok not ready to open the stream yet
        return False
    stream = forwarded.socket(port)
    try:
        stream.settimeout(5)
        stream.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\n\r\n")
        head = stream.recv(5)
        # The client's proxy thread never sees the pod's end close, so end it from this side
        # (it closes its socket and the WebSocket on EOF) and read what it had, to no reset.
        stream.shutdown(socket.SHUT_WR)
        while stream.recv(65536):
            pass
        return head == b"HTTP/"
    except OSError:
        return False
    finally:
        stream.close()


def ensure_namespace(plane: ControlPlane) -> None:
    """llmctl's namespace exactly as the base renders it (Pod Security `restricted` enforced),
    with its default ServiceAccount (pods are refused until the controller-manager makes it)."""
    from llmctl.manifests.build import built_objects

    namespace = next(
        o for o in built_objects(Stack(), CloudName.AWS, gpu=False) if o["kind"] == "Namespace"
    )
    apply_objects(plane, [namespace])
    name = namespace["metadata"]["name"]
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: plane.kubectl(
            "get", "serviceaccount", "-n", name, "--ignore-not-found", "-o", "name", "default"
        ).strip(),
    )


def only_these_gpu_nodes(plane: ControlPlane, nodes: list[dict[str, Any]]) -> None:
    """Exactly these GPU nodes in the cluster (others deleted), Ready."""
    keep = {n["metadata"]["name"] for n in nodes}
    key, value = catalog.GPU_NODE_LABEL_COMPUTE
    existing = get_json(plane, "nodes", "-l", f"{key}={value}")["items"]
    extra = [n["metadata"]["name"] for n in existing if n["metadata"]["name"] not in keep]
    if extra:
        plane.kubectl("delete", "node", *extra, "--ignore-not-found")
    ensure_nodes_ready(plane, nodes)


def cri_log(text: str) -> str:
    """`text` as a container runtime writes a container's log, which the kubelet (kwok) reads."""
    return "".join(
        f"2026-12-02T03:00:00.{i:09d}Z stdout F {line}\n"
        for i, line in enumerate(text.splitlines())
    )


def reset_llmctl_objects(plane: ControlPlane) -> None:
    """Remove what llmctl's manifests and `gpu enable` put in the cluster (its namespace, its
    objects in kube-system, the RuntimeClass), so a test starts from a cluster without them."""
    label = "app.kubernetes.io/part-of=llm-router"
    plane.kubectl(
        "delete", "daemonsets,services,servicemonitors,podmonitors,configmaps",
        "-n", "kube-system", "-l", label, "--ignore-not-found", "--wait=false",
    )  # fmt: skip
    plane.kubectl("delete", "runtimeclass", "-l", label, "--ignore-not-found")
    delete_namespace(plane, "llm-server")


# --- the real node (tests/cluster/node.py) ------------------------------------------------------


def on_real_node(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """`pod_spec` (a Pod's or a pod template's spec) placed on the real node: it selects the
    node's label and tolerates its taint, which keeps every other pod on the kwok nodes."""
    from tests.cluster.node import REAL_NODE_LABEL, REAL_NODE_TAINT

    key, value = REAL_NODE_LABEL
    return {
        **pod_spec,
        "nodeSelector": {**pod_spec.get("nodeSelector", {}), key: value},
        "tolerations": [
            *pod_spec.get("tolerations", []),
            {"key": REAL_NODE_TAINT["key"], "operator": "Equal", "value": REAL_NODE_TAINT["value"],
             "effect": REAL_NODE_TAINT["effect"]},
        ],
    }  # fmt: skip


def import_image(plane: ControlPlane, archive: Any) -> list[str]:
    """Import an OCI archive (e.g. `buildah push IMAGE oci-archive:PATH:IMAGE`) into the real
    node's containerd, where its kubelet finds it (pods then use imagePullPolicy IfNotPresent or
    Never: no registry is reachable). Returns the image names imported."""
    from pathlib import Path

    if plane.node is None:
        raise AssertionError("the real node is not running: use the real_node fixture")
    return plane.node.import_image(Path(archive))


def restricted_namespace(plane: ControlPlane, name: str) -> None:
    """A namespace where Pod Security `restricted` is enforced, with its default ServiceAccount."""
    apply_objects(
        plane,
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        ],
    )
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: plane.kubectl(
            "get", "serviceaccount", "-n", name, "--ignore-not-found", "-o", "name", "default"
        ).strip(),
    )


def wait_pod_ready(
    plane: ControlPlane, namespace: str, name: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait until the pod is Ready (its own probes passed on its node); fail with its events."""

    def ready() -> dict[str, Any] | None:
        pod = get_json(plane, "pod", "-n", namespace, name)
        conditions = pod.get("status", {}).get("conditions", [])
        ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return pod if ok else None

    try:
        return wait_for(f"pod {namespace}/{name} Ready", ready, timeout_s)
    except AssertionError:
        raise AssertionError(
            f"pod {namespace}/{name} not Ready:\n"
            + plane.kubectl("get", "pod", "-n", namespace, name, "-o", "yaml")
            + plane.kubectl("get", "events", "-n", namespace)
        ) from None
