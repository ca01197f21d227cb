"""The `llmctl test-inference` client: send chat completions to the router, time them, and say
in one sentence what went wrong when something did.

Standard library only (http.client on threads): the command works with llmctl's base install,
and each request owns its connection, so a slow stream never holds up another. Concurrency is a
bounded set of daemon threads; every socket operation has a timeout, so every request ends by
itself, and Ctrl-C ends them all at once.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llmctl.errors import ConfigError

API_KEY_ENV = "LLMCTL_API_KEY"
API_KEY_FALLBACK_ENV = "OPENAI_API_KEY"
TIERS = ("gpu", "cpu")
# What each --expect-tier accepts in x-llm-tier: a CPU fallback is still the CPU tier answering.
ACCEPTED_TIERS = {"gpu": ("gpu",), "cpu": ("cpu", "cpu-fallback")}
REPLY_PREVIEW_CHARS = 300


@dataclass(frozen=True)
class Target:
    """Where and what to ask."""

    url: str  # base URL of the router, without /v1
    model: str
    prompt: str
    max_tokens: int
    stream: bool = True
    complexity: str | None = None
    api_key: str | None = None
    timeout_s: float = 120.0

    @property
    def endpoint(self) -> str:
        return self.url + "/v1/chat/completions"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.prompt}],
            "max_tokens": self.max_tokens,
            "stream": self.stream,
        }
        if self.stream:
            # llama-server then sends usage.completion_tokens in the last chunk.
            body["stream_options"] = {"include_usage": True}
        return body

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.stream:
            headers["accept"] = "text/event-stream"
        if self.complexity:
            headers["x-llm-complexity"] = self.complexity
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True)
class Failure:
    """Why one request failed: a stable `kind` for scripts, the server's or socket's message."""

    kind: str
    message: str
    status: int | None = None
    retry_after: str | None = None
    models: tuple[str, ...] = ()


@dataclass
class Result:
    status: int | None
    latency_s: float
    ttft_s: float | None = None
    tier: str | None = None
    backend: str | None = None
    model: str | None = None
    output_tokens: int | None = None
    tokens_counted: bool = False  # True when output_tokens counts stream chunks, not usage
    reply: str = ""
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def tokens_per_s(self) -> float | None:
        if not self.output_tokens or self.latency_s <= 0:
            return None
        return self.output_tokens / self.latency_s

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["tokens_per_s"] = self.tokens_per_s
        if self.failure is not None:
            data["failure"]["models"] = list(self.failure.models)
        return data


def normalize_url(url: str) -> str:
    """`http://host:port`, `http://host:port/` and `http://host:port/v1` all mean the router."""
    hint = "give the router's base URL, e.g. --url http://127.0.0.1:8080"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - parsed lazily: raises for a port out of range or not a number
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ConfigError(f"--url {url!r} is not a valid URL: {exc}", hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not an http(s) URL", hint=hint)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _connection(url: str, timeout_s: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, parts.port, timeout=timeout_s, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(host, parts.port, timeout=timeout_s)


def _path(url: str, suffix: str) -> str:
    return (urlsplit(url).path or "") + suffix


def list_models(url: str, api_key: str | None, timeout_s: float = 10.0) -> list[str]:
    """The model names GET /v1/models lists (empty when it cannot be read)."""
    conn = _connection(url, timeout_s)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        conn.request("GET", _path(url, "/v1/models"), headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            return []
        data = json.loads(response.read())
        return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
    except (OSError, ValueError, http.client.HTTPException, KeyError, AttributeError):
        return []
    finally:
        conn.close()


def _error_body(raw: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI-shaped error body, or the raw text."""
    text = raw.decode(errors="replace").strip()
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text[:300] or "(empty body)", None
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message", text[:300])), str(code) if code else None
    if isinstance(error, str):
        return error, None
    return text[:300], None


