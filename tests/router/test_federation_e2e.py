"""Three routers (aws, azure, gcp), each listing the other two as peers, in front of real
llama.cpp servers (issue 16).

Topology: one llama-server serves "tinyllama-1.1b-chat" as every cloud's CPU tier; a second one
serves "llama-2-7b-chat" as gcp's GPU tier. aws's and azure's GPU backends point at closed
ports (their pools are asleep). Both load a tiny random-weight GGUF the test writes. aws also
lists a fake peer ("flaky", tests/router/fedstubs.py) that is ranked first whenever it is
ready, to make a peer hang, reset or fail on cue; it stays not ready outside those tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmctl.cost import egress
from tests.router.fedstubs import StubServer, metrics, sample, wait_for
from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer, free_port
from tests.support.router import CPU_MODEL, GPU_MODEL, RouterProcess, router_config, two_models

pytestmark = pytest.mark.e2e

CLIENT_KEY = "sk-client-key"
PEER_KEY = "peer-key-shared-by-the-three-clouds"
CLOUDS = ("aws", "azure", "gcp")
MODELS = two_models(["tinyllama"])
FIRST_BYTE_TIMEOUT = 3.0  # to peers; generous for a tiny model on a loaded 2-core machine


def chat(model: str, text: str, max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


class Federation:
    def __init__(
        self,
        routers: dict[str, RouterProcess],
        cpu: LlamaServer,
        gcp_gpu: LlamaServer,
        flaky: StubServer,
    ) -> None:
        self.routers, self.cpu, self.gcp_gpu, self.flaky = routers, cpu, gcp_gpu, flaky

    def client(self, cloud: str, key: str = CLIENT_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.routers[cloud].url,
            timeout=60,
            headers={"authorization": f"Bearer {key}"},
        )

    def metrics(self, cloud: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return metrics(self.routers[cloud].url)

    def peer_ready(self, cloud: str, peer: str) -> float:
        return sample(self.metrics(cloud), "llm_router_peer_ready", peer=peer)


def _backends(cloud: str, cpu_url: str, gpu_url: str) -> list[dict[str, Any]]:
    return [
        {
            "name": f"{cloud}/cpu",
            "url": cpu_url,
            "tier": "cpu",
            "cloud": cloud,
            "model": CPU_MODEL,
            "slots": 2,
        },
        {
            "name": f"{cloud}/gpu",
            "url": gpu_url,
            "tier": "gpu",
            "cloud": cloud,
            "model": GPU_MODEL,
            "slots": 2,
        },
    ]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("federation-e2e")
    gguf = write_llama_gguf(tmp / "tiny.gguf")
    cpu = LlamaServer(gguf, CPU_MODEL, tmp, parallel=4)
    gcp_gpu = LlamaServer(gguf, GPU_MODEL, tmp)
    flaky = StubServer(GPU_MODEL)
    flaky.ready = False
    routers: dict[str, RouterProcess] = {}
    try:
        cpu.start()
        gcp_gpu.start()
        env = {"CLIENT_KEYS": CLIENT_KEY, "PEER_KEYS": PEER_KEY}
        for cloud in CLOUDS:
            routers[cloud] = RouterProcess({}, tmp, env=env)
        for cloud in CLOUDS:
            gpu_url = gcp_gpu.url if cloud == "gcp" else f"http://127.0.0.1:{free_port()}"
            peers = [
                {"name": other, "cloud": other, "url": routers[other].url}
                for other in CLOUDS
                if other != cloud
            ]
            if cloud == "aws":
                peers.insert(
                    0, {"name": "flaky", "cloud": "flaky", "url": flaky.url, "costWeight": 0.01}
                )
            routers[cloud].config = router_config(
                _backends(cloud, cpu.url, gpu_url),
                MODELS,
                CPU_MODEL,
                cloud=cloud,
                apiKeys={"env": "CLIENT_KEYS"},
                limits={"queueTimeoutSeconds": 30, "firstByteTimeoutSeconds": 60},
                # Each health check's timeout is its interval: 0.2 s (the helper's) can take a
                # busy llama-server out for a moment, and gcp's /readyz with it.
                healthCheck={"intervalSeconds": 1.0, "maxBackoffSeconds": 1.0},
                federation={
                    "peers": peers,
                    "peerKey": {"env": "PEER_KEYS"},
                    # The read's timeout is the interval (at most 2 s): at 0.3 s one slow
                    # /readyz on a loaded 2-core machine marked a healthy peer out, and a
                    # required-GPU request got a 503 (CI, 2026-12-02). 1 s keeps tests quick.
                    "readinessIntervalSeconds": 1.0,
                    "firstByteTimeoutSeconds": FIRST_BYTE_TIMEOUT,
                },
            )
        for router in routers.values():
            router.start()
        federation = Federation(routers, cpu, gcp_gpu, flaky)
        for cloud in CLOUDS:  # every router sees every other one, not only aws sees gcp
            for other in CLOUDS:
                if other != cloud:
                    wait_for(
                        lambda c=cloud, o=other: federation.peer_ready(c, o) == 1,
                        what=f"{cloud} to see {other} ready",
                    )
        yield federation
    finally:
        for router in routers.values():
            router.stop()
        gcp_gpu.stop()
        cpu.stop()
        flaky.close()


# --- routing order -------------------------------------------------------------------------


def test_gpu_request_goes_to_the_warm_gpu_in_another_cloud(fed: Federation) -> None:
    before = {cloud: fed.metrics(cloud) for cloud in ("aws", "gcp")}
    with fed.client("aws") as client:
        response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hello there"))
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "gpu"
    assert response.headers["x-llm-backend"] == "gcp/gpu"
    assert response.headers["x-llm-peer"] == "gcp"
    assert response.headers["x-llm-model"] == GPU_MODEL
    assert response.json()["model"] == GPU_MODEL
    after = {cloud: fed.metrics(cloud) for cloud in ("aws", "gcp")}

    def delta(router: str, name: str, **labels: str) -> float:
        return sample(after[router], name, **labels) - sample(before[router], name, **labels)

    # The demand signal stays honest: both aws (so its pool wakes) and gcp (so its pool stays
    # awake) count a GPU request.
    assert delta("aws", "llm_router_tier_requests_total", tier="gpu", cloud="aws") == 1
    assert delta("gcp", "llm_router_tier_requests_total", tier="gpu", cloud="gcp") == 1
    assert delta("aws", "llm_router_peer_requests_total", peer="gcp", outcome="ok") == 1
    assert delta("aws", "llm_router_peer_latency_seconds_count", peer="gcp") == 1
    assert delta("gcp", "llm_router_peer_requests_received_total", from_cloud="aws") == 1
    assert (
        delta(
            "aws", "llm_router_requests_total", tier="gpu", cloud="gcp", model=GPU_MODEL, code="200"
        )
        == 1
    )
    # gcp served it on its own GPU and forwarded nothing.
    assert not any(k[0] == "llm_router_peer_requests_total" for k in after["gcp"])


def test_required_gpu_succeeds_through_a_peer(fed: Federation) -> None:
    with fed.client("azure") as client:
        response = client.post(
            "/v1/chat/completions",
            json=chat(CPU_MODEL, "hello"),
            headers={"x-llm-require-tier": "gpu"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "gpu"
    assert response.headers["x-llm-peer"] == "gcp"


def test_cpu_request_stays_local(fed: Federation) -> None:
    with fed.client("aws") as client:
        response = client.post("/v1/chat/completions", json=chat(CPU_MODEL, "hello"))
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "cpu"
    assert response.headers["x-llm-backend"] == "aws/cpu"
    assert "x-llm-peer" not in response.headers


def test_local_gpu_is_served_locally(fed: Federation) -> None:
    with fed.client("gcp") as client:
        response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hello"))
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-backend"] == "gcp/gpu"
    assert "x-llm-peer" not in response.headers


def _sse(client: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Headers, list[bytes]]:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
        return response.headers, [e.encode() for e in events]


def _content(events: list[bytes]) -> str:
    text = ""
    for event in events[:-1]:
        choices = json.loads(event[len(b"data: ") :]).get("choices") or [{}]
        text += choices[0].get("delta", {}).get("content") or ""
    return text


def test_stream_passes_intact_through_the_hop(fed: Federation) -> None:
    body = chat(GPU_MODEL, "Tell me a story", 24, stream=True, seed=1)
    with fed.client("aws") as client:
        headers, through_hop = _sse(client, body)
    with fed.client("gcp") as client:
        _, direct = _sse(client, body)
    assert headers["x-llm-peer"] == "gcp"
    assert headers["content-type"].startswith("text/event-stream")
    assert through_hop[-1] == b"data: [DONE]"
    assert len(through_hop) == len(direct) > 2
    assert _content(through_hop) == _content(direct)
    # What `cost estimate` assumes a streamed token costs on the wire, against llama-server's
    # real events (plus the chunk framing, about 6 bytes each).
    per_event = sum(len(e) + 2 + 6 for e in through_hop[:-1]) / len(through_hop[:-1])
    print(f"streamed bytes per token event: {per_event:.0f}")
    assert (
        0.6 * egress.STREAMED_BYTES_PER_TOKEN <= per_event <= 1.4 * egress.STREAMED_BYTES_PER_TOKEN
    )


def test_stream_with_the_openai_client_through_the_hop(fed: Federation) -> None:
    headers, chunks = fed.routers["aws"].stream_with_openai(CLIENT_KEY, GPU_MODEL, 12)
    assert headers["x-llm-peer"] == "gcp"
    assert chunks and all(c.model == GPU_MODEL for c in chunks)


# --- no loops ------------------------------------------------------------------------------


def test_a_forwarded_request_is_never_forwarded_again(fed: Federation) -> None:
    """What aws sends azure if it picked azure: azure's own GPU is down and gcp's is up, so
    without the hop rule azure would forward it on to gcp."""
    before = fed.metrics("gcp")
    forwarded_before = _total(fed.metrics("azure"), "llm_router_peer_requests_total")
    hop = {"x-llm-hop": "aws", "authorization": f"Bearer {PEER_KEY}"}
    with httpx.Client(base_url=fed.routers["azure"].url, timeout=60) as client:
        refused = client.post(
            "/v1/chat/completions",
            json=chat(GPU_MODEL, "hi"),
            headers=hop | {"x-llm-require-tier": "gpu"},
        )
        fallback = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hi"), headers=hop)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "gpu_unavailable"
    assert fallback.status_code == 200
    assert fallback.headers["x-llm-tier"] == "cpu-fallback"
    assert fallback.headers["x-llm-backend"] == "azure/cpu"
    assert "x-llm-peer" not in fallback.headers
    after = fed.metrics("gcp")
    assert sample(after, "llm_router_peer_requests_received_total", from_cloud="azure") == sample(
        before, "llm_router_peer_requests_received_total", from_cloud="azure"
    )
    forwarded = _total(fed.metrics("azure"), "llm_router_peer_requests_total")
    assert forwarded == forwarded_before


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for k, v in samples.items() if k[0] == name)


# --- peer key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"x-llm-hop": "aws"}, "invalid_peer_key"),  # a peer without the peer key
        ({"x-llm-hop": "aws", "authorization": "Bearer not-the-peer-key"}, "invalid_peer_key"),
        # a client key does not work as a peer key...
        ({"x-llm-hop": "aws", "authorization": f"Bearer {CLIENT_KEY}"}, "invalid_peer_key"),
        # ...nor the peer key as a client key
        ({"authorization": f"Bearer {PEER_KEY}"}, "invalid_api_key"),
    ],
)
def test_peer_key_is_required_and_distinct(
    fed: Federation, headers: dict[str, str], code: str
) -> None:
    response = httpx.post(
        fed.routers["gcp"].url + "/v1/chat/completions",
        json=chat(GPU_MODEL, "hi"),
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


def test_readyz_reports_tiers_with_free_slots(fed: Federation) -> None:
    body = httpx.get(fed.routers["gcp"].url + "/readyz", timeout=10).json()
    for tier, model in (("gpu", GPU_MODEL), ("cpu", CPU_MODEL)):
        (entry,) = body["tiers"][tier]
        assert entry["model"] == model and entry["slots"] == 2
        assert 0 <= entry["free"] <= 2  # 2 when idle; llama-server's own busy count lowers it
    aws = httpx.get(fed.routers["aws"].url + "/readyz", timeout=10).json()
    assert "gpu" not in aws["tiers"]  # its GPU backend is down


# --- faults --------------------------------------------------------------------------------


@pytest.fixture
def flaky(fed: Federation) -> Iterator[StubServer]:
    fed.flaky.hits = 0
    fed.flaky.release.clear()
    fed.flaky.ready = True
    wait_for(lambda: fed.peer_ready("aws", "flaky") == 1, what="aws to see flaky ready")
    yield fed.flaky
    fed.flaky.ready = False
    fed.flaky.release.set()
    wait_for(lambda: fed.peer_ready("aws", "flaky") == 0, what="aws to see flaky gone")


@pytest.mark.parametrize("mode", ["hang", "reset", "500"])
def test_a_failing_peer_is_passed_over_for_the_next_choice(
    fed: Federation, flaky: StubServer, mode: str
) -> None:
    flaky.mode = mode
    before = fed.metrics("aws")
    started = time.monotonic()
    with fed.client("aws") as client:
        response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hi", 4))
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-peer"] == "gcp"
    # A reset on a pooled keep-alive connection (the /readyz reads leave one) is tried once
    # more on a fresh connection, as for any backend: a stale keep-alive looks the same.
    assert flaky.hits == 1 or (mode == "reset" and flaky.hits == 2)
    assert flaky.headers[0]["x-llm-hop"] == "aws"
    assert flaky.headers[0]["authorization"] == f"Bearer {PEER_KEY}"
    assert flaky.headers[0]["x-llm-require-tier"] == "gpu"
    outcome = {"hang": "timeout", "reset": "reset", "500": "5xx"}[mode]
    after = fed.metrics("aws")
    labels = {"peer": "flaky", "outcome": outcome}
    assert (
        sample(after, "llm_router_peer_requests_total", **labels)
        - sample(before, "llm_router_peer_requests_total", **labels)
        == 1
    )
    if mode == "hang":
        # The hang cost the client the first-byte timeout, then gcp answered.
        assert FIRST_BYTE_TIMEOUT <= elapsed < FIRST_BYTE_TIMEOUT + 20


def test_nothing_is_retried_once_a_peer_stream_started(fed: Federation, flaky: StubServer) -> None:
    """The flaky peer breaks its stream after two events: the client gets them and the
    stream-broken event; neither gcp nor the local fallback answers the same request again."""
    flaky.mode = "stream-break"
    before = {cloud: fed.metrics(cloud) for cloud in ("aws", "gcp")}
    body = chat(GPU_MODEL, "Tell me a story", 16, stream=True)
    with (
        fed.client("aws") as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-llm-peer"] == "flaky"
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(events) == 3, events
    assert "tok0" in events[0] and "tok1" in events[1]
    assert "stream_broken" in events[2] and "[DONE]" not in events[2]
    assert flaky.hits == 1
    after = {cloud: fed.metrics(cloud) for cloud in ("aws", "gcp")}
    received = ("llm_router_peer_requests_received_total", {"from_cloud": "aws"})
    assert sample(after["gcp"], received[0], **received[1]) == sample(
        before["gcp"], received[0], **received[1]
    )
    labels = {"peer": "flaky", "outcome": "stream_broken"}
    assert (
        sample(after["aws"], "llm_router_peer_requests_total", **labels)
        - sample(before["aws"], "llm_router_peer_requests_total", **labels)
        == 1
    )
    fallbacks = [k for k in after["aws"] if k[0] == "llm_router_fallbacks_total"]
    assert all(after["aws"][k] == before["aws"].get(k, 0) for k in fallbacks)


def _gcp_gpu_visible(fed: Federation) -> bool:
    with fed.client("aws") as client:
        response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hi", 2))
    return response.headers.get("x-llm-peer") == "gcp"


def test_gcp_gpu_down_as_well_falls_back_to_local_cpu(fed: Federation) -> None:
    fed.gcp_gpu.stop()
    try:
        # gcp's health check notices its GPU is gone, then aws's next read of gcp's /readyz.
        def served_by_aws_cpu() -> bool:
            with fed.client("aws") as client:
                response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hi", 2))
            assert response.status_code == 200, response.text
            return response.headers["x-llm-tier"] == "cpu-fallback"

        wait_for(served_by_aws_cpu, what="aws to fall back to its own CPU")
        with fed.client("aws") as client:
            response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hi", 2))
        assert response.headers["x-llm-tier"] == "cpu-fallback"
        assert response.headers["x-llm-backend"] == "aws/cpu"
        assert "x-llm-peer" not in response.headers
        with fed.client("aws") as client:
            required = client.post(
                "/v1/chat/completions",
                json=chat(GPU_MODEL, "hi", 2),
                headers={"x-llm-require-tier": "gpu"},
            )
        assert required.status_code == 503
    finally:
        fed.gcp_gpu.start()
    wait_for(lambda: _gcp_gpu_visible(fed), what="gcp's GPU back in aws's view")


def test_a_partitioned_peer_is_out_after_one_failed_check_and_back_on_recovery(
    fed: Federation,
) -> None:
    gcp = fed.routers["gcp"]
    gcp.stop()
    try:
        # One read of /readyz at most (1 s apart) after gcp is gone.
        wait_for(lambda: fed.peer_ready("aws", "gcp") == 0, timeout=5, what="gcp marked out")
        with fed.client("aws") as client:
            response = client.post("/v1/chat/completions", json=chat(GPU_MODEL, "hi", 2))
        assert response.headers["x-llm-tier"] == "cpu-fallback"
    finally:
        gcp.start()
    wait_for(lambda: fed.peer_ready("aws", "gcp") == 1, timeout=10, what="gcp back")
    assert _gcp_gpu_visible(fed)
