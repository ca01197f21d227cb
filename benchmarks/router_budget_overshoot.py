"""How far a key's GPU budget is overshot across router replicas (issue 31), per scrape interval.

Two real routers (`llmctl router serve`) in front of real llama-servers (a CPU one and one
labelled gpu, tiny random-weight GGUF), a real Prometheus scraping both, and one key with
`gpuTokensPerDay: BUDGET, overBudget: refuse`. `--clients` threads per replica send GPU requests
with that key until each has been refused; then the GPU tokens served are read from the routers.
The overshoot is what was served beyond the budget, in tokens and in requests' worth; a fresh
key is used for each round, so the rounds are independent.

    python benchmarks/router_budget_overshoot.py [--scrape 0.5,2] [--refresh 1] [--rounds 3]
        [--budget 2000] [--clients 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.prometheus import Prometheus  # noqa: E402
from tests.support.gguf_models import write_llama_gguf  # noqa: E402
from tests.support.llama import LlamaServer  # noqa: E402
from tests.support.router import (  # noqa: E402
    CPU_MODEL,
    GPU_MODEL,
    RouterProcess,
    router_config,
    two_models,
)

BUDGET = 2000  # --budget


def gpu_tokens(router: RouterProcess, key: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(router.url + "/metrics", timeout=10).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "llm_router_key_tokens_total"
        and s.labels.get("key") == key
        and s.labels.get("tier") == "gpu"
    )


def spend(routers: list[RouterProcess], key: str, secret: str, clients: int) -> tuple[int, int]:
    """Every client sends until refused; (requests served, requests refused)."""
    served = refused = 0
    lock = threading.Lock()

    def client(router: RouterProcess) -> None:
        nonlocal served, refused
        with httpx.Client(timeout=60) as http:
            while True:
                answer = http.post(
                    router.url + "/v1/chat/completions",
                    json={"model": CPU_MODEL, "max_tokens": 8,
                          "messages": [{"role": "user", "content": "hello"}]},
                    headers={"authorization": f"Bearer {secret}",
                             "x-llm-complexity": "reasoning"},
                )  # fmt: skip
                with lock:
                    if answer.status_code == 429:
                        refused += 1
                        return
                    served += 1

    threads = [threading.Thread(target=client, args=(r,)) for r in routers for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return served, refused


def run(
    scrape_s: float, refresh_s: float, rounds: int, clients: int, budget: int, tmp: Path
) -> list[float]:
    gguf = write_llama_gguf(tmp / "tiny.gguf")
    cpu, gpu = LlamaServer(gguf, CPU_MODEL, tmp), LlamaServer(gguf, GPU_MODEL, tmp, parallel=4)
    keys = {f"k{i}": f"sk-bench-{i}" for i in range(rounds)}
    routers: list[RouterProcess] = []
    prometheus = None
    overshoots: list[float] = []
    try:
        cpu.start()
        gpu.start()
        backends = [
            {"name": "aws/cpu", "url": cpu.url, "tier": "cpu", "cloud": "aws",
             "model": CPU_MODEL, "slots": 2},
            {"name": "aws/gpu", "url": gpu.url, "tier": "gpu", "cloud": "aws",
             "model": GPU_MODEL, "slots": 4},
        ]  # fmt: skip
        env = {"BENCH_KEYS": ",".join(f"{n}:{s}" for n, s in keys.items())}
        routers = [
            RouterProcess(router_config(backends, two_models(), CPU_MODEL), tmp, env=env)
            for _ in range(2)
        ]
        prometheus = Prometheus(
            tmp, {f"r{i}": f"127.0.0.1:{r.port}" for i, r in enumerate(routers)}, scrape_s
        )
        api_keys = {
            "env": "BENCH_KEYS",
            "keys": [{"name": n, "gpuTokensPerDay": budget, "overBudget": "refuse"} for n in keys],
            "budgetStore": {"prometheusUrl": prometheus.url, "refreshSeconds": refresh_s},
        }
        for router in routers:
            router.config = router_config(backends, two_models(), CPU_MODEL, apiKeys=api_keys)
        prometheus.start()
        for router in routers:
            router.start()
        for name, secret in keys.items():
            began = time.monotonic()
            served, _ = spend(routers, name, secret, clients)
            tokens = sum(gpu_tokens(r, name) for r in routers)
            overshoots.append(tokens - budget)
            print(
                f"  scrape {scrape_s:g} s, refresh {refresh_s:g} s: {served} requests, "
                f"{tokens:.0f} GPU tokens for a budget of {budget} "
                f"(+{tokens - budget:.0f}, {tokens / max(served, 1):.0f} per request) "
                f"in {time.monotonic() - began:.1f} s",
                flush=True,
            )
    finally:
        for router in routers:
            router.stop()
        if prometheus is not None:
            prometheus.stop()
        cpu.stop()
        gpu.stop()
    return overshoots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scrape", default="0.5,2", help="scrape intervals, seconds")
    parser.add_argument("--refresh", type=float, default=1.0, help="refreshSeconds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="threads per replica")
    parser.add_argument("--budget", type=int, default=BUDGET, help="gpuTokensPerDay")
    args = parser.parse_args()

    results = {}
    for scrape in (float(s) for s in args.scrape.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            results[scrape] = run(
                scrape, args.refresh, args.rounds, args.clients, args.budget, Path(tmp)
            )
    print(f"\nbudget {args.budget} GPU tokens, 2 replicas x {args.clients} clients, "
          f"refreshSeconds {args.refresh:g}")  # fmt: skip
    print("scrape interval | median overshoot (tokens) | as share of the budget")
    for scrape, overshoots in results.items():
        median = statistics.median(overshoots)
        print(f"{scrape:>13g} s | {median:>25.0f} | {median / args.budget:>21.1%}")


if __name__ == "__main__":
    main()
