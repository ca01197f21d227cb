"""`--cloud`'s port-forward: the router Service as `llmctl render` builds it resolved to a Ready
pod and container port, and bytes relayed through the official client's
`kubernetes.stream.portforward` to the Kubernetes stand-in's WebSocket, which relays to a real
server on loopback."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmctl import kube
from llmctl.catalog import CloudName
from llmctl.errors import LlmctlError
from llmctl.probe import portforward
from tests.support.fake_kube import FakeKube, kubeconfig, router_objects, router_pod
from tests.support.http_fake import FakeServer, serve


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
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def fake(hello: int) -> FakeKube:
    service, deployment = router_objects()
    return FakeKube(
        services=[service],
        pods=[
            router_pod(deployment, "llm-router-x", ready=False),
            router_pod(deployment, "llm-router-y"),
        ],
        forwards={"llm-server/llm-router-y:8080": ("127.0.0.1", hello)},
    )


@pytest.fixture
def server(fake: FakeKube) -> Iterator[FakeServer]:
    with serve(fake.route) as srv:
        yield srv


@pytest.fixture
def api(server: FakeServer, tmp_path: Path) -> Any:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(server.url))
    return kube.api_client(str(path))


def test_router_target_reads_the_service_and_its_pods(api: Any, server: FakeServer) -> None:
    target = portforward.router_target(api)
    assert (target.pod, target.port) == ("llm-router-y", 8080)
    listing = next(r for r in server.requests if r.path == "/api/v1/namespaces/llm-server/pods")
    assert listing.query["labelSelector"] == (
        "app.kubernetes.io/component=router,app.kubernetes.io/instance=llm-router,"
        "app.kubernetes.io/name=llm-router"
    )


def test_forward_through_the_kubernetes_websocket(api: Any, server: FakeServer) -> None:
    target = portforward.router_target(api)
    with portforward.forward(target, portforward.kube_stream(api, target.namespace)) as url:
        for i in range(3):  # one WebSocket per connection, as kubectl does
            with urllib.request.urlopen(f"{url}/v1/models?i={i}", timeout=20) as response:
                data = json.load(response)
            assert data["path"] == f"/v1/models?i={i}" and len(data["big"]) == 200_000
    upgrades = [r for r in server.requests if r.path.endswith("/portforward")]
    assert len(upgrades) == 3
    assert upgrades[0].path == "/api/v1/namespaces/llm-server/pods/llm-router-y/portforward"
    assert upgrades[0].query == {"ports": "8080"}
    assert "v4.channel.k8s.io" in upgrades[0].headers["sec-websocket-protocol"]


def test_forward_to_a_port_nobody_listens_on_fails_the_connection(api: Any, fake: FakeKube) -> None:
    fake.forwards.clear()
    target = portforward.router_target(api)
    with portforward.forward(target, portforward.kube_stream(api, target.namespace)) as url:
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/healthz", timeout=10)
