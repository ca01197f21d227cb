"""`llmctl test-inference --cloud`: reach the router Service through the kubeconfig, as
`kubectl port-forward svc/llm-router` does.

Like kubectl, it forwards to one Ready pod behind the Service (the API server port-forwards to
pods, not Services): `pick_target` resolves the Service's port and selector to a pod and a
container port (pure); `forward` listens on a loopback port and pipes each accepted connection
through a stream that `open_stream` opens. The only code that speaks the Kubernetes port-forward
protocol is `kube_stream`, one call to the official client's `kubernetes.stream.portforward`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from llmctl import kube
from llmctl.config import NAMESPACE
from llmctl.errors import LlmctlError

ROUTER_SERVICE = "llm-router"
ROUTER_SERVICE_PORT = 80
CHUNK = 64 * 1024


class Stream(Protocol):
    """What `forward` needs of the remote end: a socket's recv, sendall, shutdown and close."""

    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown(self, how: int) -> None: ...
    def close(self) -> None: ...


OpenStream = Callable[[str, int], Stream]


@dataclass(frozen=True)
class ForwardTarget:
    namespace: str
    service: str
    pod: str
    port: int


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pick_target(
    service: dict[str, Any], pods: list[dict[str, Any]], service_port: int = ROUTER_SERVICE_PORT
) -> ForwardTarget:
    """The Ready pod (first by name, so runs are repeatable) and container port behind the
    Service's `service_port`, resolving a named targetPort as kube-proxy does."""
    meta = service["metadata"]
    namespace, name = str(meta.get("namespace", NAMESPACE)), str(meta["name"])
    ports = (service.get("spec") or {}).get("ports") or []
    chosen = next((p for p in ports if p.get("port") == service_port), None)
    if chosen is None:
        if len(ports) != 1:
            raise LlmctlError(f"service {name} in {namespace} has no port {service_port}")
        chosen = ports[0]
    target_port = chosen.get("targetPort", chosen.get("port"))
    ready = sorted((p for p in pods if _ready(p)), key=lambda p: str(p["metadata"]["name"]))
    if not ready:
        raise LlmctlError(
            f"service {name} in {namespace} has no Ready pod to forward to "
            f"({len(pods)} pods, none Ready)",
            hint=f"check the router: kubectl -n {namespace} get pods -l "
            "app.kubernetes.io/name=llm-router",
        )
    pod = ready[0]
    if isinstance(target_port, int):
        return ForwardTarget(namespace, name, str(pod["metadata"]["name"]), target_port)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target_port:
                return ForwardTarget(
                    namespace, name, str(pod["metadata"]["name"]), int(port["containerPort"])
                )
    raise LlmctlError(
        f"pod {pod['metadata']['name']} has no container port named {target_port!r}, which "
        f"service {name} targets"
    )


def router_target(
    api: Any, namespace: str = NAMESPACE, service: str = ROUTER_SERVICE
) -> ForwardTarget:
    """Read the router Service and its pods from the cluster, and pick one."""
    found = kube.read_service(api, namespace, service)
    selector = (found.get("spec") or {}).get("selector") or {}
    if not selector:
        raise LlmctlError(f"service {service} in {namespace} has no selector to find pods with")
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return pick_target(found, kube.list_pods(api, namespace, label_selector))


def kube_stream(api: Any, namespace: str) -> OpenStream:
    """The adapter: one port-forward WebSocket per connection, through the official client
    (`kubernetes.stream.portforward`, channel protocol v4), as its own examples do."""

    def open_stream(pod: str, port: int) -> Stream:
        from kubernetes.client import CoreV1Api
        from kubernetes.stream.stream import portforward

        with _OPENING:  # one at a time, so the thread that appears is this stream's
            before = set(threading.enumerate())
            forwarded = portforward(
                CoreV1Api(api).connect_get_namespaced_pod_portforward,
                pod,
                namespace,
                ports=str(port),
            )
            started = [t for t in threading.enumerate() if t not in before]
        proxy = next((t for t in started if t.name.startswith(_PROXY_THREAD)), None)
        return _ForwardedStream(forwarded, port, proxy)

    return open_stream


# The official client relays each forwarded port through a thread of its own, named so.
_PROXY_THREAD = "Kubernetes port forward proxy"
_OPENING = threading.Lock()
# How long close() waits for that thread to finish with the WebSocket (a close handshake).
PROXY_EXIT_S = 10.0


class _ForwardedStream:
    """The client's socket for one forwarded port, whose close() also closes the WebSocket:
    when the API server closes first (the pod closed its end), the client's proxy thread stops
    without closing it, leaving the socket to the garbage collector.

    It closes the WebSocket only once that thread has stopped. Closed from here while the thread
    still ran, its socket's descriptor went back to the system, the next connection's socket
    got the same number, and the old thread read and wrote that one: another stream's TLS
    records and frame headers arrived in the HTTP bytes (`400 Bad Request` behind 16 stray
    bytes, one connection in 20 through the real kubelet, tests/cluster/test_real_node.py)."""

    def __init__(self, forwarded: Any, port: int, proxy: threading.Thread | None) -> None:
        self._forwarded = forwarded
        self._socket = forwarded.socket(port)
        self._proxy = proxy

    def recv(self, size: int) -> bytes:
        return bytes(self._socket.recv(size))

    def sendall(self, data: bytes) -> None:
        self._socket.sendall(data)

    def shutdown(self, how: int) -> None:
        self._socket.shutdown(how)

    def close(self) -> None:
        self._socket.close()  # the proxy thread sees the end of the data and stops
        if self._proxy is None:
            return  # not the thread it was: leave the WebSocket to it and the collector
        self._proxy.join(PROXY_EXIT_S)
        if self._proxy.is_alive():
            return
        with contextlib.suppress(Exception):
            self._forwarded.websocket.shutdown()


def _pipe(source: Any, sink: Any) -> None:
    """Copy until EOF or an error, then tell the other side no more is coming."""
    try:
        while True:
            data = source.recv(CHUNK)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


# Opening the WebSocket can fail for a moment on a busy API server. Nothing has reached the pod
# yet (the client's bytes wait in the local socket), so trying again is safe, as it is not once
# bytes have been relayed.
OPEN_DELAYS_S = (0.25, 0.5, 1.0)


def _open_with_retries(target: ForwardTarget, open_stream: OpenStream) -> Stream | None:
    for delay in (*OPEN_DELAYS_S, None):
        try:
            return open_stream(target.pod, target.port)
        except Exception:
            if delay is None:
                return None
            time.sleep(delay)
    return None


def _serve_connection(
    client: socket.socket, target: ForwardTarget, open_stream: OpenStream
) -> None:
    remote = _open_with_retries(target, open_stream)
    if remote is None:  # the client then sees its connection closed: a clear failure
        client.close()
        return
    upstream = threading.Thread(target=_pipe, args=(client, remote), daemon=True)
    upstream.start()
    _pipe(remote, client)
    upstream.join(timeout=5)
    for end in (client, remote):
        with contextlib.suppress(OSError):
            end.close()


@contextlib.contextmanager
def forward(target: ForwardTarget, open_stream: OpenStream) -> Iterator[str]:
    """Listen on a free loopback port while the block runs; yield its http:// URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            threading.Thread(
                target=_serve_connection, args=(client, target, open_stream), daemon=True
            ).start()

    acceptor = threading.Thread(target=accept_loop, name="port-forward", daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(timeout=2)
        listener.close()
