"""Forwarding a request to the local backends: the backend, the one retry, the slot, the
answer relayed, and the outcome counted once (issue 25 moved it out of app.py).

An `Attempt` owns what one request holds on its way: the route and backend it is on, the slot,
the backend's response, and its outcome (the status code counted), recorded in the metrics
once, when it closes. `forward` decides what happens to it. A wait queue or per-key budgets
(issue 31) hook in at `Attempt.take_free_slot` and `Attempt.take_slot`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from llmctl.router import sse
from llmctl.router.backends import BackendGone, BackendState, QueueTimeout
from llmctl.router.clients import ANONYMOUS
from llmctl.router.containment import Quarantine, body_hash
from llmctl.router.errors import JSON, ApiError
from llmctl.router.metrics import RouterMetrics
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.relay import Sink, relay_stream
from llmctl.router.table import Limits, ModelRoute
from llmctl.router.upstream import Response, UpstreamError

log = logging.getLogger("llmctl.router")


class Ask(NamedTuple):
    """What a request asks for, as the policy reads it."""

    model: ModelRoute
    complexity: str
    require_gpu: bool
    # The client key's name and what its policy allows (issue 31, router/clients.py); a router
    # without keys serves everyone as `anonymous`.
    key: str = ANONYMOUS
    allow_cpu: bool = True
    allow_gpu: bool = True
    denied_reason: str = "gpu_not_allowed"


class Routing(Protocol):
    """What forwarding needs of the app (app.RouterApp provides it)."""

    limits: Limits
    metrics: RouterMetrics
    quarantine: Quarantine
    retry_after: int

    def choose(self, ask: Ask, exclude: Sequence[str] = ()) -> Route | Refusal: ...
    def refusal(self, route: Refusal) -> ApiError: ...
    def count_fallback(self, route: Route) -> None: ...


class Attempt:
    """One request on the local backends (module docstring)."""

    def __init__(self, metrics: RouterMetrics, ask: Ask, route: Route, started: float) -> None:
        self.metrics, self.ask, self.started = metrics, ask, started
        self.route = route
        self.backend: BackendState = route.backends[0]  # type: ignore[assignment]
        self.tried: list[str] = []
        self.code = "499"  # until an answer goes out: the client went away first
        self.response: Response | None = None
        self.holding = False

    def take_free_slot(self) -> bool:
        """A slot on the backend if one is free now (the usual case: no coroutine to run)."""
        if not self.backend.try_acquire():
            return False
        self.holding = True
        self.tried.append(self.backend.name)
        return True

    async def take_slot(self, timeout: float) -> None:
        """A slot on the backend (QueueTimeout, BackendGone as backends.acquire raises them)."""
        await self.backend.acquire(timeout)
        self.holding = True
        self.tried.append(self.backend.name)

    def drop_response(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None

    def move(self, route: Route) -> None:
        """On to the route's first backend: what this one held is given back."""
        self.drop_response()
        if self.holding:
            self.backend.release()
            self.holding = False
        self.route = route
        self.backend = route.backends[0]  # type: ignore[assignment]

    def close(self) -> None:
        """The end: the response and the slot given back, the outcome counted."""
        if self.response is not None:
            self.drop_response()
        backend, served, m = self.backend, self.route.served, self.metrics
        elapsed = time.perf_counter() - self.started
        # Served is a StrEnum: the member is its label (`.value` costs a Python call in 3.11).
        m.requests.inc((served, backend.cloud, self.ask.model.name, self.code))
        m.duration.observe((served,), elapsed)
        if self.holding:
            backend.release()
            self.holding = False
            if backend.config.hourly_cost_usd:
                m.cost.inc(
                    ("cpu" if served == Served.CPU_FALLBACK else served, backend.cloud),
                    backend.config.hourly_cost_usd * elapsed / 3600 / backend.slots,
                )

    def count_tokens(self, payload: bytes) -> None:
        count_tokens(self.metrics, self.route.served, payload, self.ask.key)


def count_tokens(
    metrics: RouterMetrics, served: str, payload: bytes, key: str | None = None
) -> None:
    """The backend's usage report, per tier and (issue 31) per client key."""
    prompt, completion = sse.token_counts(payload)
    tier = "cpu" if served == Served.CPU_FALLBACK else served
    if prompt is not None:
        metrics.tokens.inc((tier, "prompt"), prompt)
        if key is not None:
            metrics.key_tokens.inc((key, tier, "prompt", metrics.replica), prompt)
    if completion is not None:
        metrics.tokens.inc((tier, "completion"), completion)
        if key is not None:
            metrics.key_tokens.inc((key, tier, "completion", metrics.replica), completion)


async def forward(
    app: Routing,
    path: str,
    body: bytes,
    conn: Sink,
    ask: Ask,
    route: Route,
    *,
    stream: bool,
    started: float,
    upstream_body: bytes,
    assemble: bool = False,
) -> None:
    """Send the request to the route's best backend and relay the answer.

    What is retried (once, on another backend chosen by `choose`): a connect error, and a reset
    before any response byte when the backend is still alive afterwards. A backend that dies on
    a request (reset, then no answer to a health check) marks the request as poison: it is not
    sent anywhere else (containment.py), and the client gets 502 `backend_crashed`. A request
    queued on a backend that is marked not ready moves to another backend at once. Nothing else
    is retried: a 5xx answer is the backend's verdict on the request."""
    attempt = Attempt(app.metrics, ask, route, started)
    try:
        await _get_response(app, attempt, path, body, upstream_body)
        await _answer(app, attempt, conn, path, stream, assemble)
    except ApiError as error:
        error.counted = True
        attempt.code = str(error.status)
        raise
    except asyncio.CancelledError:
        if conn.shutting_down:
            attempt.code = "503"  # cut at the drain deadline
            if not conn.responded:
                cut = ApiError(
                    503,
                    "the router shut down before this request was answered; retry",
                    "service_unavailable",
                    "shutting_down",
                    retry_after=1,
                )
                await conn.send(cut.status, cut.headers(), cut.body())
        raise
    finally:
        attempt.close()