def _http_failure(status: int, raw: bytes, headers: http.client.HTTPMessage) -> Failure:
    message, code = _error_body(raw)
    retry_after = headers.get("retry-after")
    if status == 401:
        kind = "unauthorized"
    elif status == 403:
        kind = "forbidden"
    elif status == 404 and (code == "model_not_found" or "model" in message.lower()):
        kind = "model_not_found"
    elif status == 404:
        kind = "not_found"
    elif status == 429:
        kind = "rate_limited"
    elif status == 503:
        kind = "unavailable"
    elif status == 504:
        kind = "gateway_timeout"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "bad_request"
    return Failure(kind, message, status, retry_after)


def _socket_failure(exc: BaseException, url: str, timeout_s: float) -> Failure:
    if isinstance(exc, ConnectionRefusedError):
        return Failure("connection_refused", f"connection refused by {url}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure("timeout", f"no answer from {url} within {timeout_s:g} s")
    if isinstance(exc, socket.gaierror):
        return Failure("connect_error", f"cannot resolve {urlsplit(url).hostname}: {exc}")
    if isinstance(exc, http.client.HTTPException | ConnectionResetError | BrokenPipeError):
        return Failure("connection_lost", f"the connection to {url} closed mid-answer ({exc!r})")
    return Failure("connect_error", f"cannot reach {url}: {exc}")


def _sse_events(response: http.client.HTTPResponse) -> Iterator[str]:
    """The data of each Server-Sent Event, as it arrives."""
    data: list[str] = []
    while True:
        raw = response.readline()
        if not raw:
            if data:
                yield "\n".join(data)
            return
        line = raw.decode(errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # Comments (":...") and other fields (event:, id:, retry:) carry nothing we time.


def _read_stream(
    response: http.client.HTTPResponse,
    result: Result,
    started: float,
    deadline: float,
    timeout_s: float,
) -> None:
    pieces: list[str] = []
    chunks = 0
    done = False
    for data in _sse_events(response):
        if time.monotonic() > deadline:
            result.failure = Failure("timeout", f"the stream ran past {timeout_s:g} s")
            break
        if data == "[DONE]":
            done = True
            break
        try:
            event = json.loads(data)
        except ValueError:
            result.failure = Failure("bad_response", f"a stream event is not JSON: {data[:200]}")
            break
        if isinstance(event.get("error"), dict | str):
            message, _code = _error_body(data.encode())
            result.failure = Failure("stream_broken", f"the stream ended with an error: {message}")
            break
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                if result.ttft_s is None:
                    result.ttft_s = time.perf_counter() - started
                chunks += 1
                pieces.append(content)
        usage = event.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            result.output_tokens = usage["completion_tokens"]
    if result.failure is None and not done:
        result.failure = Failure("stream_incomplete", "the stream ended without data: [DONE]")
    if result.output_tokens is None:
        result.output_tokens, result.tokens_counted = chunks, True
    result.reply = "".join(pieces)


def _read_body(raw: bytes, result: Result) -> None:
    try:
        data = json.loads(raw)
        message = data["choices"][0]["message"]
        result.reply = str(message.get("content") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        result.failure = Failure("bad_response", f"not a chat completion: {raw[:200]!r}")
        return
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        result.output_tokens = usage["completion_tokens"]


def send_one(target: Target) -> Result:
    """One chat completion, timed. Never raises for network or HTTP errors: they are the
    result's `failure`."""
    started = time.perf_counter()
    deadline = time.monotonic() + target.timeout_s
    conn = _connection(target.url, target.timeout_s)
    result = Result(status=None, latency_s=0.0)
    try:
        conn.request(
            "POST",
            _path(target.url, "/v1/chat/completions"),
            body=json.dumps(target.body()).encode(),
            headers=target.headers(),
        )
        response = conn.getresponse()
        result.status = response.status
        result.tier = response.getheader("x-llm-tier")
        result.backend = response.getheader("x-llm-backend")
        result.model = response.getheader("x-llm-model")
        if response.status != 200:
            result.failure = _http_failure(response.status, response.read(), response.msg)
        elif target.stream and "text/event-stream" in (response.getheader("content-type") or ""):
            _read_stream(response, result, started, deadline, target.timeout_s)
        else:
            # Without text/event-stream the server ignored `stream`: read it as one answer.
            _read_body(response.read(), result)
            if target.stream and result.ok:
                result.ttft_s = time.perf_counter() - started
    except (OSError, http.client.HTTPException) as exc:
        result.failure = _socket_failure(exc, target.url, target.timeout_s)
    finally:
        conn.close()
    result.latency_s = time.perf_counter() - started
    if result.failure is not None and result.failure.kind == "model_not_found":
        models = tuple(list_models(target.url, target.api_key))
        result.failure = Failure(**{**asdict(result.failure), "models": models})
    return result


@dataclass
class Run:
    target: Target
    requests: int
    concurrency: int
    wall_s: float = 0.0
    results: list[Result] = field(default_factory=list)


def run(
    target: Target,
    requests: int = 1,
    concurrency: int = 1,
    on_result: Callable[[Result], None] | None = None,
) -> Run:
    """Send `requests` completions, at most `concurrency` at once."""
    if requests < 1:
        raise ConfigError("--requests must be at least 1")
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    outcome = Run(target, requests, concurrency)
    started = time.perf_counter()
    for result in _send_all(target, requests, concurrency):
        outcome.results.append(result)
        if on_result is not None:
            on_result(result)
    outcome.wall_s = time.perf_counter() - started
    return outcome


def _send_all(target: Target, requests: int, concurrency: int) -> Iterator[Result]:
    """The results of `requests` completions as they finish, `concurrency` at a time.

    The senders are daemon threads, not a ThreadPoolExecutor: Python joins an executor's
    workers at exit, so after Ctrl-C llmctl would wait out every request in flight (up to
    --timeout, 120 s by default). A daemon thread is abandoned when the process ends, and the
    server sees its connection close. The main thread waits on a queue, which Ctrl-C interrupts.
    """
    jobs: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(requests):
        jobs.put(None)
    done: queue.SimpleQueue[Result | BaseException] = queue.SimpleQueue()
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            try:
                jobs.get_nowait()
            except queue.Empty:
                return
            try:
                done.put(send_one(target))
            except BaseException as exc:  # handed to the main thread, which raises it
                done.put(exc)

    for i in range(min(concurrency, requests)):
        threading.Thread(target=sender, name=f"test-inference-{i}", daemon=True).start()
    try:
        for _ in range(requests):
            item = done.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # on Ctrl-C: no new requests; those in flight die with the process


def percentile(values: list[float], pct: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _spread(values: list[float]) -> dict[str, float | None]:
    return {f"p{p}": percentile(values, p) for p in (50, 95, 99)}


@dataclass(frozen=True)
class Problem:
    """Why the command exits non-zero: one sentence and what to do about it."""

    kind: str
    message: str
    hint: str | None = None


def tier_matches(expected: str, tier: str | None) -> bool:
    return tier in ACCEPTED_TIERS[expected]


def problems(outcome: Run, expect_tier: str | None) -> list[Problem]:
    """Each distinct reason this run failed, with a hint (empty when it passed)."""
    found: dict[str, Problem] = {}
    url = outcome.target.url
    for result in outcome.results:
        failure = result.failure
        if failure is None or failure.kind in found:
            continue
        found[failure.kind] = _explain(failure, outcome.target)
    if expect_tier is not None:
        ok = [r for r in outcome.results if r.ok]
        wrong = Counter(str(r.tier) for r in ok if not tier_matches(expect_tier, r.tier))
        if wrong:
            answered = ", ".join(f"{tier} ({n})" for tier, n in sorted(wrong.items()))
            found["wrong_tier"] = Problem(
                "wrong_tier",
                f"expected the {expect_tier} tier to answer, but {answered} answered "
                f"{sum(wrong.values())} of {len(ok)} requests at {url}",
                _tier_hint(expect_tier, wrong),
            )
    return list(found.values())


def _tier_hint(expected: str, answered: Counter[str]) -> str:
    if expected == "gpu" and "cpu-fallback" in answered:
        return (
            "the router wanted the GPU tier but no GPU backend was ready (scaled to zero, spot "
            "interruption or failing health checks), so it fell back to CPU; the GPU pool wakes "
            "on this demand: check `llmctl gpu status --cloud ...` and try again in a few minutes"
        )
    if expected == "gpu":
        return (
            "the router sends a request to the GPU tier when the model has more than 3B "
            "parameters or the complexity is reasoning or code-generation: pass a bigger "
            "--model or --complexity reasoning"
        )
    return (
        "small models and chat prompts go to the CPU tier; drop --complexity or ask for a "
        "model under 3B parameters"
    )


def _explain(failure: Failure, target: Target) -> Problem:
    url = target.url
    kind = failure.kind
    if kind == "connection_refused":
        return Problem(
            kind,
            f"connection refused: nothing is listening at {url}",
            "start a port-forward to the router (kubectl -n llm-server port-forward "
            "svc/llm-router 8080:80, then --url http://127.0.0.1:8080), or let llmctl do it "
            "with --cloud aws|azure|gcp",
        )
    if kind == "unauthorized":
        if target.api_key:
            return Problem(
                kind,
                f"the router at {url} refused the API key (HTTP 401: {failure.message})",
                "check the key against the router's apiKeys (its key file or env var)",
            )
        return Problem(
            kind,
            f"the router at {url} needs an API key (HTTP 401: {failure.message})",
            f"pass it with --api-key KEY or set ${API_KEY_ENV} (${API_KEY_FALLBACK_ENV} is "
            "read when that is unset)",
        )
    if kind == "model_not_found":
        known = ", ".join(failure.models)
        return Problem(
            kind,
            f"model {target.model!r} is not served at {url}"
            + (f"; it serves: {known}" if known else f" ({failure.message})"),
            "pass one of them with --model" if known else None,
        )
    if kind == "timeout":
        return Problem(
            kind,
            failure.message,
            "raise --timeout; a GPU pool scaling from zero takes minutes to answer",
        )
    if kind in ("rate_limited", "unavailable"):
        after = f"; Retry-After: {failure.retry_after} s" if failure.retry_after else ""
        what = "busy (429)" if kind == "rate_limited" else "unavailable (503)"
        return Problem(
            kind,
            f"the router at {url} is {what}: {failure.message}{after}",
            "retry after that long, or lower --concurrency",
        )
    if kind == "not_found":
        return Problem(
            kind,
            f"{target.endpoint} answered 404: {failure.message}",
            "is --url the router's base URL (without /v1/chat/completions)?",
        )
    status = f" (HTTP {failure.status})" if failure.status else ""
    return Problem(kind, f"{kind.replace('_', ' ')}{status}: {failure.message}")


def summary(outcome: Run, expect_tier: str | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data (what --output json prints)."""
    ok = [r for r in outcome.results if r.ok]
    latencies = [r.latency_s for r in ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tokens = sum(r.output_tokens or 0 for r in ok)
    found = problems(outcome, expect_tier)
    target = outcome.target
    return {
        "url": target.url,
        "model": target.model,
        "stream": target.stream,
        "complexity": target.complexity,
        "max_tokens": target.max_tokens,
        "expect_tier": expect_tier,
        "passed": not found,
        "requests": outcome.requests,
        "concurrency": outcome.concurrency,
        "succeeded": len(ok),
        "failed": len(outcome.results) - len(ok),
        "wall_s": outcome.wall_s,
        "throughput_rps": len(ok) / outcome.wall_s if outcome.wall_s > 0 else None,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / outcome.wall_s if outcome.wall_s > 0 else None,
        "latency_s": _spread(latencies),
        "ttft_s": _spread(ttfts),
        "tiers": dict(Counter(str(r.tier) for r in ok)),
        "backends": dict(Counter(str(r.backend) for r in ok)),
        "errors": dict(Counter(r.failure.kind for r in outcome.results if r.failure)),
        "problems": [asdict(p) for p in found],
        "results": [r.as_dict() for r in outcome.results],
    }
