"""The router end to end, in front of real llama.cpp servers.

Topology: two CPU backends (aws/cpu, gcp/cpu) serving "tinyllama-1.1b-chat" and one "GPU"
backend (aws/gpu: a third llama-server, labelled gpu in the router config) serving
"llama-2-7b-chat". All three load a tiny random-weight GGUF the test writes; the router only
cares about the names, sizes and tiers its config gives them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer
from tests.support.router import CPU_MODEL, GPU_MODEL, RouterProcess, router_config, two_models

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-router-key"
MODELS = two_models(["tinyllama"], ["llama2-7b"])


class Cluster:
    def __init__(
        self, cpu_a: LlamaServer, cpu_b: LlamaServer, gpu: LlamaServer, router: RouterProcess
    ) -> None:
        self.cpu_a, self.cpu_b, self.gpu, self.router = cpu_a, cpu_b, gpu, router

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        return httpx.Client(
            base_url=self.router.url,
            headers={"authorization": f"Bearer {API_KEY}"},
            **kwargs,
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.router.url + "/metrics", timeout=10).text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def wait_tier(self, tier: str, timeout: float = 20.0) -> httpx.Response:
        """Send reasoning requests until one is served by `tier` (the router's health checks
        notice a change within a few intervals)."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                response = client.post(
                    "/v1/chat/completions",
                    json=chat(CPU_MODEL, "hi", 4),
                    headers={"x-llm-complexity": "reasoning"},
                )
                if response.headers.get("x-llm-tier") == tier or time.monotonic() > deadline:
                    return response
                time.sleep(0.2)


def chat(model: str, text: str, max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        **extra,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("router-e2e")
    gguf = write_llama_gguf(tmp / "tiny.gguf")
    servers = [
        LlamaServer(gguf, CPU_MODEL, tmp),
        LlamaServer(gguf, CPU_MODEL, tmp),
        LlamaServer(gguf, GPU_MODEL, tmp),
    ]
    router = None
    try:
        for server in servers:
            server.start()
        cpu_a, cpu_b, gpu = servers
        backends = [
            {
                "name": "aws/cpu",
                "url": cpu_a.url,
                "tier": "cpu",
                "cloud": "aws",
                "model": CPU_MODEL,
                "slots": 2,
                "costWeight": 1.0,
                "hourlyCostUsd": 0.17,
            },
            {
                "name": "gcp/cpu",
                "url": cpu_b.url,
                "tier": "cpu",
                "cloud": "gcp",
                "model": CPU_MODEL,
                "slots": 2,
                "costWeight": 1.0,
                "hourlyCostUsd": 0.15,
            },
            {
                "name": "aws/gpu",
                "url": gpu.url,
                "tier": "gpu",
                "cloud": "aws",
                "model": GPU_MODEL,
                "slots": 2,
                "costWeight": 1.0,
                "hourlyCostUsd": 0.53,
            },
        ]
        config = router_config(
            backends,
            MODELS,
            CPU_MODEL,
            apiKeys={"env": "ROUTER_TEST_KEYS"},
            limits={
                "maxBodyBytes": 4096,
                "queueTimeoutSeconds": 20,
                "firstByteTimeoutSeconds": 20,
                "idleTimeoutSeconds": 10,
            },
        )
        router = RouterProcess(config, tmp, env={"ROUTER_TEST_KEYS": f"other-key,{API_KEY}"})
        router.start()
        yield Cluster(cpu_a, cpu_b, gpu, router)
    finally:
        if router is not None:
            router.stop()
        for server in servers:
            server.stop()


# --- routing -----------------------------------------------------------------------------------


def test_small_model_plain_chat_goes_to_cpu(cluster: Cluster) -> None:
    with cluster.client() as client:
        response = client.post("/v1/chat/completions", json=chat("tinyllama", "hello there"))
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "cpu"
    assert response.headers["x-llm-backend"] in ("aws/cpu", "gcp/cpu")
    assert response.json()["model"] == CPU_MODEL
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


def test_big_model_goes_to_gpu(cluster: Cluster) -> None:
    with cluster.client() as client:
        response = client.post("/v1/chat/completions", json=chat("llama2-7b", "hello there"))
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "gpu"
    assert response.headers["x-llm-backend"] == "aws/gpu"
    assert response.json()["model"] == GPU_MODEL


@pytest.mark.parametrize(
    ("hint", "text"),
    [
        ({"headers": {"x-llm-complexity": "reasoning"}}, "hello"),
        ({"metadata": {"complexity": "code-generation"}}, "hello"),
        ({}, "Write a Python function that parses ISO dates."),
        ({}, "Prove step by step that the square root of 2 is irrational."),
    ],
)
def test_complexity_sends_small_model_to_gpu(
    cluster: Cluster, hint: dict[str, Any], text: str
) -> None:
    body = chat(CPU_MODEL, text)
    if "metadata" in hint:
        body["metadata"] = hint["metadata"]
    with cluster.client() as client:
        response = client.post("/v1/chat/completions", json=body, headers=hint.get("headers", {}))
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "gpu"
    # The GPU tier serves its own model, and the answer says so.
    assert response.json()["model"] == GPU_MODEL


def test_chat_hint_overrides_the_classifier(cluster: Cluster) -> None:
    with cluster.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json=chat(CPU_MODEL, "Write a Python function to add two ints."),
            headers={"x-llm-complexity": "chat"},
        )
    assert response.headers["x-llm-tier"] == "cpu"


