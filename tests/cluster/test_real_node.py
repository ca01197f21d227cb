"""Pods that really run: the real node (tests/cluster/node.py) beside the kwok nodes. A locally
built busybox image runs under Pod Security `restricted` as its non-root user; `kubectl logs` and
`exec` reach it through the real kubelet; a Service name resolves through CoreDNS and reaches the
pod through kube-proxy; llmctl's own port-forward reaches it through the real kubelet."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from llmctl import kube
from llmctl.probe import portforward
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    apply_objects,
    delete_namespace,
    get_json,
    on_real_node,
    restricted_namespace,
    wait_pod_ready,
)
from tests.cluster.node import NODE_NAME, RealNode

NAMESPACE = "real-node-test"
WEB_PORT = 8080
# What the web pod serves: written at start, so a test reading it knows it came from the pod.
SERVED = "served by the real node"


def _restricted_container(name: str, image: str, script: str) -> dict[str, Any]:
    """A container as Pod Security `restricted` demands; the image's own user (65532) runs it."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["-c", script],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod(name: str, containers: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    spec = {
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": on_real_node(spec),
    }


@pytest.fixture(scope="module")
def web(control_plane: ControlPlane, real_node: RealNode) -> Iterator[dict[str, Any]]:
    """A web server pod (busybox httpd, readiness-probed by the kubelet) behind a Service, and a
    client pod to reach it from, in a `restricted` namespace on the real node."""
    image = real_node.bins["BUSYBOX_IMAGE"]
    restricted_namespace(control_plane, NAMESPACE)
    web_container = _restricted_container(
        "web",
        image,
        f"mkdir -p /tmp/www && echo '{SERVED}' > /tmp/www/index.html && id && "
        f"exec httpd -f -v -p {WEB_PORT} -h /tmp/www",
    )
    web_container["ports"] = [{"name": "http", "containerPort": WEB_PORT}]
    web_container["readinessProbe"] = {
        "httpGet": {"path": "/index.html", "port": "http"},
        "periodSeconds": 1,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    client = _restricted_container("client", image, "exec sleep 3600")
    apply_objects(
        control_plane,
        [
            _pod("web", [web_container], {"app": "web"}),
            _pod("client", [client], {"app": "client"}),
            service,
        ],
    )
    pod = wait_pod_ready(control_plane, NAMESPACE, "web")
    wait_pod_ready(control_plane, NAMESPACE, "client")
    yield {"pod": pod, "service": get_json(control_plane, "service", "-n", NAMESPACE, "web")}
    delete_namespace(control_plane, NAMESPACE)


def test_the_real_node_is_ready_beside_kwok(
    control_plane: ControlPlane, real_node: RealNode
) -> None:
    node = get_json(control_plane, "node", NODE_NAME)
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://2."), info
    server = json.loads(control_plane.kubectl("version", "-o", "json"))["serverVersion"]
    assert info["kubeletVersion"] == server["gitVersion"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    # The node's own bridge address (the kubelet refuses a loopback node IP), where it serves.
    assert real_node.slot is not None
    assert addresses["InternalIP"] == real_node.slot.gateway
    assert (
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == real_node.ports["kubelet"]
    )
    # Not kwok's: kwok manages only nodes with its annotation.
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})


def test_a_pod_of_a_local_image_runs_as_its_non_root_user(
    control_plane: ControlPlane, web: dict[str, Any]
) -> None:
    pod = web["pod"]
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["podIP"].startswith("10.88.")
    # `kubectl logs` and `exec` go through the API server to the real kubelet and containerd.
    logs = control_plane.kubectl("logs", "-n", NAMESPACE, "web")
    # The image's USER 65532:65532: its uid runs the process; its group does not (containerd
    # finds no /etc/group entry and uses gid 0) unless the pod sets runAsGroup, as a real node does.
    assert "uid=65532 gid=0" in logs, logs
    status = control_plane.kubectl(
        "exec", "-n", NAMESPACE, "web", "--", "sh", "-c", "grep -E '^(Uid|CapEff)' /proc/1/status"
    )
    assert "Uid:\t65532\t65532\t65532\t65532" in status, status
    assert "CapEff:\t0000000000000000" in status, status
    # The non-root user cannot write where root could.
    denied = control_plane.kubectl(
        "exec", "-n", NAMESPACE, "web", "--", "sh", "-c", "touch /bin/x 2>&1 || echo refused"
    )
    assert "refused" in denied, denied


def test_a_root_pod_is_refused_by_restricted(
    control_plane: ControlPlane, web: dict[str, Any]
) -> None:
    container = _restricted_container("root", "busybox", "true")
    container["securityContext"]["runAsNonRoot"] = False
    container["securityContext"]["runAsUser"] = 0
    with pytest.raises(RuntimeError, match='violates PodSecurity "restricted'):
        apply_objects(control_plane, [_pod("root", [container], {"app": "root"})])


def test_a_service_name_resolves_through_coredns_and_reaches_the_pod_through_kube_proxy(
    control_plane: ControlPlane, web: dict[str, Any]
) -> None:
    cluster_ip = web["service"]["spec"]["clusterIP"]
    name = f"web.{NAMESPACE}.svc.cluster.local"
    looked_up = control_plane.kubectl("exec", "-n", NAMESPACE, "client", "--", "nslookup", name)
    assert cluster_ip in looked_up, looked_up
    # The short name through the pod's search path, then the Service's port 80 (kube-proxy's
    # DNAT to the pod's 8080). Debian's static busybox resolves names only in nslookup (its wget
    # segfaults looking up a name or the "http" service: glibc cannot load NSS into a static
    # binary), so the request goes out with nc to the address nslookup found.
    out = control_plane.kubectl(
        "exec", "-n", NAMESPACE, "client", "--", "sh", "-c",
        "ip=$(nslookup web | awk '/^Address/ {a=$NF} END {print a}') && echo $ip && "
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $ip 80",
    )  # fmt: skip
    lines = out.strip().splitlines()
    assert lines[0] == cluster_ip, out
    assert lines[1].startswith("HTTP/1.") and " 200 " in lines[1], out
    body = lines[-1]
    assert body.strip() == SERVED
    missing = control_plane.kubectl(
        "exec", "-n", NAMESPACE, "client", "--", "sh", "-c",
        f"nslookup nothere.{NAMESPACE}.svc.cluster.local 2>&1 || echo lookup-failed",
    )  # fmt: skip
    assert "lookup-failed" in missing, missing


def test_llmctl_port_forward_through_the_real_kubelet_20_times(
    control_plane: ControlPlane, web: dict[str, Any]
) -> None:
    api = kube.api_client(str(control_plane.kubeconfig))
    target = portforward.router_target(api, NAMESPACE, "web")
    assert target == portforward.ForwardTarget(NAMESPACE, "web", "web", WEB_PORT)
    answers = []
    with portforward.forward(target, portforward.kube_stream(api, NAMESPACE)) as url:
        for _ in range(20):
            with urllib.request.urlopen(f"{url}/index.html", timeout=10) as resp:
                answers.append(resp.read().decode().strip())
    assert answers == [SERVED] * 20
