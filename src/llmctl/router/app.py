"""The router's HTTP service: the OpenAI-compatible endpoints, the policy, the proxying.

Endpoints: POST /v1/chat/completions and /v1/completions (plain and `stream: true`),
GET /v1/models, /healthz, /readyz and /metrics. Every error body has OpenAI's shape
{"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from llmctl.router import federation, policy
from llmctl.router.asgi import Reply, Request, RouterAsgi
from llmctl.router.backends import BackendGone, BackendState, QueueTimeout, health_loop
from llmctl.router.containment import Quarantine, body_hash
from llmctl.router.keys import bearer_matches, read_keys
from llmctl.router.metrics import CONTENT_TYPE, RouterMetrics
from llmctl.router.peers import Peers
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.table import ApiKeys, Limits, ModelRoute, RouterConfig, Tier
from llmctl.router.upstream import Response, UpstreamError, error_event, stop_loops

if TYPE_CHECKING:
    from llmctl.router.server import Guard

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
        self.allow: bytes | None = None  # the Allow header of a 405
        self.model: str | None = None  # the configured model, when known (metrics label)
        self.counted = False  # already in llm_router_requests_total

    def body(self) -> bytes:
        error: dict[str, object] = {"message": self.message, "type": self.type, "code": self.code}
        if self.param is not None:
            error["param"] = self.param
        return json.dumps({"error": error}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [JSON]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        if self.allow is not None:
            headers.append((b"allow", self.allow))
        return headers


def _invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def load_api_keys(settings: ApiKeys) -> list[bytes]:
    """Client bearer keys, as `apiKeys` configures them (router/keys.py)."""
    keys = read_keys(settings.file, settings.env, "apiKeys")
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


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # built once: loads() builds one a call
# A \uD800-\uDFFF escape (one half of a surrogate pair): only then can a parsed string hold a
# lone surrogate, which strict UTF-8 (and llama-server's parser) cannot represent.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: object) -> bool:
    """Whether any string in the parsed body holds a lone surrogate (iterative: no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(raw: bytes) -> object:
    """Strict JSON as llama-server reads it: UTF-8 only, no NaN/Infinity, no lone surrogates,
    bounded nesting. Every violation is an ApiError(400), never a 500 or a traceback."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(
            f"the request body must be UTF-8 encoded JSON: {exc.reason} at byte {exc.start}",
            None,
            "invalid_encoding",
        ) from None
    try:
        body = _DECODER.decode(text)
    except RecursionError:
        raise _invalid("the request body is nested too deeply", None, "invalid_json") from None
    except ValueError as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if _SURROGATE_ESCAPE.search(raw) and _lone_surrogate(body):
        raise _invalid(
            "the request body holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without "
            "its pair)",
            None,
            "invalid_json",
        )
    return body


def _check_content(i: int, message: dict[str, object]) -> None:
    content = message.get("content")
    where = f"messages[{i}].content"
    if content is None:
        if message.get("role") in ("assistant",):
            return  # an assistant turn that only called tools
        raise _invalid(f"'{where}' is required", where, "missing_field")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(
            f"'{where}' must be a string or an array of content parts", where, "invalid_type"
        )
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _invalid(f"'{here}' must be an object with a string 'type'", here, "invalid_type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _invalid(f"'{here}.text' must be a string", f"{here}.text", "invalid_type")


def _check_tools(body: dict[str, object]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array of tools", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _invalid(
                f"'{where}' must be an object with type 'function'", where, "invalid_type"
            )
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(
                f"'{where}.function' must be an object with a string 'name'",
                f"{where}.function",
                "invalid_type",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _invalid(
                f"'{where}.function.parameters' must be an object",
                f"{where}.function.parameters",
                "invalid_type",
            )
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise _invalid("'tool_choice' must be a string or an object", "tool_choice", "invalid_type")


def validate_body(raw: bytes, chat: bool) -> dict[str, object]:
    """The parsed request body, or an ApiError(400) that names the field."""
    body = parse_json(raw)
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
            _check_content(i, message)
        _check_tools(body)
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
        await stop_loops(self._tasks, (b.pool for b in self.backends))
        if self.peers is not None:  # federation (issue 16)
            await self.peers.stop()

    # --- dispatch --------------------------------------------------------------------------
    async def handle(self, request: Request, conn: Reply) -> None:
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
                    raise _not_allowed(request.method, path, b"POST")
                if federation.HOP_HEADER in request.headers:  # federation (issue 16)
                    self._authorize_peer(request)
                else:
                    self._authorize(request)
                if not self.accepting:
                    raise ApiError(
                        503,
                        "the router is shutting down; retry (another replica will answer)",
                        "service_unavailable",
                        "shutting_down",
                        retry_after=1,
                    )
                await self._proxy(request, conn, chat=path == "/v1/chat/completions")
                return
            if path not in _GET_PATHS:
                shown = path if len(path) <= 200 else path[:200] + "..."
                raise ApiError(
                    404, f"no such endpoint: {shown}", "invalid_request_error", "not_found"
                )
            if request.method not in ("GET", "HEAD"):
                raise _not_allowed(request.method, path, b"GET, HEAD")
            if path == "/healthz":
                await conn.send(200, [JSON], b'{"status":"ok"}')
            elif path == "/readyz":
                await self._readyz(conn)
            elif path == "/metrics":
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

    def _authorize(self, request: Request) -> None:
        if self.api_keys and not bearer_matches(request.headers, self.api_keys):
            raise _unauthorized(
                "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_api_key"
            )

    def _authorize_peer(self, request: Request) -> None:
        """federation (issue 16): a hop-marked request authenticates with the peer key only."""
        if self.peers is None or not self.peers.authorize(request.headers):
            raise _unauthorized(
                "a request forwarded by a peer router needs this router's peer key",
                "invalid_peer_key",
            )

    async def _readyz(self, conn: Reply) -> None:
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
    async def _proxy(self, request: Request, conn: Reply, chat: bool) -> None:
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
        required = request.headers.get("x-llm-require-tier", "").strip().lower()
        if required not in ("", "gpu"):
            error = _invalid("x-llm-require-tier accepts only 'gpu'", "x-llm-require-tier")
            error.model = model.name
            raise error
        ask = Ask(model, complexity.strip().lower(), required == "gpu")
        route = self.choose(ask)
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
                route = self.choose(
                    ask
                )  # the peers took their timeouts: decide on what is ready now
            if isinstance(route, Refusal):
                self.metrics.requests.inc(
                    (route.wanted.value, self.config.cloud, model.name, "503")
                )
                raise self._refusal(route)
            self._count_fallback(route)
            stream = body.get("stream") is True
            upstream_body = request.body
            assemble = not stream and self._assemble_from_stream(body)
            if assemble:
                upstream_body = _as_streamed(request.body)
            await self._forward(request, conn, ask, route, stream, started, upstream_body, assemble)
        finally:
            if counted:
                self.metrics.tier_demand.dec(demand)

    def _count_peer_demand(self) -> bool:
        """federation (issue 16): does a request tried on peers count in the local demand?"""
        return self.config.federation is None or self.config.federation.count_peer_served_demand

    def choose(self, ask: Ask, exclude: Sequence[str] = ()) -> Route | Refusal:
        """The one place that decides where a request goes next: first, after a failure
        (`exclude` = the backends already tried), and when the backend it waited for went
        away. The tier rule, the ranking and the fallback are policy.plan_route's."""
        return policy.plan_route(
            ask.model, ask.complexity, ask.require_gpu, self.backends, self.config.policy, exclude
        )

    def _refusal(self, route: Refusal) -> ApiError:
        error = ApiError(
            503, route.message, "service_unavailable", route.code, retry_after=self.retry_after
        )
        error.counted = True
        return error

    def _count_fallback(self, route: Route) -> None:
        if route.fallback_reason:
            to = "cpu" if route.served == Served.CPU_FALLBACK else route.served.value
            self.metrics.fallbacks.inc((route.wanted.value, to, route.fallback_reason))

    async def _forward(
        self,
        request: Request,
        conn: Reply,
        ask: Ask,
        route: Route,
        stream: bool,
        started: float,
        upstream_body: bytes,
        assemble: bool = False,
    ) -> None:
        """Send the request to the route's best backend and relay the answer.

        What is retried (once, on another backend chosen by `choose`): a connect error, and
        a reset before any response byte when the backend is still alive afterwards. A backend
        that dies on a request (reset, then no answer to a health check) marks the request as
        poison: it is not sent anywhere else, and the client gets 502 `backend_crashed`. A
        request queued on a backend that is marked not ready moves to another backend at
        once. Nothing else is retried: a 5xx answer is the backend's verdict on the request."""
        loop = asyncio.get_running_loop()
        queue_deadline = loop.time() + self.limits.queue_timeout_seconds
        tried: list[str] = []
        retried = False
        backend: BackendState = route.backends[0]  # type: ignore[assignment]
        code = "499"  # until an answer goes out: the client went away first
        response: Response | None = None
        holding = False
        try:
            while True:
                try:
                    await backend.acquire(max(queue_deadline - loop.time(), 0.0))
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
                except BackendGone:
                    # Not a retry: the request has not been sent anywhere yet.
                    route, backend = self._reroute(ask, tried, f"{backend.name} went away")
                    continue
                holding = True
                tried.append(backend.name)
                reason = None
                sent_at = time.monotonic()
                try:
                    response = await backend.pool.request(
                        b"POST",
                        request.path.encode(),
                        upstream_body,
                        connect_timeout=self.limits.connect_timeout_seconds,
                        first_byte_timeout=self.limits.first_byte_timeout_seconds,
                        idle_timeout=self.limits.idle_timeout_seconds,
                    )
                except UpstreamError as exc:
                    # The slot is kept until the backend's state is known: released earlier,
                    # it would go to a queued request that then fails on the same backend.
                    if exc.kind == "timeout":
                        code = "504"
                        raise ApiError(
                            504, f"{backend.name}: {exc}", "timeout", "backend_timeout"
                        ) from None
                    if exc.kind == "connect":
                        backend.mark_failed(str(exc))
                    elif not await backend.recheck(self.limits.connect_timeout_seconds, sent_at):
                        backend.mark_failed(f"it stopped answering after a reset: {exc}")
                        self.quarantine.hold(body_hash(request.body))
                        code = "502"
                        log.warning(
                            "%s crashed or went away while processing a request; the request "
                            "is not retried elsewhere: it may be what crashed it",
                            backend.name,
                        )
                        raise ApiError(
                            502,
                            f"{backend.name} closed the connection while processing this "
                            "request and then stopped answering health checks. The request is "
                            "not retried on another backend, because it may be what crashed "
                            "this one.",
                            "upstream_error",
                            "backend_crashed",
                        ) from None
                    reason = str(exc)
                    # A pooled connection that reset was already re-sent on a fresh one: that
                    # was the one retry.
                    retried = retried or exc.retried
                if response is not None and response.status == 503:
                    # llama-server says it did not take the request (loading, overloaded).
                    reason = f"{backend.name} answered 503"
                if reason is None:
                    break
                if retried:
                    if response is not None:
                        break  # the second backend's own answer goes to the client
                    code = "502"
                    raise ApiError(
                        502, f"{backend.name}: {reason}", "upstream_error", "backend_unavailable"
                    )
                retried = True
                nxt = self.choose(ask, tried)
                if isinstance(nxt, Refusal):
                    if response is not None:
                        break
                    code = "502"
                    raise ApiError(
                        502, f"{backend.name}: {reason}", "upstream_error", "backend_unavailable"
                    )
                log.warning("retrying on %s: %s", nxt.backends[0].name, reason)
                if response is not None:
                    response.close()
                    response = None
                if holding:
                    backend.release()
                    holding = False
                route, backend = nxt, nxt.backends[0]  # type: ignore[assignment]
                self._count_fallback(route)
            assert response is not None
            served = route.served.value
            headers = [
                (b"content-type", response.header(b"content-type") or b"application/json"),
                (b"x-llm-tier", served.encode()),
                (b"x-llm-backend", backend.name.encode()),
                (b"x-llm-model", backend.model.encode()),
            ]
            content_type = headers[0][1]
            if stream and content_type.startswith(b"text/event-stream"):
                await self._relay_stream(conn, response, headers, route, started)
                code = str(response.status)
            else:
                if assemble and content_type.startswith(b"text/event-stream"):
                    payload = await self._assemble(response, backend, request.path)
                    headers[0] = JSON
                else:
                    payload = await self._read_body(response, backend)
                self.metrics.ttft.observe((route.served.value,), time.perf_counter() - started)
                status = response.status
                if status == 500 and _CLIENT_MISTAKE.search(payload):
                    status, payload = 400, _as_client_error(payload)
                code = str(status)
                await conn.send(status, headers, payload)
                self._count_tokens(served, payload)
        except ApiError as error:
            error.counted = True
            code = str(error.status)
            raise
        except asyncio.CancelledError:
            if conn.shutting_down and not conn.closed:
                code = "503"  # cut at the drain deadline
                if not conn.responded:
                    cut = ApiError(
                        503,
                        "the router shut down before this request was answered; retry",
                        "service_unavailable",
                        "shutting_down",
                        retry_after=1,
                    )
                    await conn.send(cut.status, cut.headers(), cut.body())
            else:
                code = "499"  # the client went away
            raise
        finally:
            if response is not None:
                response.close()
            if holding:
                backend.release()
            elapsed = time.perf_counter() - started
            tier = "cpu" if route.served == Served.CPU_FALLBACK else route.served.value
            m = self.metrics
            m.requests.inc((route.served.value, backend.cloud, ask.model.name, code))
            m.duration.observe((route.served.value,), elapsed)
            if holding and backend.config.hourly_cost_usd:
                m.cost.inc(
                    (tier, backend.cloud),
                    backend.config.hourly_cost_usd * elapsed / 3600 / backend.slots,
                )

    def _reroute(self, ask: Ask, tried: list[str], why: str) -> tuple[Route, BackendState]:
        nxt = self.choose(ask, tried)
        if isinstance(nxt, Refusal):
            raise self._refusal(nxt)
        log.info("re-routing a queued request to %s: %s", nxt.backends[0].name, why)
        self._count_fallback(nxt)
        return nxt, nxt.backends[0]  # type: ignore[return-value]

    def _assemble_from_stream(self, body: dict[str, object]) -> bool:
        """Whether a non-streamed request is asked of the backend as a stream (and answered
        as one JSON object): llama-server stops generating a stream as soon as its client
        goes away, but keeps generating a non-streamed answer to its end. Only long
        generations (no max_tokens, or at least limits.streamUpstreamFromMaxTokens), and only
        the shapes rebuilt faithfully: one choice, no logprobs, no tools."""
        threshold = self.limits.stream_upstream_from_max_tokens
        if threshold <= 0:
            return False
        max_tokens = body.get("max_tokens", body.get("n_predict"))
        if isinstance(max_tokens, int) and 0 <= max_tokens < threshold:
            return False
        return not any(
            body.get(field) not in (None, False, 1)
            for field in ("n", "logprobs", "top_logprobs", "tools", "functions", "n_probs")
        ) and not isinstance(body.get("stream_options"), dict)

    async def _assemble(self, response: Response, backend: BackendState, path: str) -> bytes:
        """The JSON answer rebuilt from llama-server's events (see _assemble_from_stream)."""
        chat = path == "/v1/chat/completions"
        first: dict[str, object] = {}
        texts: list[str] = []
        reasoning: list[str] = []
        finish: object = None
        usage: object = None
        timings: object = None
        buffer = b""
        try:
            while (chunk := await response.next_chunk()) is not None:
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    data = event.strip()
                    if not data.startswith(b"data:"):
                        continue
                    data = data[5:].strip()
                    if data == b"[DONE]":
                        continue
                    obj = json.loads(data)
                    if "error" in obj:
                        text = str(obj["error"].get("message", obj["error"]))
                        if _CLIENT_MISTAKE.search(text.encode()):
                            raise ApiError(
                                400,
                                f"the backend cannot process this request: {text[:1000]}",
                                "invalid_request_error",
                                "unsupported_request",
                            )
                        raise ApiError(
                            500, f"{backend.name}: {text}", "server_error", "backend_error"
                        )
                    if not first:
                        first = obj
                    usage = obj.get("usage") or usage
                    timings = obj.get("timings") or timings
                    for part in obj.get("choices") or ():
                        if chat:
                            delta = part.get("delta") or {}
                            texts.append(delta.get("content") or "")
                            reasoning.append(delta.get("reasoning_content") or "")
                        else:
                            texts.append(part.get("text") or "")
                        finish = part.get("finish_reason") or finish
        except UpstreamError as exc:
            raise _broken_body(backend, exc) from None
        except (ValueError, AttributeError, TypeError) as exc:
            raise ApiError(
                502, f"{backend.name}: unreadable event: {exc}", "upstream_error", "backend_error"
            ) from None
        choice: dict[str, object] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            message: dict[str, object] = {"role": "assistant", "content": "".join(texts)}
            if any(reasoning):
                message["reasoning_content"] = "".join(reasoning)
            choice["message"] = message
        else:
            choice["text"] = "".join(texts)
        answer: dict[str, object] = {
            "id": first.get("id"),
            "object": "chat.completion" if chat else "text_completion",
            "created": first.get("created"),
            "model": first.get("model"),
            "system_fingerprint": first.get("system_fingerprint"),
            "choices": [choice],
            "usage": usage,
        }
        if timings is not None:
            answer["timings"] = timings
        return json.dumps(answer, ensure_ascii=False).encode()

    async def _read_body(self, response: Response, backend: BackendState) -> bytes:
        try:
            return await response.read()
        except UpstreamError as exc:
            raise _broken_body(backend, exc) from None

    async def _relay_stream(
        self,
        conn: Reply,
        response: Response,
        headers: list[tuple[bytes, bytes]],
        route: Route,
        started: float,
    ) -> None:
        """Pass SSE through chunk by chunk; a failure after the first byte ends the stream with
        an error event (never a retry: the client has already seen part of an answer), and so
        does the drain deadline at shutdown: a stream is never cut silently."""
        await conn.start_stream(response.status, headers)
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
            await conn.write_chunk(
                error_event(tail, f"the backend failed mid-stream: {exc}", "stream_broken")
            )
        except asyncio.CancelledError:
            if conn.shutting_down:
                await conn.write_chunk(
                    error_event(
                        tail,
                        "the router shut down before this stream ended (drain deadline)",
                        "shutting_down",
                    )
                )
                await conn.end_stream()
            raise
        await conn.end_stream()

    def _count_tokens(self, served: str, payload: bytes) -> None:
        prompt = _USAGE_PROMPT.search(payload) or _TIMINGS_PROMPT.search(payload)
        completion = _USAGE_COMPLETION.search(payload) or _TIMINGS_PREDICTED.search(payload)
        tier = "cpu" if served == Served.CPU_FALLBACK else served
        if prompt:
            self.metrics.tokens.inc((tier, "prompt"), int(prompt.group(1)))
        if completion:
            self.metrics.tokens.inc((tier, "completion"), int(completion.group(1)))


class Ask(NamedTuple):
    """What a request asks for, as the policy reads it."""

    model: ModelRoute
    complexity: str
    require_gpu: bool


_POST_PATHS = ("/v1/chat/completions", "/v1/completions")
_GET_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/models")

# llama-server answers 500 to requests it cannot parse or does not support (a client mistake
# the router's validation cannot foresee: image parts for a text model, odd message shapes).
_CLIENT_MISTAKE = re.compile(
    rb"parse_error|Failed to parse|[Ii]nvalid |is not supported|not supported|type must be"
    rb"|must be (?:a|an) |\[json\.exception|unsupported|Unsupported|Expected "
)


def _as_client_error(payload: bytes) -> bytes:
    """llama-server's 500 body re-shaped as OpenAI's 400 invalid_request_error."""
    message = payload.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        message = str(json.loads(payload)["error"]["message"])
    return json.dumps(
        {
            "error": {
                "message": f"the backend cannot process this request: {message[:1000]}",
                "type": "invalid_request_error",
                "code": "unsupported_request",
            }
        }
    ).encode()


def _as_streamed(raw: bytes) -> bytes:
    """The body with stream (and usage in the last event) turned on. Keys added last win in
    llama-server's JSON parser, and the body stays byte for byte what the client sent."""
    return raw.rstrip()[:-1] + b',"stream":true,"stream_options":{"include_usage":true}}'


def _broken_body(backend: BackendState, exc: UpstreamError) -> ApiError:
    """A backend's answer broke off before the client saw any of it."""
    return ApiError(
        502 if exc.kind != "timeout" else 504,
        f"{backend.name}: {exc}",
        "upstream_error",
        "backend_error",
    )


def _unauthorized(message: str, code: str) -> ApiError:
    return ApiError(401, message, "authentication_error", code)


def _not_allowed(method: str, path: str, allow: bytes) -> ApiError:
    error = ApiError(
        405,
        f"{method} is not allowed on {path}",
        "invalid_request_error",
        "method_not_allowed",
    )
    error.allow = allow
    return error


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
    from llmctl.router.server import Guard, run_listener

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
