"""Waiting for a GPU (issue 31 part 1), end to end: the real router (`llmctl router serve`) in
front of real llama-servers. The CPU tier runs from the start; the GPU backend's port is
reserved and its llama-server started only when a test wakes "the GPU pool", as a node joining
would. Each test starts its own router, so the GPU backend's health-check backoff is its own.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.router.fedstubs import StubServer
from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer
from tests.support.router import CPU_MODEL, GPU_MODEL, RouterProcess, router_config, two_models
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

HEADER = "x-llm-gpu-wait"


class Tiers:
    """A running CPU llama-server and a GPU one that is not started yet (its port is fixed)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        gguf = write_llama_gguf(workdir / "tiny.gguf")
        self.cpu = LlamaServer(gguf, CPU_MODEL, workdir).start()
        # One slot: requests woken together are then served one after another, in order.
        self.gpu = LlamaServer(gguf, GPU_MODEL, workdir, parallel=1)

    def router(self, gpu_wait: dict[str, Any], **extra: Any) -> RouterProcess:
        backends = [
            {"name": "aws/cpu", "url": self.cpu.url, "tier": "cpu", "cloud": "aws",
             "model": CPU_MODEL, "slots": 2},
            {"name": "aws/gpu", "url": self.gpu.url, "tier": "gpu", "cloud": "aws",
             "model": GPU_MODEL, "slots": 1},
        ]  # fmt: skip
        config = router_config(backends, two_models(), CPU_MODEL, gpuWait=gpu_wait, **extra)
        # A GPU pool long asleep: its backend is checked once a minute (the default backoff).
        config["healthCheck"] = {"intervalSeconds": 0.2, "maxBackoffSeconds": 60}
        return RouterProcess(config, self.workdir).start()

    def stop(self) -> None:
        self.gpu.stop()
        self.cpu.stop()


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[Tiers]:
    tiers = Tiers(tmp_path)
    try:
        yield tiers
    finally:
        tiers.stop()


