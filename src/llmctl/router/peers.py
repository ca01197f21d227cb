"""Peer routers at run time (issue 16): readiness from their /readyz, an EWMA of their time to
first byte, the peer key, and forwarding a request to them with the hop marker.

The choice of which peers to try is `federation.py`'s (pure); this module does the I/O. It uses
the app's HTTP pieces only through `Request` (method, path, headers, body) and relay.Sink
(the client's answer), and relays streams with the local path's relay (relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from llmctl.router.containment import Quarantine, body_hash
from llmctl.router.federation import (
    HOP_HEADER,
    PEER_HEADER,
    PeerChoice,
    PeerView,
    TierCapacity,
    parse_capacity,
)
from llmctl.router.keys import bearer_matches, read_keys
from llmctl.router.metrics import TTFT_BUCKETS, Counter, Gauge, Histogram, RouterMetrics
from llmctl.router.peer_config import Federation, Peer, PeerKey
from llmctl.router.relay import Sink, relay_stream
from llmctl.router.table import Tier
from llmctl.router.upstream import Pool, Response, UpstreamError, stop_loops

log = logging.getLogger("llmctl.router")

# Outcomes of a request sent to a peer (llm_router_peer_requests_total{outcome}).
OK = "ok"
CONNECT = "connect_error"
TIMEOUT = "timeout"
RESET = "reset"
SERVER_ERROR = "5xx"
BUSY = "busy"  # 429 or 503: the peer's tier filled up or went away since its last report
REFUSED = "unauthorized"  # 401/403: the peer key is wrong on one side
STREAM_BROKEN = "stream_broken"
CLIENT_GONE = "client_gone"
# A peer that refuses our key is logged at most this often (review 2026-12-06 N9).
REFUSAL_LOG_SECONDS = 60.0
POISON = "backend_crashed"  # the peer's backend died on the request: final (containment.py)
JSON = (b"content-type", b"application/json")


async def _short_body(response: Response) -> bytes:
    """An error answer's body (up to 64 KB), or nothing if it breaks off."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < 65536 and (chunk := await response.next_chunk()) is not None:
            parts.append(chunk)
            size += len(chunk)
    except UpstreamError:
        return b""
    return b"".join(parts)


class PeerRequest(Protocol):
    """What forwarding needs of the client request (asgi.Request provides it)."""

    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def body(self) -> bytes: ...


def load_peer_keys(settings: PeerKey) -> list[bytes]:
    """The federation's peer keys, as `federation.peerKey` configures them (router/keys.py)."""
    keys = read_keys(settings.file, settings.env, "federation.peerKey")
    if not keys:
        raise ValueError(
            "federation needs a peer key: none found in "
            f"{settings.file or '(no file)'} {('$' + settings.env) if settings.env else ''}".strip()
        )
    return [k.encode() for k in keys]


