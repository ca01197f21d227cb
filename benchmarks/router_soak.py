"""Soak: hostile clients at the router's configured caps, while a probe times GET /healthz.

The router (`llmctl router serve`, its own process) sits in front of the fake zero-latency
backend of benchmarks/router_overhead.py, with limits small enough to reach here:
maxConnections, header/body/keep-alive timeouts and maxPipelinedRequests from the flags. For
`--seconds`, one asyncio process keeps up, reconnecting whatever the router closes:

- idle:       connections that send nothing (the cap's worth, less the others);
- slowloris:  connections sending a header one byte a second (header timeout);
- slow body:  a declared 100 KB body sent one byte a second (body timeout);
- pipelining: connections writing maxPipelinedRequests x 4 GET /metrics and never reading;
- classifier: keep-alive clients posting 4 KB prompts: digits (the review's worst case)
                or `write write ...` (`--prompt write`, the worst case now).

A probe opens a NEW connection every 50 ms for `GET /healthz`, as a kubelet does, and the
figures are its latency percentiles, its failures (a 503 at the cap counts as one), and the
router's CPU and memory.

    nice python benchmarks/router_soak.py [--seconds 30] [--max-connections 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from router_overhead import (  # noqa: E402
    bench_config,
    cpu_seconds,
    free_port,
    serve_router,
    stop,
    wait_port,
)

PROMPTS = {
    "digits": "1" * 4000,  # the review's quadratic case
    "write": ("write " * 700)[:4000],  # the most expensive case for the linear classifier
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, port: int, seconds: float, pipelined: int, prompt: str = "digits") -> None:
        self.port, self.pipelined = port, pipelined
        self.body = json.dumps(
            {"model": "bench-model", "messages": [{"role": "user", "content": PROMPTS[prompt]}]}
        ).encode()
        self.stop_at = time.monotonic() + seconds
        self.opened = 0
        self.classified = 0

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            conn = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            await asyncio.sleep(0.2)
            return None
        self.opened += 1
        return conn

    async def _until_closed(self, reader: asyncio.StreamReader) -> None:
        while self.running():
            try:
                async with asyncio.timeout(max(self.stop_at - time.monotonic(), 0.01)):
                    if not await reader.read(65536):
                        return
            except (TimeoutError, OSError):
                return

    async def idle(self) -> None:
        while self.running():
            if conn := await self._open():
                await self._until_closed(conn[0])
                conn[1].close()

    async def drip(self, head: bytes) -> None:
        while self.running():
            if not (conn := await self._open()):
                continue
            reader, writer = conn
            try:
                writer.write(head)
                while self.running() and not reader.at_eof():
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(1.0)
            except OSError:
                pass
            writer.close()

    async def pipeline(self) -> None:
        batch = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * (self.pipelined * 4)
        while self.running():
            if not (conn := await self._open()):
                continue
            reader, writer = conn
            try:
                writer.write(batch)  # never read: the router must not buffer the answers
                await asyncio.sleep(2.0)
            except OSError:
                pass
            writer.close()

    async def classifier(self) -> None:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        while self.running():
            if not (conn := await self._open()):
                continue
            reader, writer = conn
            try:
                while self.running():
                    writer.write((head % len(self.body)) + self.body)
                    line = await reader.readuntil(b"\r\n\r\n")
                    length = int(line.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    self.classified += 1
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                pass
            writer.close()

    async def probe(self, out: list[float], failures: list[str]) -> None:
        while self.running():
            started = time.perf_counter()
            try:
                async with asyncio.timeout(5):
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = await reader.read()
                    writer.close()
                if answer.startswith(b"HTTP/1.1 200 "):
                    out.append(time.perf_counter() - started)
                else:
                    failures.append(answer[:12].decode("latin-1"))
            except (OSError, TimeoutError) as exc:
                failures.append(type(exc).__name__)
            await asyncio.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def calm(port: int, seconds: float) -> list[float]:
    """The same probe with no attacker: what this (shared) machine gives anyway."""
    latencies: list[float] = []
    await Soak(port, seconds, 1).probe(latencies, [])
    return latencies


async def soak(args: argparse.Namespace, port: int) -> tuple[list[float], list[str], Soak]:
    s = Soak(port, args.seconds, args.pipelined, args.prompt)
    slow = max(args.max_connections // 8, 1)
    jobs = [s.drip(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(slow)]
    body_head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    jobs += [s.drip(body_head) for _ in range(slow)]
    jobs += [s.pipeline() for _ in range(args.pipeliners)]
    jobs += [s.classifier() for _ in range(args.classifiers)]
    idle = args.max_connections - 2 * slow - args.pipeliners - args.classifiers
    jobs += [s.idle() for _ in range(max(idle, 0))]
    latencies: list[float] = []
    failures: list[str] = []
    await asyncio.gather(s.probe(latencies, failures), *jobs)
    return latencies, failures, s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--body-timeout", type=float, default=30.0)
    parser.add_argument("--keep-alive", type=float, default=75.0)
    parser.add_argument("--pipelined", type=int, default=16)
    parser.add_argument("--pipeliners", type=int, default=8)
    parser.add_argument("--classifiers", type=int, default=4)
    parser.add_argument("--calm-seconds", type=float, default=5.0)
    parser.add_argument("--prompt", choices=sorted(PROMPTS), default="digits")
    args = parser.parse_args()
    backend_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="router-soak-") as tmp_name:
        tmp = Path(tmp_name)
        config = bench_config(backend_port, slots=64) | {
            "limits": {
                "maxConnections": args.max_connections,
                "headerTimeoutSeconds": args.header_timeout,
                "bodyTimeoutSeconds": args.body_timeout,
                "keepAliveTimeoutSeconds": args.keep_alive,
                "maxPipelinedRequests": args.pipelined,
                "drainWindowSeconds": 0,
            },
        }
        backend = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "benchmarks" / "router_overhead.py"),
                "--fake-backend",
                str(backend_port),
            ]
        )
        log = (tmp / "router.log").open("wb")
        router = serve_router(
            tmp / "router.yaml", config, port, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_port(backend_port)
            wait_port(port)
            time.sleep(0.5)
            cpu0, rss0 = cpu_seconds(router.pid), rss_mb(router.pid)
            import uvloop

            quiet = [v * 1000 for v in uvloop.run(calm(port, args.calm_seconds))]
            latencies, failures, s = uvloop.run(soak(args, port))
            cpu = cpu_seconds(router.pid) - cpu0
            rss = rss_mb(router.pid)
        finally:
            stop([router, backend])
        refusals = (tmp / "router.log").read_text().count("maxConnections")
    ms = [v * 1000 for v in latencies]
    print(
        f"soak {args.seconds:g} s, maxConnections {args.max_connections}, header/body/keep-alive "
        f"timeouts {args.header_timeout:g}/{args.body_timeout:g}/{args.keep_alive:g} s, "
        f"maxPipelinedRequests {args.pipelined}"
    )
    print(
        f"/healthz probes before the attack: {len(quiet)}, p50 {pct(quiet, 0.5):.1f} ms, "
        f"p99 {pct(quiet, 0.99):.1f} ms"
    )
    print(
        f"attacker connections opened: {s.opened}; 4 KB {args.prompt!r} prompts classified: "
        f"{s.classified}"
    )
    print(
        f"/healthz probes: {len(ms)} ok, {len(failures)} failed {sorted(set(failures))}; "
        f"p50 {pct(ms, 0.5):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, max {max(ms, default=0):.1f} ms"
    )
    print(
        f"router: {cpu:.1f} s CPU in {args.seconds:g} s, RSS {rss0:.0f} -> {rss:.0f} MB, "
        f"{refusals} cap log line(s)"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores, shared)")


if __name__ == "__main__":
    main()