def metrics(router: RouterProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(router.url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def waiting(router: RouterProcess) -> float:
    return metrics(router)[("llm_router_gpu_waiting", (("cloud", "aws"),))]


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    wait_for(what, predicate, timeout, every_s=0.02)


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": GPU_MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, **extra}  # fmt: skip


class Call(threading.Thread):
    """One request in its own thread: its response (headers read), and when it came back."""

    def __init__(self, router: RouterProcess, headers: dict[str, str], **body: Any) -> None:
        super().__init__(daemon=True)
        self.router, self.headers, self.body = router, headers, chat(**body)
        self.response: httpx.Response | None = None
        self.first_bytes = self.content = b""
        self.done_at = 0.0
        self.start()

    def run(self) -> None:
        with (
            httpx.Client(timeout=120) as client,
            client.stream(
                "POST", self.router.url + "/v1/chat/completions", json=self.body,
                headers=self.headers,
            ) as response,
        ):  # fmt: skip
            self.done_at = time.monotonic()
            self.response = response
            chunks = response.iter_raw()
            self.first_bytes = next(chunks, b"")
            self.content = self.first_bytes + b"".join(chunks)

    def result(self) -> httpx.Response:
        self.join(120)
        assert self.response is not None
        return self.response


def test_a_request_that_asks_waits_for_the_gpu_while_others_fall_back_at_once(
    tiers: Tiers,
) -> None:
    """The header holds the request (counted as GPU demand at once, so KEDA wakes the pool on
    it) while a request without it is answered by the CPU; the GPU coming up serves the
    waiters in their arrival order, the streaming one with nothing sent before its answer."""
    router = tiers.router({"maxSeconds": 60, "maxDepth": 8})
    try:
        first = Call(router, {HEADER: "60"})
        wait_until("the first request to wait", lambda: waiting(router) == 1)
        seen = metrics(router)
        # Demand at once: the gauge KEDA reads (max of it and the arrivals counter).
        assert seen[("llm_router_tier_demand", (("cloud", "aws"), ("tier", "gpu")))] == 1
        assert seen[("llm_router_tier_requests_total", (("cloud", "aws"), ("tier", "gpu")))] == 1
        second = Call(router, {HEADER: "60"}, stream=True)
        wait_until("the streaming request to wait", lambda: waiting(router) == 2)
        third = Call(router, {HEADER: "60"})
        wait_until("the third request to wait", lambda: waiting(router) == 3)

        began = time.monotonic()
        plain = httpx.post(router.url + "/v1/chat/completions", json=chat(), timeout=60)
        assert plain.status_code == 200, plain.text
        assert plain.headers["x-llm-tier"] == "cpu-fallback"
        cpu_seconds = time.monotonic() - began
        assert first.response is None and second.response is None and third.response is None

        woken = time.monotonic()
        tiers.gpu.start()
        answers = [call.result() for call in (first, second, third)]
        for call, answer in zip((first, second, third), answers, strict=True):
            assert answer.status_code == 200, call.content
            assert answer.headers["x-llm-tier"] == "gpu"
            assert answer.headers["x-llm-backend"] == "aws/gpu"
        # One GPU slot: they came back in the order they arrived.
        assert first.done_at <= second.done_at <= third.done_at
        # The stream's first bytes are its first event: no keep-alive comment before it.
        assert answers[1].headers["content-type"].startswith("text/event-stream")
        assert second.first_bytes.startswith(b"data: {"), second.first_bytes[:80]
        # Found within a few health intervals of its start, not after the backoff (the first
        # waiter cut the health loop's sleep short, and it stays at intervalSeconds).
        assert first.done_at - woken < 5
        seen = metrics(router)
        assert seen[("llm_router_gpu_waits_total", (("outcome", "gpu"),))] == 3
        assert waiting(router) == 0
        print(f"CPU answer without the header: {cpu_seconds:.2f} s; first GPU answer "
              f"{first.done_at - woken:.2f} s after its llama-server began to start")  # fmt: skip
    finally:
        router.stop()


def test_the_openai_client_asks_with_extra_headers(tiers: Tiers) -> None:
    """docs/router.md's example, as written there: the official client's `extra_headers`."""
    router = tiers.router({"maxSeconds": 60})
    try:
        tiers.gpu.start()  # ready: the request goes straight to it
        client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
        wait_until(
            "the GPU backend to be ready",
            lambda: httpx.get(router.url + "/readyz").json()["backends"]["aws/gpu"],
        )
        raw = client.chat.completions.with_raw_response.create(
            model=GPU_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            extra_headers={"x-llm-gpu-wait": "120"},
        )
        assert raw.headers["x-llm-tier"] == "gpu"
        assert raw.parse().choices[0].message is not None
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=GPU_MODEL,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-llm-gpu-wait": "two minutes"},
            )
        assert caught.value.code == "invalid_request"
        assert "x-llm-gpu-wait must be a number of seconds" in caught.value.message
    finally:
        router.stop()


def test_the_bounds_answer_503_with_retry_after_and_a_leaving_client_frees_its_place(
    tiers: Tiers,
) -> None:
    """onGiveUp: reject. Past maxDepth: 503 gpu_wait_full at once; past the wait: 503
    gpu_wait_timeout; a client that disconnects frees its place at once."""
    router = tiers.router(
        {"maxSeconds": 30, "maxDepth": 2, "onGiveUp": "reject", "retryAfterSeconds": 20}
    )
    try:
        began = time.monotonic()
        short = httpx.post(router.url + "/v1/chat/completions", json=chat(),
                           headers={HEADER: "0.5"}, timeout=30)  # fmt: skip
        took = time.monotonic() - began
        assert short.status_code == 503
        assert short.json()["error"]["code"] == "gpu_wait_timeout"
        assert short.headers["retry-after"] == "20"
        assert 0.5 <= took < 5

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=router.url, timeout=30) as client:
                post = client.post("/v1/chat/completions", json=chat(), headers={HEADER: "30"})
                staying = asyncio.ensure_future(post)
                leaving = asyncio.ensure_future(
                    client.post("/v1/chat/completions", json=chat(), headers={HEADER: "30"})
                )
                while await asyncio.to_thread(waiting, router) < 2:
                    await asyncio.sleep(0.02)
                full = await client.post(
                    "/v1/chat/completions", json=chat(), headers={HEADER: "30"}
                )
                leaving.cancel()  # the client goes away: httpx closes its connection
                while await asyncio.to_thread(waiting, router) != 1:
                    await asyncio.sleep(0.02)
                # Its place is free: a new request waits (it does not get 503 full) ...
                taken = asyncio.ensure_future(
                    client.post("/v1/chat/completions", json=chat(), headers={HEADER: "30"})
                )
                while await asyncio.to_thread(waiting, router) != 2:
                    await asyncio.sleep(0.02)
                # ... and both are served once the GPU comes up.
                await asyncio.to_thread(tiers.gpu.start)
                served = await taken
                await staying
                return full, served

        full, served = asyncio.run(scenario())
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "gpu_wait_full"
        assert full.json()["error"]["type"] == "service_unavailable"
        assert full.headers["retry-after"] == "20"
        assert served.status_code == 200 and served.headers["x-llm-tier"] == "gpu"
        seen = metrics(router)
        outcomes = {
            labels[0][1]: value
            for (name, labels), value in seen.items()
            if name == "llm_router_gpu_waits_total"
        }
        assert outcomes == {"timeout": 1, "full": 1, "left": 1, "gpu": 2}
        # The one that left counts as answered 499, as any request whose client left first.
        labels = (("cloud", "aws"), ("code", "499"), ("model", GPU_MODEL), ("tier", "gpu"))
        left = ("llm_router_requests_total", labels)
        assert seen[left] == 1
    finally:
        router.stop()


