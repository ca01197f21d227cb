"""What one federation hop adds (issue 16), beside a single router.

The fake zero-latency OpenAI backend of router_overhead.py (its own process) is gcp's GPU tier.
Three targets get the same GPU-model requests, interleaved round by round:

- direct: the fake backend;
- single: gcp's router, serving from its own (local) GPU backend: today's single-router path;
- hop:    aws's router, whose GPU backend is down, forwarding to gcp's router as a peer
          (hop marker, peer key), which serves from its GPU backend.

Printed: requests/s, p50 and p99 latency (non-streaming) and what each adds over the previous
step, median time to first byte (streaming, concurrency 1), and CPU seconds per request of
each router process (from /proc/<pid>/stat).

    python benchmarks/federation_hop.py [--seconds 2] [--rounds 3] [--levels 1,8]

Everything listens on 127.0.0.1 only. State the machine's load beside the figures: on a shared
2-core machine they move by tens of percent between runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from llmctl.router.upstream import Pool  # noqa: E402
from router_overhead import (  # noqa: E402
    Tally,
    burst,
    cpu_seconds,
    free_port,
    interleaved,
    load_parser,
    post_chat,
    serve_router,
    stop,
    ttfb_p50_ms,
    wait_port,
)

MODELS = [
    {"name": "bench-model", "parameters": 7_000_000_000},  # over 3B: the GPU tier
    {"name": "bench-small", "parameters": 1_000_000_000},
]
PEER_KEY = "bench-peer-key"


def router_config(cloud: str, gpu_url: str, cpu_url: str, peers: list[dict[str, str]]) -> dict:
    return {
        "cloud": cloud,
        "models": MODELS,
        "backends": [
            {"name": f"{cloud}/gpu", "url": gpu_url, "tier": "gpu", "cloud": cloud,
             "model": "bench-model", "slots": 512},
            {"name": f"{cloud}/cpu", "url": cpu_url, "tier": "cpu", "cloud": cloud,
             "model": "bench-small", "slots": 512},
        ],
        "policy": {"fallbackModel": "bench-small"},
        "healthCheck": {"intervalSeconds": 5},
        "federation": {"peers": peers, "peerKey": {"env": "BENCH_PEER_KEY"},
                       "readinessIntervalSeconds": 1},
    }  # fmt: skip


def start_router(tmp: Path, name: str, config: dict, port: int) -> subprocess.Popen[bytes]:
    return serve_router(
        tmp / f"{name}.yaml",
        config,
        port,
        "--log-level",
        "warning",
        env={"BENCH_PEER_KEY": PEER_KEY},
    )


async def check_route(port: int, peer: str | None) -> None:
    pool = Pool(f"http://127.0.0.1:{port}")
    from router_overhead import CHAT_BODY

    for _ in range(100):  # until aws has read gcp's /readyz
        response = await post_chat(pool, CHAT_BODY)
        await response.read()
        if response.header(b"x-llm-peer") == (peer.encode() if peer else None):
            assert response.header(b"x-llm-tier") == b"gpu", response.headers
            pool.close()
            return
        import asyncio

        await asyncio.sleep(0.2)
    raise RuntimeError(f"port {port}: never answered through peer {peer!r}")


async def measure(
    ports: dict[str, int], pids: dict[str, int], seconds: float, rounds: int, levels: list[int]
) -> dict[str, object]:
    await check_route(ports["single"], None)
    await check_route(ports["hop"], "gcp")
    pools = {name: Pool(f"http://127.0.0.1:{port}", max_idle=512) for name, port in ports.items()}
    for pool in pools.values():
        await burst(pool, 8, 0.3)
    results: dict[str, object] = {}
    for level in levels:
        tally = Tally(pools)
        cpu = {(t, r): 0.0 for t in ("single", "hop") for r in pids}
        for r in range(rounds):
            for name in interleaved(list(pools), r):
                before = {p: cpu_seconds(pid) for p, pid in pids.items()}
                await tally.burst(name, pools[name], level, seconds)
                if name in ("single", "hop"):
                    for p, pid in pids.items():
                        cpu[(name, p)] += cpu_seconds(pid) - before[p]
        row = tally.row()
        row["cpu_ms_per_request"] = {
            f"{t}/{p}": cpu[(t, p)] / max(tally.counts[t], 1) * 1000 for (t, p) in cpu
        }
        results[str(level)] = row
    results["ttfb_p50_ms"] = await ttfb_p50_ms(pools, rounds)
    for pool in pools.values():
        pool.close()
    return results


def report(results: dict[str, object]) -> None:
    print(f"load average before the run: {results.pop('loadavg')}")
    print(
        f"{'conc':>5} {'target':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'errors':>6}"
    )
    for level, row in results.items():
        if level == "ttfb_p50_ms":
            continue
        assert isinstance(row, dict)
        previous = None
        for name in ("direct", "single", "hop"):
            r = row[name]
            added = r["p50_ms"] - previous if previous is not None else 0.0
            previous = r["p50_ms"]
            print(
                f"{level:>5} {name:>7} {r['rps']:>9.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                f"{added:>+8.3f} {r['errors']:>6}"
            )
        cpu = row["cpu_ms_per_request"]
        print(
            f"{level:>5} CPU ms per request: single: gcp router {cpu['single/gcp']:.3f}; "
            f"hop: aws router {cpu['hop/aws']:.3f} + gcp router {cpu['hop/gcp']:.3f}"
        )
    ttfb = results["ttfb_p50_ms"]
    assert isinstance(ttfb, dict)
    print(
        "streaming, concurrency 1, median time to first byte: "
        + ", ".join(f"{n} {v:.3f} ms" for n, v in ttfb.items())
    )


def main() -> None:
    parser = load_parser(__doc__, levels="1,8")
    args = parser.parse_args()
    backend, gcp_port, aws_port = free_port(), free_port(), free_port()
    down = f"http://127.0.0.1:{free_port()}"
    fake = f"http://127.0.0.1:{backend}"
    procs: list[subprocess.Popen[bytes]] = []
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory(prefix="fed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            procs.append(subprocess.Popen(
                [sys.executable, str(REPO / "benchmarks" / "router_overhead.py"),
                 "--fake-backend", str(backend)]))  # fmt: skip
            wait_port(backend)
            gcp_peers = [{"name": "aws", "cloud": "aws", "url": f"http://127.0.0.1:{aws_port}"}]
            aws_peers = [{"name": "gcp", "cloud": "gcp", "url": f"http://127.0.0.1:{gcp_port}"}]
            gcp = start_router(tmp, "gcp", router_config("gcp", fake, fake, gcp_peers), gcp_port)
            aws = start_router(tmp, "aws", router_config("aws", down, fake, aws_peers), aws_port)
            procs += [gcp, aws]
            wait_port(gcp_port)
            wait_port(aws_port)
            import uvloop

            results = uvloop.run(measure(
                {"direct": backend, "single": gcp_port, "hop": aws_port},
                {"aws": aws.pid, "gcp": gcp.pid}, args.seconds, args.rounds,
                [int(x) for x in args.levels.split(",")]))  # fmt: skip
        finally:
            stop(procs)
    results["loadavg"] = loadavg
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
