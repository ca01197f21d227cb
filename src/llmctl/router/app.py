"""The router's HTTP service: the OpenAI-compatible endpoints, the policy, the proxying.

Endpoints: POST /v1/chat/completions and /v1/completions (plain and `stream: true`),
GET /v1/models, /healthz, /readyz and /metrics. Every error body has OpenAI's shape
{"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmctl.router import federation, gpu_wait, policy, sse
from llmctl.router.asgi import Request, RouterAsgi
from llmctl.router.backends import BackendState, health_loop
from llmctl.router.budget import GpuBudgets, seconds_to_midnight
from llmctl.router.clients import (
    PEER,
    ClientKey,
    RateLimiter,
    identify,
    load_client_keys,
)
from llmctl.router.containment import Quarantine
from llmctl.router.errors import JSON, ApiError, invalid, not_allowed, unauthorized
from llmctl.router.federation import PeerChoice
from llmctl.router.forwarding import Ask, forward
from llmctl.router.gpu_wait import GpuWaitQueue, Outcome
from llmctl.router.key_config import OverBudget
from llmctl.router.metrics import CONTENT_TYPE, RouterMetrics
from llmctl.router.peers import Peers
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.relay import Sink
from llmctl.router.table import ApiKeys, GiveUp, Limits, ModelRoute, RouterConfig, Tier
from llmctl.router.upstream import stop_loops
from llmctl.router.validation import validate_body

if TYPE_CHECKING:
    from llmctl.router.guard import Guard

log = logging.getLogger("llmctl.router")


def load_api_keys(settings: ApiKeys) -> list[ClientKey]:
    """Client keys with their names and policies, as `apiKeys` configures them
    (router/clients.py)."""
    return load_client_keys(settings)


# --- the service -------------------------------------------------------------------------------


class RouterApp:
    def __init__(self, config: RouterConfig, api_keys: list[ClientKey] | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.backends = [BackendState(b) for b in config.backends]
        self.models = policy.model_index(config)
        self.known = policy.known_model_ids(config)
        self.metrics = RouterMetrics()
        self.api_keys = api_keys or []
        # issue 31: each named key's rate limit (per replica) and GPU budget (shared).
        self.rate_limits = RateLimiter()
        store = config.api_keys.budget_store
        self.budgets = GpuBudgets(store, self.api_keys, self.metrics) if store is not None else None
        self.retry_after = max(1, int(config.health_check.interval_seconds + 0.999))
        # A request's GPU wait when it sends no x-llm-gpu-wait and its key sets none (issue 31).
        self.default_gpu_wait = min(config.gpu_wait.default_seconds, config.gpu_wait.max_seconds)
        # federation (issue 16): other clouds' routers; None keeps the single-cloud behaviour.
        # Bodies that crashed a backend lately (review 2026-12-06 N1), shared with the peers.
        self.quarantine = Quarantine()
        self.peers = (
            Peers(
                config.cloud,
                config.federation,
                config.limits.first_byte_timeout_seconds,
                self.quarantine,
            )
            if config.federation is not None
            else None
        )
        # Shutdown (SIGTERM): draining fails /readyz; once not accepting, new requests get 503.
        self.draining = False
        self.accepting = True
        self._tasks: list[asyncio.Task[None]] = []
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "llmctl"}
                    for name in self.known
                ],
            }
        ).encode()
        # Every series KEDA reads exists from the start at 0: Prometheus' increase() cannot see
        # a counter's first step if the series appears with it.
        for tier in (Tier.GPU, Tier.CPU):
            self.metrics.tier_demand.inc((tier.value, config.cloud), 0)
            self.metrics.tier_requests.inc((tier.value, config.cloud), 0)
        # The per-key token series too (issue 31): the budgets' increase() must see each
        # key's first tokens, and a restarted replica's counter must start again from 0.
        for name in dict.fromkeys(k.name for k in self.api_keys):
            for tier in (Tier.GPU, Tier.CPU):
                for direction in ("prompt", "completion"):
                    self.metrics.key_tokens.inc(
                        (name, tier.value, direction, self.metrics.replica), 0
                    )
        if self.budgets is not None:
            self.metrics.budget_store_up.inc((), 0)
        # Requests waiting for a GPU (issue 31): woken when a GPU backend turns ready here, or
        # after each read of a peer's /readyz.
        self.gpu_queue = GpuWaitQueue(config.gpu_wait.max_depth)
        self.metrics.gpu_waiting.inc((config.cloud,), 0)
        for backend in self.backends:
            if backend.tier == Tier.GPU:
                backend.on_ready = self.gpu_queue.wake
        if self.peers is not None:
            self.peers.on_checked = self.gpu_queue.wake

    async def start(self) -> None:
        """A first health check of every backend, then the background loops."""
        timeout = min(self.config.health_check.interval_seconds, 2.0)
        await asyncio.gather(*(b.check(timeout) for b in self.backends))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                health_loop(
                    b,
                    self.config.health_check,
                    self.gpu_queue.busy if b.tier == Tier.GPU else None,
                )
            )
            for b in self.backends
        ]
        if self.peers is not None:  # federation (issue 16)
            await self.peers.start()
        if self.budgets is not None:  # issue 31: the day's spend before the first request
            await self.budgets.start()

    async def stop(self) -> None:
        await stop_loops(self._tasks, (b.pool for b in self.backends))
        if self.budgets is not None:
            await self.budgets.stop()
        if self.peers is not None:  # federation (issue 16)
            await self.peers.stop()

    # --- dispatch --------------------------------------------------------------------------
    async def handle(self, request: Request, conn: Sink) -> None:
        try:
            if request.too_large:
                raise ApiError(
                    413,
                    f"the request body is larger than the limit of "
                    f"{self.limits.max_body_bytes} bytes",
                    "invalid_request_error",
                    "request_too_large",
                )
            path = request.path
            if path in _POST_PATHS:
                if request.method != "POST":
                    raise not_allowed(request.method, path, b"POST")
                if federation.HOP_HEADER in request.headers:  # federation (issue 16)
                    self._authorize_peer(request)
                    client: ClientKey | None = ClientKey(PEER, b"")
                else:
                    client = self._authorize(request)
                if not self.accepting:
                    raise ApiError(
                        503,
                        "the router is shutting down; retry (another replica will answer)",
                        "service_unavailable",
                        "shutting_down",
                        retry_after=1,
                    )
                await self._proxy(request, conn, client, chat=path == "/v1/chat/completions")
                return
            if path not in _GET_PATHS:
                shown = path if len(path) <= 200 else path[:200] + "..."
                raise ApiError(
                    404, f"no such endpoint: {shown}", "invalid_request_error", "not_found"
                )
            if request.method not in ("GET", "HEAD"):
                raise not_allowed(request.method, path, b"GET, HEAD")
            if path == "/healthz":
                await conn.send(200, [JSON], b'{"status":"ok"}')
            elif path == "/readyz":
                await self._readyz(conn)
            elif path == "/metrics":
                ready = self.metrics.backend_ready.values
                for b in self.backends:
                    ready[(b.name, b.tier.value, b.cloud)] = 1.0 if b.ready else 0.0
                if self.budgets is not None:
                    today = self.metrics.key_gpu_tokens_today.values
                    for name in self.budgets.limits:
                        today[(name,)] = self.budgets.used(name)
                text = self.metrics.render()
                if self.peers is not None:  # federation (issue 16)
                    text += self.peers.metrics.render()
                await conn.send(200, [(b"content-type", CONTENT_TYPE.encode())], text)
            else:  # /v1/models
                self._authorize(request)
                await conn.send(200, [JSON], self._models_body)
        except ApiError as error:
            if not error.counted:
                # Refused before any backend was chosen (4xx, shutdown): counted all the same,
                # with fixed labels so no client string becomes a series.
                self.metrics.requests.inc(
                    ("none", self.config.cloud, error.model or "unknown", str(error.status))
                )
            await conn.send(error.status, error.headers(), error.body())

    def count_refusal(self, status: int) -> None:
        """An answer the HTTP server gave before the app saw the request (408, 413, 414, 431,
        505, 503 at the connection cap)."""
        self.metrics.requests.inc(("none", self.config.cloud, "unknown", str(status)))

    def _authorize(self, request: Request) -> ClientKey | None:
        """The request's key; None when the router has no keys (anyone may use it)."""
        if not self.api_keys:
            return None
        client = identify(request.headers, self.api_keys)
        if client is None:
            raise unauthorized(
                "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_api_key"
            )
        return client

    def _authorize_peer(self, request: Request) -> None:
        """federation (issue 16): a hop-marked request authenticates with the peer key only."""
        if self.peers is None or not self.peers.authorize(request.headers):
            raise unauthorized(
                "a request forwarded by a peer router needs this router's peer key",
                "invalid_peer_key",
            )

    async def _readyz(self, conn: Sink) -> None:
        """Ready when every configured model can be answered: by a ready backend of its own,
        or (graceful degradation) by a ready CPU fallback backend. A GPU pool scaled to zero
        must not take the router out of its Service. Not ready once draining (SIGTERM)."""
        status: dict[str, str] = {}
        fallback_ready = any(
            b.ready and b.tier == Tier.CPU and b.model == self.config.policy.fallback_model
            for b in self.backends
        )
        for model in self.config.models:
            own = any(b.ready and b.model == model.name for b in self.backends)
            status[model.name] = "ready" if own else "fallback" if fallback_ready else "unavailable"
        ok = all(s != "unavailable" for s in status.values()) and not self.draining
        body = json.dumps(
            {
                "status": "draining" if self.draining else "ready" if ok else "not ready",
                "models": status,
                "backends": {b.name: b.ready for b in self.backends},
                # federation (issue 16): what peers read, per tier and model, with free slots.
                "tiers": federation.local_capacity(self.backends),
                # Bodies that crashed a backend: peers refuse them too (containment.py).
                "quarantine": self.quarantine.report(),
            }
        ).encode()
        await conn.send(200 if ok else 503, [JSON], body)

    # --- proxying --------------------------------------------------------------------------
    async def _proxy(
        self, request: Request, conn: Sink, client: ClientKey | None, chat: bool
    ) -> None:
        started = time.perf_counter()
        body = validate_body(request.body, chat)
        if self.quarantine.holds(request.body):
            raise ApiError(
                422,
                "this request crashed a backend a short while ago; it is not sent to another "
                f"one for {self.quarantine.seconds:g} s after that",
                "invalid_request_error",
                "request_quarantined",
            )
        name = body["model"]
        assert isinstance(name, str)
        model = self.models.get(name)
        if model is None:
            shown = name if len(name) <= 200 else name[:200] + "..."
            raise ApiError(
                404,
                f"the model {shown!r} does not exist; known models: {', '.join(self.known)}",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        complexity = request.headers.get("x-llm-complexity")
        if not complexity:
            metadata = body.get("metadata")
            hint = metadata.get("complexity") if isinstance(metadata, dict) else None
            complexity = (
                hint if isinstance(hint, str) else policy.classify_prompt(policy.prompt_text(body))
            )
        required = request.headers.get("x-llm-require-tier")
        if required is not None:
            required = required.strip().lower()
        if required not in (None, "", "gpu"):
            error = invalid("x-llm-require-tier accepts only 'gpu'", "x-llm-require-tier")
            error.model = model.name
            raise error
        ask = Ask(model, complexity.strip().lower(), required == "gpu")
        if client is not None:  # no keys: anonymous, as Ask says, and no key rules
            ask = self._key_rules(client, ask)
        # The key's own default wait (issue 31) when the request sends no header.
        key_wait = client.policy.gpu_wait_seconds if client and client.policy else None
        if key_wait is None and gpu_wait.HEADER not in request.headers:
            wait = self.default_gpu_wait
        else:
            try:
                wait = gpu_wait.wait_seconds(request.headers, self.config.gpu_wait, key_wait)
            except ApiError as error:
                error.model = model.name
                raise
        if not ask.allow_gpu:
            wait = 0.0  # a key that may not use the GPU (now) has nothing to wait for
        route = self.choose(ask)
        # federation (issue 16): the peers to try before the local route, best first; none
        # for a key that may not use the GPU (a peer would serve its GPU request there).
        hop = federation.HOP_HEADER in request.headers
        choices = (
            self._peer_choices(route, model.name, hop)
            if ask.allow_gpu and self.peers is not None
            else []
        )
        # A key that may not use the GPU (now) is CPU demand: it must not wake the GPU pool.
        # (Tier is a StrEnum: the member is its label, without the cost of `.value`.)
        wanted = route.wanted if ask.allow_gpu else Tier.CPU
        demand = (wanted, self.config.cloud)
        counted = not choices or self._count_peer_demand()
        if counted:
            self.metrics.tier_demand.inc(demand)
            self.metrics.tier_requests.inc(demand)
        try:
            # A peer's request is not held here: the router it came from does the waiting.
            if wait > 0 and not hop and _waits_for_gpu(route, choices):
                route, choices = await self._wait_for_gpu(ask, wait, conn)
            if choices and self.peers is not None:  # federation (issue 16)
                if await self.peers.forward(
                    request,
                    conn,
                    choices,
                    model=model.name,
                    stream=body.get("stream") is True,
                    started=started,
                    app_metrics=self.metrics,
                    idle_timeout=self.limits.idle_timeout_seconds,
                ):
                    return
                if not counted:  # served locally after all: it counts as today
                    counted = True
                    self.metrics.tier_demand.inc(demand)
                    self.metrics.tier_requests.inc(demand)
                route = self.choose(
                    ask
                )  # the peers took their timeouts: decide on what is ready now
            if isinstance(route, Refusal):
                self.metrics.requests.inc(
                    (route.wanted.value, self.config.cloud, model.name, "503")
                )
                raise self.refusal(route)
            if route.fallback_reason:
                self.count_fallback(route)
            stream = body.get("stream") is True
            upstream_body = request.body
            assemble = not stream and sse.wants_assembly(
                body, self.limits.stream_upstream_from_max_tokens
            )
            if assemble:
                upstream_body = sse.as_streamed(request.body)
            await forward(
                self,
                request.path,
                request.body,
                conn,
                ask,
                route,
                stream=stream,
                started=started,
                upstream_body=upstream_body,
                assemble=assemble,
            )
        finally:
            if counted:
                self.metrics.tier_demand.dec(demand)

    def _peer_choices(self, route: Route | Refusal, model: str, hop: bool) -> list[PeerChoice]:
        if self.peers is None:
            return []
        return federation.peer_choices(route, model, self.peers.views(), hop=hop)

    async def _wait_for_gpu(
        self, ask: Ask, seconds: float, conn: Sink
    ) -> tuple[Route | Refusal, list[PeerChoice]]:
        """Hold the request in the GPU wait queue (router/gpu_wait.py) until a GPU, here or at
        a peer, can take it; then the route and peers to use. Past its wait or the queue's
        depth: the current route (the CPU fallback) or, with `onGiveUp: reject` or
        `x-llm-require-tier: gpu`, a 503 with Retry-After. Nothing is sent to the client while
        it waits."""
        route: Route | Refusal = self.choose(ask)
        choices: list[PeerChoice] = []

        def available() -> bool:
            nonlocal route, choices
            route = self.choose(ask)
            choices = self._peer_choices(route, ask.model.name, False)
            return not _waits_for_gpu(route, choices)

        settings, m, queue = self.config.gpu_wait, self.metrics, self.gpu_queue
        if not queue.busy():
            # The first waiter: look at the sleeping GPU backends now, not after their backoff.
            for backend in self.backends:
                if backend.tier == Tier.GPU and not backend.ready:
                    backend.wake_health.set()
        waiting = (self.config.cloud,)
        m.gpu_waiting.inc(waiting)
        began = time.perf_counter()
        outcome = Outcome.LEFT
        try:
            outcome = await queue.wait(seconds, available)
        except asyncio.CancelledError:
            if not conn.shutting_down:  # the client went away while it waited
                self.metrics.requests.inc(
                    (Tier.GPU.value, self.config.cloud, ask.model.name, "499")
                )
            else:
                outcome = Outcome.SHUTDOWN
                cut = ApiError(
                    503,
                    "the router shut down while this request waited for a GPU; retry",
                    "service_unavailable",
                    "shutting_down",
                    retry_after=1,
                )
                self.metrics.requests.inc(
                    (route.wanted.value, self.config.cloud, ask.model.name, "503")
                )
                await conn.send(cut.status, cut.headers(), cut.body())
            raise
        finally:
            m.gpu_waiting.dec(waiting)
            m.gpu_waits.inc((outcome.value,))
            m.gpu_wait_seconds.observe((outcome.value,), time.perf_counter() - began)
        if outcome == Outcome.GPU:
            return route, choices
        if settings.on_give_up == GiveUp.REJECT or ask.require_gpu:
            why = {
                Outcome.TIMEOUT: f"no GPU became ready within {seconds:g} s",
                Outcome.FULL: f"{settings.max_depth} requests already wait for a GPU",
                Outcome.SHUTDOWN: "the router is shutting down",
            }[outcome]
            error = ApiError(
                503,
                f"{why}; the GPU pool is scaling up, retry later",
                "service_unavailable",
                f"gpu_wait_{outcome.value}",
                retry_after=settings.retry_after_seconds,
            )
            self.metrics.requests.inc((Tier.GPU.value, self.config.cloud, ask.model.name, "503"))
            error.counted = True
            raise error
        return route, choices

    def _count_peer_demand(self) -> bool:
        """federation (issue 16): does a request tried on peers count in the local demand?"""
        return self.config.federation is None or self.config.federation.count_peer_served_demand

    def choose(self, ask: Ask, exclude: Sequence[str] = ()) -> Route | Refusal:
        """The one place that decides where a request goes next: first, after a failure
        (`exclude` = the backends already tried), and when the backend it waited for went
        away. The tier rule, the ranking and the fallback are policy.plan_route's."""
        route = policy.plan_route(
            ask.model,
            ask.complexity,
            ask.require_gpu,
            self.backends,
            self.config.policy,
            exclude,
            allow_cpu=ask.allow_cpu,
            allow_gpu=ask.allow_gpu,
            denied_reason=ask.denied_reason,
        )
        if isinstance(route, Refusal) or route.fallback_reason is not None:
            # The tier the request wanted has nobody ready: check its backends now (at most
            # once a second each), so a pod that came up is used within about a second.
            for backend in self.backends:
                if backend.tier == route.wanted and not backend.ready:
                    backend.wanted()
        return route

    def _key_rules(self, client: ClientKey, ask: Ask) -> Ask:
        """The client key's policy (issue 31): its rate limit, its tiers and its GPU budget,
        as the Ask the policy reads, or an ApiError (429, 403)."""
        ask = ask._replace(key=client.name)
        rules = client.policy
        if rules is None:
            return ask
        name = client.name
        if rules.requests_per_minute is not None:
            wait = self.rate_limits.take(name, rules.requests_per_minute)
            if wait is not None:
                self.metrics.key_refusals.inc((name, "rate_limit"))
                raise self._key_error(
                    ApiError(
                        429,
                        f"key {name!r} is over its rate limit of "
                        f"{rules.requests_per_minute:g} requests per minute",
                        "rate_limit_error",
                        "rate_limit_exceeded",
                        retry_after=wait,
                    ),
                    ask.model,
                )
        allow_cpu, allow_gpu = "cpu" in rules.tiers, "gpu" in rules.tiers
        wants_gpu = (
            ask.require_gpu
            or not allow_cpu
            or policy.should_use_gpu(ask.model.parameters, ask.complexity, self.config.policy)
        )
        if not allow_gpu:
            if ask.require_gpu:
                self.metrics.key_refusals.inc((name, "tier_not_allowed"))
                raise self._key_error(
                    ApiError(
                        403,
                        f"key {name!r} may not use the GPU tier (its tiers: "
                        f"{', '.join(rules.tiers)}), and the request says "
                        "x-llm-require-tier: gpu",
                        "permission_error",
                        "tier_not_allowed",
                    ),
                    ask.model,
                )
            if wants_gpu:
                self.metrics.key_refusals.inc((name, "tier_not_allowed"))
            return ask._replace(allow_gpu=False)
        if self.budgets is not None and self.budgets.spent(name):
            refuse = rules.over_budget is OverBudget.REFUSE or ask.require_gpu or not allow_cpu
            if wants_gpu and refuse:
                self.metrics.key_refusals.inc((name, "gpu_budget_refused"))
                limit = rules.gpu_tokens_per_day
                raise self._key_error(
                    ApiError(
                        429,
                        f"key {name!r} has spent its GPU budget of {limit} tokens for today "
                        "(UTC); it starts again at 00:00 UTC",
                        "insufficient_quota",
                        "gpu_budget_exceeded",
                        retry_after=seconds_to_midnight(_utc_now()),
                    ),
                    ask.model,
                )
            if wants_gpu:
                self.metrics.key_refusals.inc((name, "gpu_budget_cpu"))
            return ask._replace(allow_gpu=False, denied_reason="gpu_budget_spent")
        return ask._replace(allow_cpu=allow_cpu)

    @staticmethod
    def _key_error(error: ApiError, model: ModelRoute) -> ApiError:
        error.model = model.name
        return error

    def refusal(self, route: Refusal) -> ApiError:
        error = ApiError(
            503, route.message, "service_unavailable", route.code, retry_after=self.retry_after
        )
        error.counted = True
        return error

    def count_fallback(self, route: Route) -> None:
        if route.fallback_reason:
            to = "cpu" if route.served == Served.CPU_FALLBACK else route.served.value
            self.metrics.fallbacks.inc((route.wanted.value, to, route.fallback_reason))


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _waits_for_gpu(route: Route | Refusal, choices: Sequence[PeerChoice]) -> bool:
    """Would a request that may wait for a GPU wait? When it wants the GPU tier and neither a
    local GPU backend (ready, full or not) nor a peer's GPU can take it now."""
    if route.wanted != Tier.GPU or choices:
        return False
    return not (isinstance(route, Route) and route.served == Served.GPU)


_POST_PATHS = ("/v1/chat/completions", "/v1/completions")
_GET_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/models")


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def run_router(
    config: RouterConfig, host: str, port: int, started: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, then drain (docs/router.md, "Shutdown"):

    1. at the signal, /readyz answers 503 and every answer closes its connection;
    2. new connections are still accepted for `drainWindowSeconds` (the Service's endpoints
       take a moment to drop the pod), then the listening socket closes;
    3. in-flight requests and streams finish, until `drainDeadlineSeconds` after the signal;
    4. what is left then gets a last SSE error event (streams) or a 503, and the process
       exits 0. A second signal skips the waiting.
    """
    from llmctl.router.guard import Guard
    from llmctl.router.server import run_listener

    app = RouterApp(config, load_api_keys(config.api_keys))
    await app.start()
    guard = Guard(config.limits)
    guard.on_refusal = app.count_refusal
    listener = await run_listener(
        RouterAsgi(app.handle, guard, config.limits.max_body_bytes), guard, host, port
    )
    stop = asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    log.info("llm-router listening on %s:%d with %d backends", host, port, len(app.backends))
    if started is not None:
        started.set()
    try:
        await stop.wait()
        await _drain(app, guard, listener, config.limits, hurry)
    finally:
        listener.close()
        guard.close_all()
        await app.stop()


async def _drain(
    app: RouterApp, guard: Guard, listener: asyncio.Server, limits: Limits, hurry: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    app.draining = True
    guard.draining = True
    app.gpu_queue.close()  # requests waiting for a GPU take their give-up answer now
    log.info(
        "shutting down: /readyz fails now; accepting for %g s, then in-flight requests may "
        "finish until %g s after the signal (%d in progress)",
        limits.drain_window_seconds,
        limits.drain_deadline_seconds,
        guard.busy(),
    )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limits.drain_window_seconds):
            await hurry.wait()
    listener.close()
    guard.close_idle()
    app.accepting = False
    left = limits.drain_deadline_seconds - (loop.time() - began)
    hurried = loop.create_task(hurry.wait())
    idle = loop.create_task(guard.wait_idle(left))
    await asyncio.wait((hurried, idle), return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not idle.done():
        idle.cancel()
    if guard.busy():
        cut = guard.cut()
        log.warning(
            "drain deadline: %d request(s) still in progress end with an error event or a 503",
            cut,
        )
        await guard.wait_idle(2.0)
    guard.close_all()
    # Let the last bytes reach the clients before the loop (and the process) ends.
    for _ in range(50):
        if not guard.live:
            break
        await asyncio.sleep(0.02)
    log.info("shut down after %.1f s", loop.time() - began)
