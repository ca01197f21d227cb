"""`--cloud`'s port-forward: the router Service as `llmctl render` builds it resolved to a Ready
pod and container port, and bytes relayed through the official client's
`kubernetes.stream.portforward` to the real API server, which relays to the pod's kubelet (kwok),
which relays to a real server on loopback."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from llmctl import kube
from llmctl.catalog import CloudName
from llmctl.errors import LlmctlError
from llmctl.probe import portforward
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    deploy_router,
    ensure_namespace,
    port_forward_to,
    router_objects,
    router_pod,
)
from tests.support.http_fake import serve_handler
from tests.support.llama import free_port


@pytest.mark.parametrize("cloud", list(CloudName))
def test_rendered_service_resolves_to_a_ready_pod_and_its_named_port(cloud: CloudName) -> None:
    service, deployment = router_objects(cloud)
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == "http"  # named: needs the pod
    pods = [
        router_pod(deployment, "llm-router-b", ready=False),
        router_pod(deployment, "llm-router-c"),
        router_pod(deployment, "llm-router-a"),
    ]
    target = portforward.pick_target(service, pods)
    assert target == portforward.ForwardTarget("llm-server", "llm-router", "llm-router-a", 8080)


def test_no_ready_pod_is_a_clear_error() -> None:
    service, deployment = router_objects()
    with pytest.raises(LlmctlError, match="no Ready pod") as info:
        portforward.pick_target(service, [router_pod(deployment, "p", ready=False)])
    assert info.value.hint is not None and "get pods" in info.value.hint


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "big": "x" * 200_000}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def hello() -> Iterator[int]:
    with serve_handler(Hello) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[Any]:
    """The router deployed as rendered on a kwok node; kwok, its pods' kubelet, forwards the
    first pod's port 8080 to `hello` on loopback."""
    ensure_namespace(control_plane)
    yield kube.api_client(str(control_plane.kubeconfig))
    control_plane.kubectl(
        "delete", "deployment", "llm-router", "-n", "llm-server", "--ignore-not-found"
    )
    control_plane.kubectl("delete", "portforwards.kwok.x-k8s.io", "--all", "-n", "llm-server")


def test_forward_through_the_api_server_to_the_pods_kubelet(
    api: Any, control_plane: ControlPlane, hello: int
) -> None:
    pods = deploy_router(control_plane)
    target = portforward.router_target(api)
    assert target.pod == pods[0] and target.port == 8080  # the first Ready pod, by name
    port_forward_to(control_plane, "llm-server", target.pod, 8080, hello)
    with portforward.forward(target, portforward.kube_stream(api, target.namespace)) as url:
        for i in range(3):  # one WebSocket per connection, as kubectl does
            with urllib.request.urlopen(f"{url}/v1/models?i={i}", timeout=30) as response:
                data = json.load(response)
            assert data["path"] == f"/v1/models?i={i}" and len(data["big"]) == 200_000


def test_forward_to_a_port_nobody_listens_on_fails_the_connection(
    api: Any, control_plane: ControlPlane
) -> None:
    deploy_router(control_plane)
    target = portforward.router_target(api)
    port_forward_to(control_plane, "llm-server", target.pod, 8080, free_port(), wait=False)
    with portforward.forward(target, portforward.kube_stream(api, target.namespace)) as url:
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/healthz", timeout=10)


def test_a_stream_that_fails_to_open_at_first_is_opened_again(hello: int) -> None:
    """A busy API server may refuse the WebSocket for a moment: nothing has reached the pod
    yet, so the tunnel tries again instead of closing the client's connection."""
    import socket

    attempts: list[str] = []

    def flaky_open(pod: str, port: int) -> Any:
        attempts.append(pod)
        if len(attempts) == 1:
            raise ConnectionError("API server busy")
        return socket.create_connection(("127.0.0.1", hello))

    target = portforward.ForwardTarget("llm-server", "llm-router", "router-0", 8080)
    with portforward.forward(target, flaky_open) as url:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
            assert json.load(response)["path"] == "/v1/models"
    assert attempts == ["router-0", "router-0"]


class _FakeWebSocket:
    def __init__(self) -> None:
        self.shut_while_proxy_ran: bool | None = None
        self.proxy: Any = None

    def shutdown(self) -> None:
        self.shut_while_proxy_ran = self.proxy.is_alive()


class _FakeForward:
    """The client's PortForward as _ForwardedStream sees it: a socket per port, a WebSocket,
    and a proxy thread that stops a moment after the local socket closes."""

    def __init__(self) -> None:
        import socket
        import threading

        self.websocket = _FakeWebSocket()
        self.mine, theirs = socket.socketpair()
        self._theirs = theirs

        def proxy() -> None:
            while theirs.recv(1024):  # until the local end closes
                pass
            time.sleep(0.2)  # the close handshake it still does on the WebSocket
            theirs.close()

        self.thread = threading.Thread(target=proxy, name="Kubernetes port forward proxy: 80")
        self.websocket.proxy = self.thread
        self.thread.start()

    def socket(self, port: int) -> Any:
        return self.mine


def test_close_leaves_the_websocket_to_its_thread_until_the_thread_is_done() -> None:
    # Closed under a running proxy thread, the WebSocket's descriptor was reused by the next
    # connection while the thread still read and wrote it (stray bytes in another stream).
    forward = _FakeForward()
    stream = portforward._ForwardedStream(forward, 80, forward.thread)
    stream.close()
    assert forward.websocket.shut_while_proxy_ran is False
    assert not forward.thread.is_alive()


def test_close_without_the_thread_leaves_the_websocket_alone() -> None:
    forward = _FakeForward()
    stream = portforward._ForwardedStream(forward, 80, None)
    stream.close()
    assert forward.websocket.shut_while_proxy_ran is None
    forward.thread.join(5)
