"""How much the router adds to a request, beside nginx as the reference proxy.

A fake zero-latency OpenAI backend runs on loopback (its own process). The same requests go
direct to it, through `llmctl router serve`, and through nginx (keepalive upstream, buffering
off), interleaved round by round in one run, at concurrency 1, 32 and 128. Printed per
concurrency: requests/s, added p50 and p99 latency (non-streaming), added time to first byte
(streaming, concurrency 1) and the router's CPU seconds per proxied request, read from
/proc/<pid>/stat of the router process.

    /work/venv/bin/python benchmarks/router_overhead.py [--seconds 2] [--rounds 3]

With `--baseline-src DIR` (the src/ of another checkout, e.g. a worktree of main) a second
router runs that code in the same interleaved rounds, as `base`: a change's cost measured side
by side rather than against figures taken on another day.

With `--granian` the router's ASGI app (`llmctl.router.asgi:app_from_env`, the same app and
upstream client) also runs under granian (one worker, uvloop), as `granian`: how the chosen
server (uvicorn's httptools protocol) compares with the other maintained candidate (issue 25).
granian is not a dependency: `pip install granian` first.

Needs nginx on PATH (Debian: apt-get install nginx). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llmctl.router.upstream import Pool, Response  # noqa: E402

CHAT_BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 16,
    }
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 16,
        "stream": True,
    }
).encode()
TICKS = 2**31


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the fake backend (runs in its own process: `python router_overhead.py --fake-backend P`) -

FAKE_REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello there, friend."},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()
FAKE_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}],'
    b'"model":"bench-model","object":"chat.completion.chunk"}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" there"}}],"model":"bench-model",'
    b'"object":"chat.completion.chunk"}\n\n',
    b'data: {"choices":[{"index":0,"finish_reason":"stop","delta":{}}],"model":"bench-model",'
    b'"object":"chat.completion.chunk","usage":{"prompt_tokens":12,"completion_tokens":2}}\n\n',
    b"data: [DONE]\n\n",
]


def run_fake_backend(port: int) -> None:
    import httptools
    import uvloop

    reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(FAKE_REPLY)).encode()
        + b"\r\n\r\n"
        + FAKE_REPLY
    )
    health = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
        b'{"status":"ok"}'
    )
    sse_head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    sse = b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in FAKE_EVENTS) + b"0\r\n\r\n"

    class Fake(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_begin(self) -> None:
            self.url, self.body = b"", b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            if self.url.startswith(b"/health"):
                self.transport.write(health)  # type: ignore[attr-defined]
            elif b'"stream": true' in self.body:
                self.transport.write(sse_head + sse)  # type: ignore[attr-defined]
            else:
                self.transport.write(reply)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Fake, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# --- the targets ------------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def bench_config(backend_port: int, slots: int) -> dict[str, Any]:
    """One model served by one CPU backend: the router config of the single-router benchmarks."""
    return {
        "cloud": "aws",
        "models": [{"name": "bench-model", "parameters": 1_100_000_000}],
        "backends": [
            {
                "name": "aws/cpu",
                "url": f"http://127.0.0.1:{backend_port}",
                "tier": "cpu",
                "cloud": "aws",
                "model": "bench-model",
                "slots": slots,
            }
        ],
        "policy": {"fallbackModel": "bench-model"},
    }


def serve_router(
    path: Path,
    config: dict[str, Any],
    port: int,
    *options: str,
    src: Path = REPO / "src",
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """`llmctl router serve` (the code under `src`) on 127.0.0.1:`port`, with `config` written
    to `path`; `options` go on its command line, `popen` to subprocess.Popen."""
    path.write_text(json.dumps(config))
    argv = [sys.executable, "-m", "llmctl", "router", "serve", "--config", str(path)]
    argv += ["--host", "127.0.0.1", "--port", str(port), *options]
    return subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(src), **(env or {})), **popen)


def start_router(
    tmp: Path, backend_port: int, port: int, src: Path = REPO / "src"
) -> subprocess.Popen[bytes]:
    config = bench_config(backend_port, slots=512) | {"healthCheck": {"intervalSeconds": 5}}
    return serve_router(
        tmp / f"router-{port}.yaml", config, port, "--log-level", "warning", src=src
    )


def stop(procs: list[subprocess.Popen[bytes]], again_after: float | None = None) -> None:
    """SIGTERM every process (and again `again_after` s later to those still running: a router
    then skips its drain window), then wait up to 10 s for each before killing it."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    if again_after is not None:
        time.sleep(again_after)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


