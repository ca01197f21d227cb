"""Federation between real routers (`llmctl router serve`) in front of stub backends, for what
needs backends held busy on cue: two routers that list each other and hold stale reports of
each other (the set-up where a request would bounce back), a peer with the wrong peer key, and
a peer reached over TLS. tests/router/test_federation_e2e.py runs real llama-servers.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.router.fedstubs import StubServer, metrics, sample, wait_for
from tests.support.llama import free_port
from tests.support.router import CPU_MODEL, GPU_MODEL, RouterProcess, router_config, two_models
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

MODELS = two_models()
CLIENT_KEY = "ck"
PEER_KEY = "pk"
ENV = {"CLIENT_KEYS": CLIENT_KEY, "PEER_KEYS": PEER_KEY, "WRONG_PEER_KEYS": "not-pk"}


def backends(cloud: str, cpu_url: str, gpu_url: str, gpu_slots: int = 1) -> list[dict[str, Any]]:
    return [
        {"name": f"{cloud}/cpu", "url": cpu_url, "tier": "cpu", "cloud": cloud,
         "model": CPU_MODEL, "slots": 2},
        {"name": f"{cloud}/gpu", "url": gpu_url, "tier": "gpu", "cloud": cloud,
         "model": GPU_MODEL, "slots": gpu_slots},
    ]  # fmt: skip


def configure(
    router: RouterProcess,
    cloud: str,
    cpu_url: str,
    gpu_url: str,
    peers: list[RouterProcess | tuple[str, str]],
    *,
    interval: float = 0.3,
    peer_key_env: str = "PEER_KEYS",
    **extra: Any,
) -> None:
    listed = []
    for peer in peers:
        if isinstance(peer, RouterProcess):
            name = peer.config["cloud"]
            listed.append({"name": name, "cloud": name, "url": peer.url})
        else:
            listed.append({"name": peer[0], "cloud": peer[0], "url": peer[1]})
    router.config = router_config(
        backends(cloud, cpu_url, gpu_url),
        MODELS,
        CPU_MODEL,
        cloud=cloud,
        apiKeys={"env": "CLIENT_KEYS"},
        federation={
            "peers": listed,
            "peerKey": {"env": peer_key_env},
            "readinessIntervalSeconds": interval,
            **extra,
        },
    )


def post(router: RouterProcess, model: str = GPU_MODEL) -> httpx.Response:
    return httpx.post(
        router.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=60,
    )


def peer_ready(router: RouterProcess, peer: str) -> bool:
    return sample(metrics(router.url), "llm_router_peer_ready", peer=peer) == 1


@contextmanager
def peered_with_gcp(
    tmp_path: Path,
    cloud: str,
    gcp_url: Callable[[RouterProcess], str] | None = None,
    **extra: Any,
) -> Iterator[tuple[RouterProcess, RouterProcess, StubServer]]:
    """gcp, a router with a CPU and a GPU stub, and a router for `cloud` whose own GPU is down
    and whose one peer is gcp (at `gcp_url(gcp)`, else gcp's own URL; `extra` goes to its
    federation config). Yields both routers, started, once `cloud` sees gcp ready, and gcp's
    GPU stub."""
    cpu, gpu = StubServer(CPU_MODEL), StubServer(GPU_MODEL)
    gcp = RouterProcess({"cloud": "gcp"}, tmp_path, env=ENV)
    router = RouterProcess({"cloud": cloud}, tmp_path, env=ENV)
    configure(gcp, "gcp", cpu.url, gpu.url, [])
    peer = ("gcp", gcp_url(gcp)) if gcp_url else gcp
    down = f"http://127.0.0.1:{free_port()}"
    configure(router, cloud, cpu.url, down, [peer], **extra)
    try:
        gcp.start()
        router.start()
        wait_for(lambda: peer_ready(router, "gcp"), what=f"{cloud} to see gcp")
        yield router, gcp, gpu
    finally:
        router.stop()
        gcp.stop()
        cpu.close()
        gpu.close()


# --- two routers listing each other, each with a stale report of the other -------------------


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RouterProcess, RouterProcess, StubServer, StubServer]]:
    cpu = StubServer(CPU_MODEL)
    gpu_a, gpu_b = StubServer(GPU_MODEL, mode="hold"), StubServer(GPU_MODEL, mode="hold")
    a = RouterProcess({"cloud": "aws"}, tmp_path, env=ENV)
    b = RouterProcess({"cloud": "gcp"}, tmp_path, env=ENV)
    # Reports a minute old: each router goes on believing the other's GPU is free.
    configure(a, "aws", cpu.url, gpu_a.url, [b], interval=60)
    configure(b, "gcp", cpu.url, gpu_b.url, [a], interval=60)
    try:
        a.start()
        b.start()
        wait_for(lambda: peer_ready(a, "gcp") and peer_ready(b, "aws"), what="both peers ready")
        yield a, b, gpu_a, gpu_b
    finally:
        for stub in (gpu_a, gpu_b):
            stub.release.set()
        a.stop()
        b.stop()
        for stub in (cpu, gpu_a, gpu_b):
            stub.close()


def test_two_routers_listing_each_other_never_loop(
    pair: tuple[RouterProcess, RouterProcess, StubServer, StubServer],
) -> None:
    """aws's GPU is busy, so aws sends the request to gcp, whose report says free. gcp's GPU is
    busy too, and gcp's (stale) report of aws says free: without the hop marker gcp would send
    it straight back. With it, gcp waits for its own GPU."""
    a, b, gpu_a, gpu_b = pair
    with ThreadPoolExecutor(3) as pool:
        held_b: Future[httpx.Response] = pool.submit(post, b)
        wait_for(lambda: gpu_b.hits == 1, what="gcp's GPU busy")
        held_a: Future[httpx.Response] = pool.submit(post, a)
        wait_for(lambda: gpu_a.hits == 1, what="aws's GPU busy")
        bouncing: Future[httpx.Response] = pool.submit(post, a)
        # It reaches gcp and waits there for gcp's only GPU slot.
        wait_for(
            lambda: sample(metrics(b.url), "llm_router_peer_requests_received_total",
                           from_cloud="aws") == 1,
            what="gcp to receive the forwarded request",
        )  # fmt: skip
        gpu_b.release.set()
        response = bouncing.result(timeout=60)
        assert held_b.result(timeout=60).status_code == 200
        gpu_a.release.set()
        assert held_a.result(timeout=60).status_code == 200
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-peer"] == "gcp"
    assert response.headers["x-llm-backend"] == "gcp/gpu"
    assert gpu_b.hits == 2 and gpu_a.hits == 1
    # Nothing came back to aws, and gcp forwarded nothing.
    assert sample(metrics(a.url), "llm_router_peer_requests_received_total", from_cloud="gcp") == 0
    assert not any(k[0] == "llm_router_peer_requests_total" for k in metrics(b.url))


# --- a peer without the right key -----------------------------------------------------------


def test_a_peer_with_the_wrong_key_is_refused_and_the_request_served_at_home(
    tmp_path: Path,
) -> None:
    with peered_with_gcp(tmp_path, "azure", peer_key_env="WRONG_PEER_KEYS") as (azure, _, gpu):
        response = post(azure)
        assert response.status_code == 200, response.text
        assert response.headers["x-llm-tier"] == "cpu-fallback"
        assert response.headers["x-llm-backend"] == "azure/cpu"
        assert gpu.hits == 0
        outcome = sample(
            metrics(azure.url), "llm_router_peer_requests_total", peer="gcp", outcome="unauthorized"
        )
        assert outcome == 1


# --- a peer over TLS --------------------------------------------------------------------------


class TlsProxy:
    """TLS in front of a plain-HTTP router, as an Ingress or a Gateway would put it."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def main() -> None:
            await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=self.context)
            self.ready.set()
            await asyncio.Event().wait()

        self.loop.run_until_complete(main())