class PeerPool(Pool):
    """The backend connection pool, with TLS for https:// peers (public Ingress/Gateway URLs):
    Pool connects through `ssl_context` once it is set."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        super().__init__(urlunsplit(("http", parts.netloc, parts.path, "", "")))
        if self.tls:
            self.port = parts.port or 443
            self.ssl_context = ssl_context or ssl.create_default_context()


class PeerMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "llm_router_peer_requests_total",
            "Requests this router forwarded to a peer router, by peer and outcome.",
            ("peer", "outcome"),
        )
        self.latency = Histogram(
            "llm_router_peer_latency_seconds",
            "Time from sending a request to a peer router to its response headers.",
            ("peer",),
            TTFT_BUCKETS,
        )
        self.ready = Gauge(
            "llm_router_peer_ready",
            "1 while the peer's last /readyz read succeeded, else 0.",
            ("peer",),
        )
        self.received = Counter(
            "llm_router_peer_requests_received_total",
            "Requests received from peer routers (hop-marked), by the forwarding cloud.",
            ("from_cloud",),
        )

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in (self.requests, self.latency, self.ready, self.received):
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode()


class PeerState:
    """One peer router: its last /readyz report, our requests in flight to it, its latency."""

    def __init__(self, config: Peer, ssl_context: ssl.SSLContext | None, alpha: float) -> None:
        self.config = config
        self.name = config.name
        self.cloud = config.cloud
        self.cost_weight = config.cost_weight
        self.pool = PeerPool(config.url, ssl_context)
        self.alpha = alpha
        self.ready = False
        self.models: frozenset[str] = frozenset()
        self.tiers: dict[Tier, tuple[TierCapacity, ...]] = {}
        self.ttfb: float | None = None
        self.in_flight = 0
        self.in_flight_at_report = 0
        self.quarantine_report: object = None  # its /readyz `quarantine` (containment.py)
        self.wake = asyncio.Event()
        # Resolved when the peer is marked not ready: requests still waiting for its answer
        # move on to the next choice (review 2026-12-06 N4), instead of the first-byte timeout.
        self._gone: asyncio.Future[None] | None = None
        self.refusals = 0  # 401/403 answers to our peer key since the last log line
        self.refusal_logged_at = -REFUSAL_LOG_SECONDS

    def view(self) -> PeerView:
        # The report is up to one poll old: requests we sent since then take free slots too.
        sent_since = max(self.in_flight - self.in_flight_at_report, 0)
        tiers = {
            tier: tuple(TierCapacity(c.model, c.slots, c.free - sent_since) for c in caps)
            for tier, caps in self.tiers.items()
        }
        return PeerView(self.name, self.ready, self.cost_weight, self.ttfb, self.models, tiers)

    def observe_ttfb(self, seconds: float) -> None:
        self.ttfb = (
            seconds if self.ttfb is None else (self.alpha * seconds + (1 - self.alpha) * self.ttfb)
        )

    def gone(self) -> asyncio.Future[None]:
        """A future resolved the next time the peer is marked not ready."""
        if self._gone is None or self._gone.done():
            self._gone = asyncio.get_running_loop().create_future()
        return self._gone

    def _not_ready(self) -> None:
        self.ready = False
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def mark_failed(self, reason: str) -> None:
        if self.ready:
            log.warning("peer %s marked not ready: %s", self.name, reason)
        self._not_ready()
        self.wake.set()

    def refused_key(self, status: int) -> None:
        """A 401/403 to our peer key: logged once a minute with the count since (counted in
        llm_router_peer_requests_total{outcome="unauthorized"} each time)."""
        self.refusals += 1
        now = time.monotonic()
        if now - self.refusal_logged_at >= REFUSAL_LOG_SECONDS:
            log.error(
                "peer %s refused our peer key (%d), %d time(s) since the last report: check "
                "both Secrets",
                self.name,
                status,
                self.refusals,
            )
            self.refusal_logged_at = now
            self.refusals = 0

    async def check(self, timeout: float) -> bool:
        """GET /readyz (200 or 503: both carry the tiers); one failure marks it not ready."""
        try:
            response = await self.pool.get(b"/readyz", timeout)
            body = await response.read()
            if response.status not in (200, 503):
                raise ValueError(f"/readyz answered {response.status}")
            report = json.loads(body)
            models, tiers = parse_capacity(report)
        except (UpstreamError, ValueError) as exc:
            if self.ready:
                log.warning("peer %s is not ready: %s", self.name, exc)
            self._not_ready()
            return False
        if not self.ready:
            log.info("peer %s is ready", self.name)
        self.models, self.tiers = models, tiers
        self.quarantine_report = report.get("quarantine")
        self.in_flight_at_report = self.in_flight
        self.ready = True
        return True


class Peers:
    """Every peer of this router, their polling, and forwarding requests to them."""

    def __init__(
        self,
        cloud: str,
        config: Federation,
        default_first_byte_timeout: float,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.cloud = cloud
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        self.config = config
        self.keys = load_peer_keys(config.peer_key)
        context = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else None
        self.peers = [PeerState(p, context, config.ewma_alpha) for p in config.peers]
        self.metrics = PeerMetrics()
        self.first_byte_timeout = config.first_byte_timeout_seconds or default_first_byte_timeout
        self._tasks: list[asyncio.Task[None]] = []
        # Called after each read of a peer's /readyz (the GPU wait queue looks again, issue 31).
        self.on_checked: Callable[[], None] | None = None
        for peer in self.peers:
            self.metrics.ready.inc((peer.name,), 0)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        timeout = min(self.config.readiness_interval_seconds, 2.0)
        await asyncio.gather(*(self._check(p, timeout) for p in self.peers))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll(p)) for p in self.peers]

    async def stop(self) -> None:
        await stop_loops(self._tasks, (p.pool for p in self.peers))

    async def _check(self, peer: PeerState, timeout: float) -> None:
        ok = await peer.check(timeout)
        self.metrics.ready.values[(peer.name,)] = 1.0 if ok else 0.0
        if ok:
            self.quarantine.learn(peer.quarantine_report)
        if self.on_checked is not None:
            self.on_checked()

    async def _poll(self, peer: PeerState) -> None:
        """Every interval, whatever the last result: a partitioned peer is out after one failed
        read, and back at the first good one. A peer that is out is read at least every second,
        so its recovery (or its start, when peers start in any order) is seen soon."""
        interval = self.config.readiness_interval_seconds
        timeout = min(interval, 2.0)
        while True:
            peer.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval if peer.ready else min(interval, 1.0)):
                    await peer.wake.wait()
            await self._check(peer, timeout)

    def views(self) -> list[PeerView]:
        return [p.view() for p in self.peers]

    # --- the peer key ----------------------------------------------------------------------
    def authorize(self, headers: dict[str, str]) -> bool:
        """A hop-marked request must carry a peer key (never a client key)."""
        matched = bearer_matches(headers, self.keys)
        if matched:
            self.metrics.received.inc((headers.get(HOP_HEADER, "")[:32] or "unknown",))
        return matched

    # --- forwarding ------------------------------------------------------------------------
    async def _send_unless_gone(
        self, peer: PeerState, request: PeerRequest, tier: Tier, idle_timeout: float
    ) -> Response:
        """The peer's response headers, or UpstreamError when the peer is marked not ready
        (a failed /readyz read: hung, partitioned, draining) before they come."""
        sending = asyncio.ensure_future(
            peer.pool.request(
                b"POST",
                request.path.encode(),
                request.body,
                extra_headers=self._head(request, tier),
                connect_timeout=self.config.connect_timeout_seconds,
                first_byte_timeout=self.first_byte_timeout,
                idle_timeout=idle_timeout,
            )
        )
        gone = peer.gone()
        try:
            await asyncio.wait((sending, gone), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            sending.cancel()
            raise
        if sending.done():
            return sending.result()
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, UpstreamError):
            await sending
        raise UpstreamError(
            "it was marked not ready while this request waited for its answer",
            kind="timeout",
            before_response=True,
        )

    def _head(self, request: PeerRequest, tier: Tier) -> bytes:
        lines = [
            b"authorization: Bearer " + self.keys[0],
            HOP_HEADER.encode() + b": " + self.cloud.encode(),
        ]
        if tier == Tier.GPU:
            # The peer must not answer from its own CPU fallback: we have one at home.
            lines.append(b"x-llm-require-tier: gpu")
        complexity = request.headers.get("x-llm-complexity")
        if complexity:
            lines.append(b"x-llm-complexity: " + complexity.encode("latin-1"))
        return b"".join(line + b"\r\n" for line in lines)

    async def forward(
        self,
        request: PeerRequest,
        conn: Sink,
        choices: Sequence[PeerChoice],
        *,
        model: str,
        stream: bool,
        started: float,
        app_metrics: RouterMetrics,
        idle_timeout: float,
    ) -> bool:
        """Try the peers in order; True once one has answered the client. A peer that cannot be
        reached, hangs past the connect or first-byte timeout, resets, or answers 5xx, 429, 503,
        401 or 403 is passed over for the next choice. Nothing is retried once a response has
        started going to the client. False: none answered, the caller serves locally."""

        async def attempt(peer: PeerState, tier: Tier) -> bool:
            """One peer: True once it has answered the client, False to try the next."""
            outcome = CLIENT_GONE
            code = "499"
            response: Response | None = None
            sent = time.perf_counter()
            peer.in_flight += 1
            try:
                try:
                    response = await self._send_unless_gone(peer, request, tier, idle_timeout)
                except UpstreamError as exc:
                    outcome = {"connect": CONNECT, "timeout": TIMEOUT}.get(exc.kind, RESET)
                    peer.mark_failed(str(exc))
                    log.warning("peer %s failed, trying the next choice: %s", peer.name, exc)
                    return False
                ttfb = time.perf_counter() - sent
                status = response.status
                if status == 502:
                    payload = await _short_body(response)
                    if b'"backend_crashed"' in payload:
                        # The peer's backend died holding this request: final, as it is
                        # locally. No other choice gets it, here or (by the hash) anywhere.
                        outcome = POISON
                        self.quarantine.hold(body_hash(request.body))
                        log.warning(
                            "peer %s: its backend crashed on this request; not sent elsewhere",
                            peer.name,
                        )
                        code = "502"
                        await conn.send(
                            status, [JSON, (PEER_HEADER.encode(), peer.name.encode())], payload
                        )
                        return True
                if status >= 500 or status in (401, 403, 429):
                    outcome = (
                        REFUSED
                        if status in (401, 403)
                        else BUSY
                        if status in (429, 503)
                        else SERVER_ERROR
                    )
                    if status in (401, 403):
                        peer.refused_key(status)
                    else:
                        peer.wake.set()  # read its capacity again now
                    log.warning("peer %s answered %d, trying the next choice", peer.name, status)
                    return False
                peer.observe_ttfb(ttfb)
                self.metrics.latency.observe((peer.name,), ttfb)
                headers = [
                    (b"content-type", response.header(b"content-type") or b"application/json"),
                    (b"x-llm-tier", response.header(b"x-llm-tier") or tier.value.encode()),
                    (b"x-llm-backend", response.header(b"x-llm-backend") or peer.name.encode()),
                    (b"x-llm-model", response.header(b"x-llm-model") or b""),
                    (PEER_HEADER.encode(), peer.name.encode()),
                ]
                served = tier.value
                if stream and headers[0][1].startswith(b"text/event-stream"):
                    code = str(status)
                    outcome = OK

                    def first_token() -> None:
                        app_metrics.ttft.observe((served,), time.perf_counter() - started)

                    # No token counting here: the peer counts the tokens it served.
                    if not await relay_stream(
                        conn,
                        response,
                        headers,
                        source=f"the peer {peer.name}",
                        on_first=first_token,
                    ):
                        outcome = STREAM_BROKEN
                    return True
                try:
                    payload = await response.read()
                except UpstreamError as exc:
                    # Nothing has gone to the client yet: the next choice may still answer.
                    outcome = TIMEOUT if exc.kind == "timeout" else RESET
                    peer.mark_failed(str(exc))
                    return False
                app_metrics.ttft.observe((served,), time.perf_counter() - started)
                code = str(status)
                outcome = OK
                await conn.send(status, headers, payload)
                return True
            finally:
                peer.in_flight -= 1
                if response is not None:
                    response.close()
                self.metrics.requests.inc((peer.name, outcome))
                if outcome in (OK, STREAM_BROKEN, CLIENT_GONE, POISON):
                    app_metrics.requests.inc((tier.value, peer.cloud, model, code))
                    app_metrics.duration.observe((tier.value,), time.perf_counter() - started)

        by_name = {p.name: p for p in self.peers}
        for choice in choices:
            if await attempt(by_name[choice.peer.name], choice.tier):
                return True
        return False