def start_nginx(tmp: Path, backend_port: int, port: int) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        raise SystemExit("nginx is not installed: apt-get install nginx")
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, backend=backend_port, port=port))
    return subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)])


def cpu_seconds(pid: int) -> float:
    """CPU seconds of the process and its children (granian serves from a worker process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def start_granian(tmp: Path, backend_port: int, port: int) -> subprocess.Popen[bytes]:
    """The router's ASGI app under granian: one worker, one runtime thread, uvloop."""
    config = bench_config(backend_port, slots=512) | {"healthCheck": {"intervalSeconds": 5}}
    path = tmp / f"router-{port}.yaml"
    path.write_text(json.dumps(config))
    granian = Path(sys.executable).parent / "granian"
    argv = [str(granian), "--interface", "asgi", "--http", "1", "--loop", "uvloop"]
    argv += ["--workers", "1", "--runtime-mode", "st", "--no-access-log", "--log-level", "warning"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--factory"]
    argv += ["llmctl.router.asgi:app_from_env"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), LLMCTL_ROUTER_CONFIG=str(path))
    return subprocess.Popen(argv, env=env)


# --- the load --------------------------------------------------------------------------------


async def post_chat(pool: Pool, body: bytes) -> Response:
    """POST a chat completion: 5 s to connect, 30 s to the first byte and between chunks."""
    return await pool.request(
        b"POST",
        b"/v1/chat/completions",
        body,
        connect_timeout=5,
        first_byte_timeout=30,
        idle_timeout=30,
    )


async def burst(pool: Pool, concurrency: int, seconds: float) -> tuple[list[float], int]:
    """`concurrency` workers send requests back to back for `seconds`; latencies in seconds."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                response = await post_chat(pool, CHAT_BODY)
                await response.read()
                if response.status != 200:
                    errors += 1
                    continue
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def first_bytes(pool: Pool, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = await post_chat(pool, STREAM_BODY)
        await response.next_chunk()
        out.append(time.perf_counter() - t0)
        await response.read()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleaved(names: list[str], r: int) -> list[str]:
    """Round r's order of the targets: forwards, then backwards, so drift falls on every one."""
    return names if r % 2 == 0 else names[::-1]


class Tally:
    """What the bursts at one concurrency level measured, per target."""

    def __init__(self, names: Iterable[str]) -> None:
        self.latencies: dict[str, list[float]] = {name: [] for name in names}
        self.counts = dict.fromkeys(self.latencies, 0)
        self.walls = dict.fromkeys(self.latencies, 0.0)
        self.errors = dict.fromkeys(self.latencies, 0)

    async def burst(self, name: str, pool: Pool, concurrency: int, seconds: float) -> None:
        t0 = time.perf_counter()
        values, errors = await burst(pool, concurrency, seconds)
        self.walls[name] += time.perf_counter() - t0
        self.latencies[name] += values
        self.counts[name] += len(values)
        self.errors[name] += errors

    def row(self) -> dict[str, object]:
        """Each target's requests/s, p50 and p99 latency in ms, errors and request count."""
        return {
            name: {
                "rps": self.counts[name] / self.walls[name],
                "p50_ms": pct(values, 0.5) * 1000,
                "p99_ms": pct(values, 0.99) * 1000,
                "errors": self.errors[name],
                "requests": self.counts[name],
            }
            for name, values in self.latencies.items()
        }


async def ttfb_p50_ms(pools: dict[str, Pool], rounds: int) -> dict[str, float]:
    """Each target's median time to first byte, streaming at concurrency 1, interleaved."""
    ttfb: dict[str, list[float]] = {name: [] for name in pools}
    for r in range(rounds * 3):
        for name in interleaved(list(pools), r):
            ttfb[name] += await first_bytes(pools[name], 100)
    return {name: statistics.median(v) * 1000 for name, v in ttfb.items()}


