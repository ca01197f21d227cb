"""Aggregate tokens/s and time to first token, direct to llama-server and through the router.

Each burst: `concurrency` clients each send `per_client` streaming chat completions back to back,
every one asking for exactly `max_tokens` tokens (`ignore_eos`, so a random-weight model cannot
stop early). Aggregate tokens/s is every completion token of the burst over its wall time; TTFT
is the time from sending a request to its first content token. The targets take turns, burst by
burst, their order flipping every round, so a slow phase of the machine hits both alike.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PROMPT = (
    "Request {n}: write a long, detailed story about a lighthouse keeper who finds a map "
    "in a bottle, and describe every place the map leads to."
)
SHORT_PROMPT = "Request {n}: a story."  # the CPU self-test's: prompt time is not its point


@dataclass
class Burst:
    tokens: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    wall: float = 0.0


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, float | None]:
    """(completion tokens, seconds to the first content token) of one streamed completion."""
    start = time.perf_counter()
    first: float | None = None
    events = 0
    usage: int | None = None
    async with client.stream(
        "POST",
        url + "/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    ) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"HTTP {response.status_code}: {text}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"error event: {data[:300]}")
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    events += 1
                    if first is None:
                        first = time.perf_counter() - start
            if isinstance(event.get("usage"), dict):
                usage = event["usage"].get("completion_tokens")
    return (usage if isinstance(usage, int) else events), first


async def burst(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    concurrency: int,
    per_client: int,
    max_tokens: int,
    headers: dict[str, str],
    counter: list[int],
    prompt: str = PROMPT,
) -> Burst:
    result = Burst()

    async def worker() -> None:
        for _ in range(per_client):
            counter[0] += 1
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt.format(n=counter[0])}],
                "max_tokens": max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
            }
            try:
                tokens, first = await one_request(client, url, body, headers)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            result.requests += 1
            result.tokens += tokens
            if first is not None:
                result.ttft.append(first)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall = time.perf_counter() - start
    return result


@dataclass(frozen=True)
class Target:
    name: str  # "direct" or "router"
    url: str
    headers: dict[str, str]


def _summary(bursts: list[Burst], max_tokens: int) -> dict[str, Any]:
    tokens = sum(b.tokens for b in bursts)
    wall = sum(b.wall for b in bursts)
    ttft = [t for b in bursts for t in b.ttft]
    requests = sum(b.requests for b in bursts)
    errors = [e for b in bursts for e in b.errors]
    per_round = [b.tokens / b.wall for b in bursts if b.wall > 0]
    return {
        "requests": requests,
        "errors": len(errors),
        "first_errors": errors[:3],
        "tokens": tokens,
        "tokens_per_request": round(tokens / requests, 2) if requests else None,
        "max_tokens": max_tokens,
        "wall_s": round(wall, 3),
        "aggregate_tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "aggregate_tok_s_per_round": [round(x, 2) for x in per_round],
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 2) if ttft else None,
        "ttft_p90_ms": round(_pct(ttft, 0.9) * 1000, 2) if ttft else None,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    targets: list[Target],
    model: str,
    levels: list[int],
    rounds: int,
    per_client: int,
    max_tokens: int,
    request_timeout: float,
    time_left: Callable[[], float] = lambda: float("inf"),
    prompt: str = PROMPT,
) -> dict[str, Any]:
    """Per concurrency level, per target, the figures of `rounds` interleaved bursts. When
    `time_left()` falls under 10 s, the bursts stop and the level says `cut_short`."""
    limits = httpx.Limits(max_connections=max(levels) * 2, max_keepalive_connections=max(levels))
    timeout = httpx.Timeout(request_timeout, connect=10)
    counter = [0]
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        for target in targets:  # warm up: connections open, the model's first pass done
            await burst(
                client, target.url, model, 1, 1, max_tokens, target.headers, counter, prompt
            )
        results: dict[str, Any] = {}
        for level in levels:
            by_target: dict[str, list[Burst]] = {t.name: [] for t in targets}
            cut = False
            for r in range(rounds):
                if time_left() < 10:
                    cut = True
                    break
                for target in targets if r % 2 == 0 else list(reversed(targets)):
                    by_target[target.name].append(
                        await burst(
                            client,
                            target.url,
                            model,
                            level,
                            per_client,
                            max_tokens,
                            target.headers,
                            counter,
                            prompt,
                        )
                    )
            if not any(by_target.values()):
                results[str(level)] = {"cut_short": True}
                continue
            row: dict[str, Any] = {
                name: _summary(bursts, max_tokens) for name, bursts in by_target.items()
            }
            if cut:
                row["cut_short"] = True
            direct, router = row.get("direct"), row.get("router")
            if direct and router:
                row["router_over_direct_tok_s"] = _ratio(
                    router["aggregate_tok_s"], direct["aggregate_tok_s"]
                )
                row["router_over_direct_ttft_p50"] = _ratio(
                    router["ttft_p50_ms"], direct["ttft_p50_ms"]
                )
            results[str(level)] = row
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None