def test_concurrent_requests_spread_over_both_cpu_backends(cluster: Cluster) -> None:
    async def run() -> list[str]:
        async with httpx.AsyncClient(
            base_url=cluster.router.url, timeout=30, headers={"authorization": f"Bearer {API_KEY}"}
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=chat(CPU_MODEL, "hi", 32))
                    for _ in range(8)
                )
            )
        assert all(r.status_code == 200 for r in responses)
        return [r.headers["x-llm-backend"] for r in responses]

    assert set(asyncio.run(run())) == {"aws/cpu", "gcp/cpu"}


def test_completions_endpoint(cluster: Cluster) -> None:
    with cluster.client() as client:
        response = client.post(
            "/v1/completions", json={"model": CPU_MODEL, "prompt": "Once upon", "max_tokens": 4}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-tier"] == "cpu"
    assert "text" in response.json()["choices"][0]


def test_models_lists_models_and_aliases(cluster: Cluster) -> None:
    with cluster.client() as client:
        ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert ids == {CPU_MODEL, "tinyllama", GPU_MODEL, "llama2-7b"}


def test_health_and_readiness(cluster: Cluster) -> None:
    assert httpx.get(cluster.router.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(cluster.router.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {CPU_MODEL: "ready", GPU_MODEL: "ready"}


# --- streaming ---------------------------------------------------------------------------------


def test_streaming_with_the_openai_client(cluster: Cluster) -> None:
    headers, chunks = cluster.router.stream_with_openai(API_KEY, CPU_MODEL, max_tokens=16)
    assert headers["x-llm-tier"] == "cpu"
    assert headers["content-type"].startswith("text/event-stream")
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" and c.model == CPU_MODEL for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_streaming_passes_events_through_and_ends_with_done(cluster: Cluster) -> None:
    with (
        cluster.client() as client,
        client.stream(
            "POST", "/v1/chat/completions", json=chat(CPU_MODEL, "hello", 12, stream=True)
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        text = "".join(response.iter_text())
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 4
    for event in events[:-1]:
        assert event.startswith("data: ")
        json.loads(event[len("data: ") :])


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"model": CPU_MODEL}).encode(), 400, "'messages' is required"),
        (
            json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
            400,
            "'model' is required",
        ),
        (json.dumps({"model": CPU_MODEL, "messages": "hello"}).encode(), 400, "'messages' must be"),
        (
            json.dumps({"model": CPU_MODEL, "messages": [{"role": 1, "content": "x"}]}).encode(),
            400,
            "'messages[0].role'",
        ),
        (
            json.dumps(
                {
                    "model": CPU_MODEL,
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": "yes",
                }
            ).encode(),
            400,
            "'stream' must be a boolean",
        ),
        (
            json.dumps(
                {
                    "model": CPU_MODEL,
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": "ten",
                }
            ).encode(),
            400,
            "'max_tokens' must be an integer",
        ),
        (
            json.dumps(
                {"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}
            ).encode(),
            404,
            f"known models: {CPU_MODEL}, tinyllama, {GPU_MODEL}, llama2-7b",
        ),
        (
            json.dumps(
                {"model": CPU_MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
            ).encode(),
            413,
            "larger than the limit of 4096 bytes",
        ),
    ],
)
def test_bad_requests_get_openai_error_bodies(
    cluster: Cluster, body: bytes, status: int, needle: str
) -> None:
    with cluster.client() as client:
        response = client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert needle in error["message"]


def test_completions_without_prompt_is_400(cluster: Cluster) -> None:
    with cluster.client() as client:
        response = client.post("/v1/completions", json={"model": CPU_MODEL})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-key", "Basic c2stdGVzdA==", f"Token {API_KEY}"]
)
def test_bad_api_key_is_401(cluster: Cluster, header: str | None) -> None:
    headers = {"authorization": header} if header else {}
    response = httpx.post(
        cluster.router.url + "/v1/chat/completions",
        headers=headers,
        json=chat(CPU_MODEL, "hi"),
        timeout=10,
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "wrong-key" not in cluster.router.log_path.read_text()


def test_openai_client_sees_unknown_model_as_not_found(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=cluster.router.url + "/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert CPU_MODEL in str(caught.value)


def test_unknown_path_and_method(cluster: Cluster) -> None:
    assert httpx.get(cluster.router.url + "/v2/whatever").status_code == 404
    assert httpx.delete(cluster.router.url + "/v1/models").status_code == 405


# --- degradation ---------------------------------------------------------------------------------


def test_gpu_stopped_mid_test_falls_back_to_cpu_then_recovers(cluster: Cluster) -> None:
    before = cluster.metrics()
    assert cluster.wait_tier("gpu").headers["x-llm-tier"] == "gpu"
    cluster.gpu.stop()
    try:
        response = cluster.wait_tier("cpu-fallback")
        assert response.status_code == 200, response.text
        assert response.headers["x-llm-tier"] == "cpu-fallback"
        assert response.headers["x-llm-backend"] in ("aws/cpu", "gcp/cpu")
        assert response.json()["model"] == CPU_MODEL  # the fallback model answered

        with cluster.client() as client:
            refused = client.post(
                "/v1/chat/completions",
                json=chat(GPU_MODEL, "hi"),
                headers={"x-llm-require-tier": "gpu"},
            )
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "gpu_unavailable"

        ready = httpx.get(cluster.router.url + "/readyz")
        assert ready.status_code == 200  # still ready: the fallback answers for the GPU model
        assert ready.json()["models"][GPU_MODEL] == "fallback"

        after = cluster.metrics()
        key = (
            "llm_router_fallbacks_total",
            (("from_tier", "gpu"), ("reason", "no_ready_gpu"), ("to_tier", "cpu")),
        )
        assert after[key] > before.get(key, 0)
        # The fallback and the refusal both count as GPU demand KEDA can see after the fact.
        wanted = ("llm_router_tier_requests_total", (("cloud", "aws"), ("tier", "gpu")))
        assert after[wanted] >= before.get(wanted, 0) + 2
        served = [
            v
            for (name, labels), v in after.items()
            if name == "llm_router_requests_total" and ("tier", "cpu-fallback") in labels
        ]
        assert sum(served) >= 1
    finally:
        cluster.gpu.start()
    recovered = cluster.wait_tier("gpu")
    assert recovered.headers["x-llm-tier"] == "gpu"
    assert recovered.json()["model"] == GPU_MODEL


def test_metrics_have_the_shared_names(cluster: Cluster) -> None:
    names = {name for name, _ in cluster.metrics()}
    for expected in (
        "llm_router_requests_total",
        "llm_router_request_duration_seconds_bucket",
        "llm_router_time_to_first_token_seconds_bucket",
        "llm_router_tier_demand",
        "llm_router_tier_requests_total",
        "llm_router_tokens_total",
        "llm_router_cost_usd_total",
    ):
        assert expected in names
    metrics = cluster.metrics()
    assert metrics[("llm_router_tier_demand", (("cloud", "aws"), ("tier", "gpu")))] == 0
    assert metrics[("llm_router_tokens_total", (("direction", "completion"), ("tier", "cpu")))] > 0


# --- a backend killed under load ---------------------------------------------------------------


def test_backend_killed_under_load(cluster: Cluster, record_property: Any) -> None:
    total, concurrency = 200, 16
    outcomes: dict[str, int] = {}
    done = 0

    async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore, i: int) -> None:
        nonlocal done
        async with gate:
            try:
                response = await asyncio.wait_for(
                    client.post("/v1/chat/completions", json=chat(CPU_MODEL, f"request {i}", 16)),
                    60,
                )
            except TimeoutError:
                outcomes["hung"] = outcomes.get("hung", 0) + 1
                return
            except httpx.HTTPError as exc:
                outcomes[f"transport:{type(exc).__name__}"] = (
                    outcomes.get(f"transport:{type(exc).__name__}", 0) + 1
                )
                return
            done += 1
            if response.status_code == 200:
                assert response.json()["choices"], response.text
                key = "ok"
            else:
                assert set(response.json()["error"]) >= {"message", "type", "code"}
                key = str(response.status_code)
            outcomes[key] = outcomes.get(key, 0) + 1
            if done == 40:
                cluster.cpu_b.kill()  # a spot node disappears mid-load

    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(
            base_url=cluster.router.url,
            timeout=60,
            headers={"authorization": f"Bearer {API_KEY}"},
            limits=httpx.Limits(max_connections=concurrency),
        ) as client:
            await asyncio.gather(*(one(client, gate, i) for i in range(total)))

    started = time.monotonic()
    try:
        asyncio.run(run())
    finally:
        cluster.cpu_b.start()
    elapsed = time.monotonic() - started
    print(
        f"\nbackend killed under load: {total} requests, {concurrency} at a time, "
        f"{elapsed:.1f} s: {outcomes}"
    )
    record_property("killed_backend_outcomes", json.dumps(outcomes))
    assert sum(outcomes.values()) == total
    assert "hung" not in outcomes
    assert not any(k.startswith("transport:") for k in outcomes)
    # Connect errors and resets before the first byte are retried on aws/cpu: nearly all pass.
    assert outcomes.get("ok", 0) >= total * 0.9
    # The kill was seen: the router took gcp/cpu out of rotation.
    assert "backend gcp/cpu" in cluster.router.log_path.read_text()


# --- issue 19: client mistakes and poison requests against real llama-server -------------------


def test_llama_server_500s_for_client_mistakes_become_400_and_are_not_retried(
    cluster: Cluster,
) -> None:
    """Review finding 8: an image part for a text model was llama-server's 500, retried on the
    second backend (6 backend requests for one openai call with its retries)."""
    log_before = cluster.router.log_path.read_text().count("retrying on")
    body = {
        "model": CPU_MODEL,
        "max_tokens": 2,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
    }
    with cluster.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert cluster.router.log_path.read_text().count("retrying on") == log_before


def test_a_request_that_crashes_llama_server_kills_one_backend_not_all(cluster: Cluster) -> None:
    """Review 3.6: a grammar nested 20,000 deep segfaults llama-server; the router retried it
    on the next backend and then the GPU: three requests, all three backends dead."""
    poison = {
        "model": CPU_MODEL,
        "prompt": "hi",
        "max_tokens": 2,
        "grammar": "root ::= " + "(" * 20000 + '"a"' + ")" * 20000,
    }
    servers = {"aws/cpu": cluster.cpu_a, "gcp/cpu": cluster.cpu_b, "aws/gpu": cluster.gpu}
    dead: list[str] = []
    try:
        with cluster.client(timeout=60) as client:
            response = client.post("/v1/completions", json=poison)
        dead = [
            name
            for name, server in servers.items()
            if server.proc is None or server.proc.poll() is not None
        ]
        if not dead:  # a llama-server build that survives it: its answer, never retried
            assert response.status_code != 502, response.text
            return
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "backend_crashed"
        assert len(dead) == 1, dead
        # Everything else still answers, from the backends that are alive.
        with cluster.client() as client:
            ok = client.post("/v1/chat/completions", json=chat(CPU_MODEL, "hello", 2))
        assert ok.status_code == 200
        assert ok.headers["x-llm-backend"] not in dead
    finally:
        for name in dead:
            servers[name].stop()
            servers[name].start()


@pytest.mark.parametrize("explicit", [False, True])
def test_a_long_non_streamed_answer_is_rebuilt_from_llama_servers_events(
    cluster: Cluster, explicit: bool
) -> None:
    """Review finding 12: max_tokens >= limits.streamUpstreamFromMaxTokens (256) goes to
    llama-server as a stream (so it stops when the client leaves); the client still gets one
    chat.completion, whatever `stream: false` it sent."""
    body = chat(CPU_MODEL, "Tell me a long story.", 300)
    if explicit:
        body["stream"] = False
    client = openai.OpenAI(base_url=cluster.router.url + "/v1", api_key=API_KEY, max_retries=0)
    answer = client.chat.completions.create(**body)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
    assert answer.model in (CPU_MODEL, GPU_MODEL)
