"""The router's CPU per request as a count of instructions, which a busy machine cannot skew.

router_overhead.py measures CPU seconds per request beside nginx; on a shared 2-core machine at
load 10-20 those seconds move by ±30% between runs (preemption, caches), more than the
difference being measured. Here each router runs under valgrind's callgrind, which counts the
instructions the process executes in user space (the kernel's socket work, the same for any
server, is not counted). Each router serves N1 and then N2 sequential requests, in two runs;
the difference over N2 - N1 is its instructions per proxied request, start-up excluded.

    python benchmarks/router_instructions.py [--baseline-src DIR] [--requests 200,1200]

With `--baseline-src DIR` (the src/ of another checkout) that router is counted the same way
and the ratio printed: the figure issue 25 asks to keep within 1.1x of the previous server.
Needs valgrind (Debian: apt-get install valgrind). A run takes a few minutes: under valgrind
Python runs some 50x slower.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_overhead import (  # noqa: E402
    CHAT_BODY,
    REPO,
    Pool,
    bench_config,
    free_port,
    post_chat,
    stop,
    wait_port,
)

COLLECTED = re.compile(r"Collected : (\d+)")


async def _requests(port: int, count: int) -> None:
    pool = Pool(f"http://127.0.0.1:{port}", max_idle=8)
    try:
        for _ in range(count):
            response = await post_chat(pool, CHAT_BODY)
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"the router answered {response.status}")
    finally:
        pool.close()


def instructions(src: Path, config: Path, requests: int, tmp: Path) -> int:
    """Instructions a router running `src` executes from start to exit, serving `requests`."""
    port = free_port()
    log = tmp / f"callgrind-{port}.log"
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={tmp}/callgrind.out.%p",
        f"--log-file={log}",
        sys.executable,
        "-m",
        "llmctl",
        "router",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    router = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(src)))
    try:
        wait_port(port, timeout=600)
        asyncio.run(_requests(port, requests))
    finally:
        router.send_signal(signal.SIGTERM)
        router.wait(timeout=600)
    found = COLLECTED.search(log.read_text())
    if found is None:
        raise RuntimeError(f"callgrind reported no instruction count in {log}")
    return int(found.group(1))


def per_request(src: Path, config: Path, counts: tuple[int, int], tmp: Path) -> float:
    low, high = (instructions(src, config, n, tmp) for n in counts)
    return (high - low) / (counts[1] - counts[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, help="src/ of another checkout")
    parser.add_argument("--requests", default="200,1200", help="the two request counts N1,N2")
    args = parser.parse_args()
    low, high = (int(n) for n in args.requests.split(","))
    backend_port = free_port()
    overhead = str(Path(__file__).with_name("router_overhead.py"))
    backend = subprocess.Popen([sys.executable, overhead, "--fake-backend", str(backend_port)])
    with tempfile.TemporaryDirectory(prefix="router-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            wait_port(backend_port)
            config = tmp / "router.json"
            # One model on one backend; health checks far apart, so none falls in the count.
            settings = bench_config(backend_port, slots=512)
            config.write_text(json.dumps(settings | {"healthCheck": {"intervalSeconds": 3600}}))
            sources = {"router": REPO / "src"}
            if args.baseline_src:
                sources["base"] = args.baseline_src.resolve()
            counts = {
                name: per_request(src, config, (low, high), tmp) for name, src in sources.items()
            }
        finally:
            stop([backend])
    print(f"instructions per proxied request (callgrind, sequential, {low} vs {high} requests)")
    for name, count in counts.items():
        print(f"{name:>7} {count:>10,.0f}")
    if "base" in counts:
        print(f"router / base: {counts['router'] / counts['base']:.3f}x")


if __name__ == "__main__":
    main()