async def _get_response(
    app: Routing, attempt: Attempt, path: str, body: bytes, upstream_body: bytes
) -> None:
    """Until `attempt.response` holds the answer's head (or an ApiError is raised)."""
    limits = app.limits
    loop = asyncio.get_running_loop()
    queue_deadline = loop.time() + limits.queue_timeout_seconds
    retried = False
    while True:
        backend = attempt.backend
        if not attempt.take_free_slot():
            try:
                await attempt.take_slot(max(queue_deadline - loop.time(), 0.0))
            except QueueTimeout:
                raise ApiError(
                    429,
                    f"all {backend.slots} slots of {backend.name} stayed busy for "
                    f"{limits.queue_timeout_seconds:g} s",
                    "rate_limit_error",
                    "queue_timeout",
                    retry_after=app.retry_after,
                ) from None
            except BackendGone:
                # Not a retry: the request has not been sent anywhere yet.
                attempt.move(_next_route(app, attempt, f"{backend.name} went away"))
                continue
        reason = None
        sent_at = time.monotonic()
        try:
            attempt.response = await backend.pool.request(
                b"POST",
                path.encode(),
                upstream_body,
                connect_timeout=limits.connect_timeout_seconds,
                first_byte_timeout=limits.first_byte_timeout_seconds,
                idle_timeout=limits.idle_timeout_seconds,
            )
        except UpstreamError as exc:
            # The slot is kept until the backend's state is known: released earlier, it would
            # go to a queued request that then fails on the same backend.
            if exc.kind == "timeout":
                raise ApiError(
                    504, f"{backend.name}: {exc}", "timeout", "backend_timeout"
                ) from None
            if exc.kind == "connect":
                backend.mark_failed(str(exc))
            elif not await backend.recheck(limits.connect_timeout_seconds, sent_at):
                backend.mark_failed(f"it stopped answering after a reset: {exc}")
                app.quarantine.hold(body_hash(body))
                log.warning(
                    "%s crashed or went away while processing a request; the request is not "
                    "retried elsewhere: it may be what crashed it",
                    backend.name,
                )
                raise ApiError(
                    502,
                    f"{backend.name} closed the connection while processing this request and "
                    "then stopped answering health checks. The request is not retried on "
                    "another backend, because it may be what crashed this one.",
                    "upstream_error",
                    "backend_crashed",
                ) from None
            reason = str(exc)
            # A pooled connection that reset was already re-sent on a fresh one: that was the
            # one retry.
            retried = retried or exc.retried
        response = attempt.response
        if response is not None and response.status == 503:
            # llama-server says it did not take the request (loading, overloaded).
            reason = f"{backend.name} answered 503"
        if reason is None:
            return
        if retried:
            if response is not None:
                return  # the second backend's own answer goes to the client
            raise ApiError(
                502, f"{backend.name}: {reason}", "upstream_error", "backend_unavailable"
            )
        retried = True
        nxt = app.choose(attempt.ask, attempt.tried)
        if isinstance(nxt, Refusal):
            if response is not None:
                return
            raise ApiError(
                502, f"{backend.name}: {reason}", "upstream_error", "backend_unavailable"
            )
        log.warning("retrying on %s: %s", nxt.backends[0].name, reason)
        attempt.move(nxt)
        app.count_fallback(nxt)


# x-llm-tier, for each way a request is served.
_TIER_HEADERS = {served: (b"x-llm-tier", served.encode()) for served in Served}


def _next_route(app: Routing, attempt: Attempt, why: str) -> Route:
    nxt = app.choose(attempt.ask, attempt.tried)
    if isinstance(nxt, Refusal):
        raise app.refusal(nxt)
    log.info("re-routing a queued request to %s: %s", nxt.backends[0].name, why)
    app.count_fallback(nxt)
    return nxt


async def _answer(
    app: Routing, attempt: Attempt, conn: Sink, path: str, stream: bool, assemble: bool
) -> None:
    response = attempt.response
    assert response is not None
    backend, served = attempt.backend, attempt.route.served
    headers = [
        (b"content-type", response.header(b"content-type") or JSON[1]),
        _TIER_HEADERS[served],
        *backend.answer_headers,
    ]
    content_type = headers[0][1]
    ttft = app.metrics.ttft
    if stream and content_type.startswith(b"text/event-stream"):

        def first_token() -> None:
            ttft.observe((served,), time.perf_counter() - attempt.started)

        def tokens(chunk: bytes) -> None:
            if b'"usage"' in chunk or b'"timings"' in chunk:
                attempt.count_tokens(chunk)

        await relay_stream(
            conn, response, headers, source="the backend", on_first=first_token, on_chunk=tokens
        )
        attempt.code = str(response.status)
        return
    try:
        if assemble and content_type.startswith(b"text/event-stream"):
            payload = await sse.assemble(response, backend.name, path)
            headers[0] = JSON
        else:
            payload = await response.read()
    except UpstreamError as exc:
        raise sse.broken_body(backend.name, exc) from None
    ttft.observe((served,), time.perf_counter() - attempt.started)
    status = response.status
    if status == 500 and sse.CLIENT_MISTAKE.search(payload):
        status, payload = 400, sse.as_client_error(payload)
    attempt.code = str(status)
    await conn.send(status, headers, payload)
    attempt.count_tokens(payload)