def test_a_peer_over_https(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip

    def through_tls(gcp: RouterProcess) -> str:
        return f"https://127.0.0.1:{TlsProxy(gcp.port, cert, key).port}"

    with peered_with_gcp(tmp_path, "aws", through_tls, caFile=str(cert)) as (aws, _, _):
        for _ in range(3):  # the keep-alive TLS connection is reused
            response = post(aws)
            assert response.status_code == 200, response.text
            assert response.headers["x-llm-peer"] == "gcp"
            assert response.headers["x-llm-backend"] == "gcp/gpu"


# --- the demand signal ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [True, False])
def test_peer_served_gpu_requests_count_in_local_demand_unless_configured_not_to(
    tmp_path: Path, count: bool
) -> None:
    gpu_requests = ("llm_router_tier_requests_total", {"tier": "gpu", "cloud": "aws"})
    with peered_with_gcp(tmp_path, "aws", countPeerServedDemand=count) as (aws, gcp, gpu):
        response = post(aws)
        assert response.headers["x-llm-peer"] == "gcp"
        assert sample(metrics(aws.url), gpu_requests[0], **gpu_requests[1]) == (1 if count else 0)
        assert (
            sample(metrics(gcp.url), "llm_router_tier_requests_total", tier="gpu", cloud="gcp") == 1
        )
        # Served at home after all (the peer answers 500): it counts, as without federation.
        gpu.mode = "500"
        response = post(aws)
        assert response.headers["x-llm-tier"] == "cpu-fallback"
        assert sample(metrics(aws.url), gpu_requests[0], **gpu_requests[1]) == (2 if count else 1)
        assert sample(metrics(aws.url), "llm_router_tier_demand", tier="gpu", cloud="aws") == 0
