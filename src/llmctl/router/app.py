"""The router's HTTP service: the OpenAI-compatible endpoints, the policy, the proxying.

Endpoints: POST /v1/chat/completions and /v1/completions (plain and `stream: true`),
GET /v1/models, /healthz, /readyz and /metrics. Every error body has OpenAI's shape
{"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import signal
import time
from pathlib import Path

from llmctl.router import federation, policy
from llmctl.router.backends import BackendState, QueueTimeout, health_loop
from llmctl.router.httpserver import Connection, Request, serve
from llmctl.router.metrics import CONTENT_TYPE, RouterMetrics
from llmctl.router.peers import Peers
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.table import ApiKeys, RouterConfig, Tier
from llmctl.router.upstream import Response, UpstreamError

log = logging.getLogger("llmctl.router")

JSON = (b"content-type", b"application/json")
_USAGE_PROMPT = re.compile(rb'"prompt_tokens":\s*(\d+)')
_USAGE_COMPLETION = re.compile(rb'"completion_tokens":\s*(\d+)')
_TIMINGS_PROMPT = re.compile(rb'"prompt_n":\s*(\d+)')
_TIMINGS_PREDICTED = re.compile(rb'"predicted_n":\s*(\d+)')


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.param, self.retry_after = param, retry_after

    def body(self) -> bytes:
        error: dict[str, object] = {"message": self.message, "type": self.type, "code": self.code}
        if self.param is not None:
            error["param"] = self.param
        return json.dumps({"error": error}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [JSON]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers


def _invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def load_api_keys(settings: ApiKeys) -> list[bytes]:
    """Bearer keys from a file (one a line, # comments) and/or an env var (comma-separated)."""
    keys: list[str] = []
    if settings.file:
        path = Path(settings.file)
        if not path.is_file():
            raise FileNotFoundError(f"apiKeys.file {settings.file} does not exist")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    if settings.env:
        keys += [k.strip() for k in os.environ.get(settings.env, "").split(",") if k.strip()]
    if (settings.file or settings.env) and not keys:
        raise ValueError(
            "apiKeys is configured but no key was found in "
            f"{settings.file or ''} {('$' + settings.env) if settings.env else ''}"
        )
    return [k.encode() for k in keys]


# --- request validation ----------------------------------------------------------------------


def _check_type(body: dict[str, object], field: str, types: tuple[type, ...], what: str) -> None:
    value = body.get(field)
    if value is None:
        return
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise _invalid(
            f"'{field}' must be {what}, got {type(value).__name__}", field, "invalid_type"
        )


def validate_body(raw: bytes, chat: bool) -> dict[str, object]:
    """The parsed request body, or an ApiError(400) that names the field."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if model is None:
        raise _invalid("'model' is required", "model", "missing_field")
    if not isinstance(model, str):
        raise _invalid(
            f"'model' must be a string, got {type(model).__name__}", "model", "invalid_type"
        )
    if chat:
        messages = body.get("messages")
        if messages is None:
            raise _invalid("'messages' is required", "messages", "missing_field")
        if not isinstance(messages, list) or not messages:
            raise _invalid(
                "'messages' must be a non-empty array of messages", "messages", "invalid_type"
            )
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _invalid(
                    f"'messages[{i}]' must be an object", f"messages[{i}]", "invalid_type"
                )
            if not isinstance(message.get("role"), str):
                raise _invalid(
                    f"'messages[{i}].role' must be a string", f"messages[{i}].role", "invalid_type"
                )
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise _invalid(
                    f"'messages[{i}].content' must be a string or an array of content parts",
                    f"messages[{i}].content",
                    "invalid_type",
                )
    else:
        prompt = body.get("prompt")
        if prompt is None:
            raise _invalid("'prompt' is required", "prompt", "missing_field")
        if not isinstance(prompt, str | list):
            raise _invalid("'prompt' must be a string or an array", "prompt", "invalid_type")
    _check_type(body, "stream", (bool,), "a boolean")
    _check_type(body, "max_tokens", (int,), "an integer")
    _check_type(body, "temperature", (int, float), "a number")
    _check_type(body, "top_p", (int, float), "a number")
    _check_type(body, "metadata", (dict,), "an object")
    return body


# --- the service -------------------------------------------------------------------------------


class RouterApp:
    def __init__(self, config: RouterConfig, api_keys: list[bytes] | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.backends = [BackendState(b) for b in config.backends]
        self.models = policy.model_index(config)
        self.known = policy.known_model_ids(config)
        self.metrics = RouterMetrics()
        self.api_keys = api_keys or []
        self.retry_after = max(1, int(config.health_check.interval_seconds + 0.999))
        # federation (issue 16): other clouds' routers; None keeps the single-cloud behaviour.
        self.peers = (
            Peers(config.cloud, config.federation, config.limits.first_byte_timeout_seconds)
            if config.federation is not None
            else None
        )
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

    async def start(self) -> None:
        """A first health check of every backend, then the background loops."""
        timeout = min(self.config.health_check.interval_seconds, 2.0)
        await asyncio.gather(*(b.check(timeout) for b in self.backends))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(health_loop(b, self.config.health_check)) for b in self.backends
        ]
        if self.peers is not None:  # federation (issue 16)
            await self.peers.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for backend in self.backends:
            backend.pool.close()
        if self.peers is not None:  # federation (issue 16)
            await self.peers.stop()

    # --- dispatch --------------------------------------------------------------------------
    async def handle(self, request: Request, conn: Connection) -> None:
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
            if request.method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
                if federation.HOP_HEADER in request.headers:  # federation (issue 16)
                    self._authorize_peer(request)
                else:
                    self._authorize(request)
                await self._proxy(request, conn, chat=path == "/v1/chat/completions")
                return
            if request.method not in ("GET", "HEAD"):
                if path in (
                    "/v1/chat/completions",
                    "/v1/completions",
                    "/v1/models",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                ):
                    raise ApiError(
                        405,
                        f"{request.method} is not allowed on {path}",
                        "invalid_request_error",
                        "method_not_allowed",
                    )
                raise ApiError(
                    404, f"no such endpoint: {path}", "invalid_request_error", "not_found"
                )
            if path == "/healthz":
                conn.send(200, [JSON], b'{"status":"ok"}')
            elif path == "/readyz":
                self._readyz(conn)
            elif path == "/metrics":
                text = self.metrics.render()
                if self.peers is not None:  # federation (issue 16)
                    text += self.peers.metrics.render()
                conn.send(200, [(b"content-type", CONTENT_TYPE.encode())], text)
            elif path == "/v1/models":
                self._authorize(request)
                conn.send(200, [JSON], self._models_body)
            else:
                raise ApiError(
                    404, f"no such endpoint: {path}", "invalid_request_error", "not_found"
                )
        except ApiError as error:
            conn.send(error.status, error.headers(), error.body())

    def _authorize(self, request: Request) -> None:
        if not self.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare with every key, always: the time taken says nothing about which one matched.
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise ApiError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                "authentication_error",
                "invalid_api_key",
            )

    def _authorize_peer(self, request: Request) -> None:
        """federation (issue 16): a hop-marked request authenticates with the peer key only."""
        if self.peers is None or not self.peers.authorize(request.headers):
            raise ApiError(
                401,
                "a request forwarded by a peer router needs this router's peer key",
                "authentication_error",
                "invalid_peer_key",
            )

    def _readyz(self, conn: Connection) -> None:
        """Ready when every configured model can be answered: by a ready backend of its own,
        or (graceful degradation) by a ready CPU fallback backend. A GPU pool scaled to zero
        must not take the router out of its Service."""
        status: dict[str, str] = {}
        fallback_ready = any(
            b.ready and b.tier == Tier.CPU and b.model == self.config.policy.fallback_model
            for b in self.backends
        )
        for model in self.config.models:
            own = any(b.ready and b.model == model.name for b in self.backends)
            status[model.name] = "ready" if own else "fallback" if fallback_ready else "unavailable"
        ok = all(s != "unavailable" for s in status.values())
        body = json.dumps(
            {
                "status": "ready" if ok else "not ready",
                "models": status,
                "backends": {b.name: b.ready for b in self.backends},
                # federation (issue 16): what peers read, per tier and model, with free slots.
                "tiers": federation.local_capacity(self.backends),
            }
        ).encode()
        conn.send(200 if ok else 503, [JSON], body)

    # --- proxying --------------------------------------------------------------------------
    async def _proxy(self, request: Request, conn: Connection, chat: bool) -> None:
        started = time.perf_counter()
        body = validate_body(request.body, chat)
        name = body["model"]
        assert isinstance(name, str)
        model = self.models.get(name)
        if model is None:
            raise ApiError(
                404,
                f"the model {name!r} does not exist; known models: {', '.join(self.known)}",
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
        required = request.headers.get("x-llm-require-tier", "").strip().lower()
        if required not in ("", "gpu"):
            raise _invalid("x-llm-require-tier accepts only 'gpu'", "x-llm-require-tier")
        route = policy.plan_route(
            model, complexity.strip().lower(), required == "gpu", self.backends, self.config.policy
        )
        # federation (issue 16): the peers to try before the local route, best first.
        hop = federation.HOP_HEADER in request.headers
        choices = (
            federation.peer_choices(route, model.name, self.peers.views(), hop=hop)
            if self.peers is not None
            else []
        )
        demand = (route.wanted.value, self.config.cloud)
        counted = not choices or self._count_peer_demand()
        if counted:
            self.metrics.tier_demand.inc(demand)
            self.metrics.tier_requests.inc(demand)
        try:
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
                # The peers took their timeouts: decide locally on what is ready now.
                route = policy.plan_route(
                    model, complexity.strip().lower(), required == "gpu", self.backends,
                    self.config.policy,
                )  # fmt: skip
            if isinstance(route, Refusal):
                self.metrics.requests.inc(
                    (route.wanted.value, self.config.cloud, model.name, "503")
                )
                raise ApiError(
                    503,
                    route.message,
                    "service_unavailable",
                    route.code,
                    retry_after=self.retry_after,
                )
            if route.fallback_reason:
                to = "cpu" if route.served == Served.CPU_FALLBACK else route.served.value
                self.metrics.fallbacks.inc((route.wanted.value, to, route.fallback_reason))
            await self._forward(
                request, conn, route, model.name, body.get("stream") is True, started
            )
        finally:
            if counted:
                self.metrics.tier_demand.dec(demand)

    def _count_peer_demand(self) -> bool:
        """federation (issue 16): does a request tried on peers count in the local demand?"""
        return self.config.federation is None or self.config.federation.count_peer_served_demand

    async def _forward(
        self,
        request: Request,
        conn: Connection,
        route: Route,
        model: str,
        stream: bool,
        started: float,
    ) -> None:
        served = route.served.value
        tried: list[str] = []
        backend: BackendState = route.backends[0]  # type: ignore[assignment]
        code = "499"  # until an answer goes out: the client went away first
        response: Response | None = None
        holding = False
        try:
            while True:
                tried.append(backend.name)
                try:
                    await backend.acquire(self.limits.queue_timeout_seconds)
                except QueueTimeout:
                    code = "429"
                    raise ApiError(
                        429,
                        f"all {backend.slots} slots of {backend.name} stayed busy for "
                        f"{self.limits.queue_timeout_seconds:g} s",
                        "rate_limit_error",
                        "queue_timeout",
                        retry_after=self.retry_after,
                    ) from None
                holding = True
                retry_reason = None
                try:
                    response = await backend.pool.request(
                        b"POST",
                        request.path.encode(),
                        request.body,
                        connect_timeout=self.limits.connect_timeout_seconds,
                        first_byte_timeout=self.limits.first_byte_timeout_seconds,
                        idle_timeout=self.limits.idle_timeout_seconds,
                    )
                except UpstreamError as exc:
                    if exc.kind in ("connect", "reset"):
                        backend.mark_failed(str(exc))
                    if exc.kind == "timeout":
                        code = "504"
                        raise ApiError(
                            504, f"{backend.name}: {exc}", "timeout", "backend_timeout"
                        ) from None
                    retry_reason = str(exc)
                if response is not None and response.status >= 500:
                    retry_reason = f"{backend.name} answered {response.status}"
                if retry_reason is not None:
                    others = policy.retry_candidates(route, tried, self.backends)
                    if len(tried) < 2 and others:
                        log.warning("retrying on %s: %s", others[0].name, retry_reason)
                        if response is not None:
                            response.close()
                            response = None
                        backend.release()
                        holding = False
                        backend = others[0]  # type: ignore[assignment]
                        continue
                    if response is None:
                        code = "502"
                        raise ApiError(
                            502,
                            f"{backend.name}: {retry_reason}",
                            "upstream_error",
                            "backend_unavailable",
                        )
                break
            assert response is not None
            headers = [
                (b"content-type", response.header(b"content-type") or b"application/json"),
                (b"x-llm-tier", served.encode()),
                (b"x-llm-backend", backend.name.encode()),
                (b"x-llm-model", backend.model.encode()),
            ]
            content_type = headers[0][1]
            if stream and content_type.startswith(b"text/event-stream"):
                code = str(response.status)
                await self._relay_stream(conn, response, headers, route, started)
            else:
                payload = await self._read_body(response, backend)
                self.metrics.ttft.observe((route.served.value,), time.perf_counter() - started)
                code = str(response.status)
                conn.send(response.status, headers, payload)
                self._count_tokens(served, payload)
        finally:
            if response is not None:
                response.close()
            if holding:
                backend.release()
            elapsed = time.perf_counter() - started
            tier = "cpu" if route.served == Served.CPU_FALLBACK else route.served.value
            m = self.metrics
            m.requests.inc((served, backend.cloud, model, code))
            m.duration.observe((served,), elapsed)
            if holding and backend.config.hourly_cost_usd:
                m.cost.inc(
                    (tier, backend.cloud),
                    backend.config.hourly_cost_usd * elapsed / 3600 / backend.slots,
                )

    async def _read_body(self, response: Response, backend: BackendState) -> bytes:
        try:
            return await response.read()
        except UpstreamError as exc:
            raise ApiError(
                502 if exc.kind != "timeout" else 504,
                f"{backend.name}: {exc}",
                "upstream_error",
                "backend_error",
            ) from None

    async def _relay_stream(
        self,
        conn: Connection,
        response: Response,
        headers: list[tuple[bytes, bytes]],
        route: Route,
        started: float,
    ) -> None:
        """Pass SSE through chunk by chunk; a failure after the first byte ends the stream with
        an error event (never a retry: the client has already seen part of an answer)."""
        conn.start_stream(response.status, headers)
        first = True
        tail = b"\n\n"
        try:
            while (chunk := await response.next_chunk()) is not None:
                if first:
                    self.metrics.ttft.observe((route.served.value,), time.perf_counter() - started)
                    first = False
                if b'"usage"' in chunk or b'"timings"' in chunk:
                    self._count_tokens(route.served.value, chunk)
                tail = chunk[-2:]
                await conn.write_chunk(chunk)
        except UpstreamError as exc:
            event = json.dumps(
                {
                    "error": {
                        "message": f"the backend failed mid-stream: {exc}",
                        "type": "upstream_error",
                        "code": "stream_broken",
                    }
                }
            )
            sep = b"" if tail == b"\n\n" else b"\n\n"
            await conn.write_chunk(sep + b"data: " + event.encode() + b"\n\n")
        conn.end_stream()

    def _count_tokens(self, served: str, payload: bytes) -> None:
        prompt = _USAGE_PROMPT.search(payload) or _TIMINGS_PROMPT.search(payload)
        completion = _USAGE_COMPLETION.search(payload) or _TIMINGS_PREDICTED.search(payload)
        tier = "cpu" if served == Served.CPU_FALLBACK else served
        if prompt:
            self.metrics.tokens.inc((tier, "prompt"), int(prompt.group(1)))
        if completion:
            self.metrics.tokens.inc((tier, "completion"), int(completion.group(1)))


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
    """Serve until SIGTERM/SIGINT: the first health checks, then requests."""
    app = RouterApp(config, load_api_keys(config.api_keys))
    await app.start()
    server = await serve(app.handle, host, port, config.limits.max_body_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info("llm-router listening on %s:%d with %d backends", host, port, len(app.backends))
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        server.close()
        await app.stop()