async def measure(
    ports: dict[str, int], pids: dict[str, int], seconds: float, rounds: int, levels: list[int]
) -> dict[str, object]:
    pools = {name: Pool(f"http://127.0.0.1:{port}", max_idle=512) for name, port in ports.items()}
    for pool in pools.values():  # warm up: connections open, code paths hot
        await burst(pool, 32, 0.3)
    results: dict[str, object] = {}
    for level in levels:
        tally = Tally(pools)
        proxy_cpu = dict.fromkeys(pids, 0.0)
        for r in range(rounds):
            for name in interleaved(list(pools), r):
                cpu0 = cpu_seconds(pids[name]) if name in pids else 0.0
                await tally.burst(name, pools[name], level, seconds)
                if name in pids:
                    proxy_cpu[name] += cpu_seconds(pids[name]) - cpu0
        row = tally.row()
        counts = tally.counts
        row["router_cpu_ms_per_request"] = proxy_cpu["router"] / max(counts["router"], 1) * 1000
        for other in ("base", "granian"):
            if other in pids:
                row[f"{other}_cpu_ms_per_request"] = proxy_cpu[other] / max(counts[other], 1) * 1000
        results[str(level)] = row
    results["ttfb_p50_ms"] = await ttfb_p50_ms(pools, rounds)
    for pool in pools.values():
        pool.close()
    return results


def report(results: dict[str, object]) -> None:
    print(
        f"{'conc':>5} {'target':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'% direct':>9} {'errors':>6}"
    )
    for level, row in results.items():
        if level == "ttfb_p50_ms":
            continue
        assert isinstance(row, dict)
        direct = row["direct"]
        for name in [n for n in ("direct", "router", "base", "granian", "nginx") if n in row]:
            r = row[name]
            print(
                f"{level:>5} {name:>7} {r['rps']:>9.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                f"{r['p50_ms'] - direct['p50_ms']:>+8.3f} {r['p99_ms'] - direct['p99_ms']:>+8.3f}"
                f" {100 * r['rps'] / direct['rps']:>8.0f}% {r['errors']:>6}"
            )
        others = "".join(
            f", {name} {row[f'{name}_cpu_ms_per_request']:.3f} ms"
            for name in ("base", "granian")
            if f"{name}_cpu_ms_per_request" in row
        )
        print(
            f"{level:>5} CPU per proxied request: router {row['router_cpu_ms_per_request']:.3f} ms"
            + others
        )
    ttfb = results["ttfb_p50_ms"]
    assert isinstance(ttfb, dict)
    print(
        "streaming, concurrency 1, median time to first byte: "
        + ", ".join(f"{n} {v:.3f} ms (+{v - ttfb['direct']:.3f})" for n, v in ttfb.items())
    )


def load_parser(doc: str | None, levels: str) -> argparse.ArgumentParser:
    """The options of a latency benchmark: burst length, rounds, concurrency levels, --json."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one burst")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument("--levels", default=levels, help="concurrency levels")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    return parser


def main() -> None:
    parser = load_parser(__doc__, levels="1,32,128")
    parser.add_argument(
        "--baseline-src", type=Path, help="src/ of another checkout: its router runs beside"
    )
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument(
        "--granian", action="store_true", help="also the router's ASGI app under granian"
    )
    parser.add_argument("--fake-backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_backend:
        run_fake_backend(args.fake_backend)
        return
    backend_port, router_port, nginx_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            procs.append(
                subprocess.Popen([sys.executable, __file__, "--fake-backend", str(backend_port)])
            )
            wait_port(backend_port)
            router = start_router(tmp, backend_port, router_port)
            procs.append(router)
            ports = {"direct": backend_port, "router": router_port}
            pids = {"router": router.pid}
            if args.baseline_src:
                base_port = free_port()
                base = start_router(tmp, backend_port, base_port, args.baseline_src.resolve())
                procs.append(base)
                ports["base"], pids["base"] = base_port, base.pid
            if args.granian:
                granian_port = free_port()
                granian = start_granian(tmp, backend_port, granian_port)
                procs.append(granian)
                ports["granian"], pids["granian"] = granian_port, granian.pid
            if not args.no_nginx:
                procs.append(start_nginx(tmp, backend_port, nginx_port))
                ports["nginx"] = nginx_port
            for port in ports.values():
                wait_port(port)
            import uvloop

            results = uvloop.run(
                measure(
                    ports,
                    pids,
                    args.seconds,
                    args.rounds,
                    [int(x) for x in args.levels.split(",")],
                )
            )
        finally:
            stop(procs, again_after=0.1)
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