def test_with_the_fallback_a_request_whose_wait_ends_is_served_by_the_cpu(tiers: Tiers) -> None:
    router = tiers.router({"maxSeconds": 0.5})  # the header's 60 s is capped at 0.5
    try:
        began = time.monotonic()
        response = httpx.post(router.url + "/v1/chat/completions", json=chat(),
                              headers={HEADER: "60"}, timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["x-llm-tier"] == "cpu-fallback"
        assert 0.5 <= time.monotonic() - began < 10
        # x-llm-require-tier: gpu refuses the CPU: the wait ends in a 503 instead.
        refused = httpx.post(
            router.url + "/v1/chat/completions",
            json=chat(),
            headers={HEADER: "60", "x-llm-require-tier": "gpu"},
            timeout=30,
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "gpu_wait_timeout"
    finally:
        router.stop()


def test_on_sigterm_a_waiting_request_stops_waiting_and_is_served_by_the_cpu(
    tiers: Tiers,
) -> None:
    """The drain does not hold a waiter until its deadline (then cut it): it takes its give-up
    answer at once, here the CPU fallback, and the router exits."""
    limits = {"drainWindowSeconds": 0, "drainDeadlineSeconds": 60}
    router = tiers.router({"maxSeconds": 120}, limits=limits)
    try:
        waiter = Call(router, {HEADER: "120"})
        wait_until("the request to wait", lambda: waiting(router) == 1)
        assert router.proc is not None
        began = time.monotonic()
        router.proc.send_signal(signal.SIGTERM)  # one signal: the graceful drain
        answer = waiter.result()
        assert answer.status_code == 200, waiter.content
        assert answer.headers["x-llm-tier"] == "cpu-fallback"
        assert time.monotonic() - began < 30  # not the 60 s drain deadline
        assert router.proc.wait(30) == 0
    finally:
        router.stop()


def test_a_waiter_goes_to_a_peers_gpu_when_the_peer_reports_one_ready(tiers: Tiers) -> None:
    """Federation: the local GPU stays down; the one peer (a stub speaking a router's /readyz
    and answering the POST) comes up with a free GPU while the request waits. The next read of
    its /readyz wakes the waiter, which is forwarded there instead of falling back."""
    peer = StubServer(GPU_MODEL)
    peer.ready = False  # its /readyz fails: not a peer to forward to yet
    federation = {
        "peers": [{"name": "gcp", "cloud": "gcp", "url": peer.url}],
        "peerKey": {"env": "PEER_KEYS"},
        "readinessIntervalSeconds": 0.3,
    }
    backends = [
        {"name": "aws/cpu", "url": tiers.cpu.url, "tier": "cpu", "cloud": "aws",
         "model": CPU_MODEL, "slots": 2},
        {"name": "aws/gpu", "url": tiers.gpu.url, "tier": "gpu", "cloud": "aws",
         "model": GPU_MODEL, "slots": 1},
    ]  # fmt: skip
    config = router_config(
        backends, two_models(), CPU_MODEL, gpuWait={"maxSeconds": 60}, federation=federation
    )
    router = RouterProcess(config, tiers.workdir, env={"PEER_KEYS": "pk"}).start()
    try:
        waiter = Call(router, {HEADER: "60"})
        wait_until("the request to wait", lambda: waiting(router) == 1)
        assert peer.hits == 0
        peer.ready = True
        answer = waiter.result()
        assert answer.status_code == 200, waiter.content
        assert peer.hits == 1
        assert answer.headers.get("x-llm-tier") != "cpu-fallback"
        assert metrics(router)[("llm_router_gpu_waits_total", (("outcome", "gpu"),))] == 1
    finally:
        router.stop()
        peer.close()
