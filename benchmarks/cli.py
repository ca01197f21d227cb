"""CLI start-up and render speed: median wall time over several runs, with references beside.

    python benchmarks/cli.py [--runs 15]

Targets on a 2-core machine: `llmctl --help` under 0.25 s; `llmctl render --cloud all` under
0.5 s. The references (`python -c pass`, a bare `python -c 'import typer'`, `kubectl kustomize`
of one overlay) run interleaved with them, so a busy machine slows all of them alike and the
ratios stay meaningful: `--help` over a bare typer import is the figure the README keeps, since
no Typer CLI starts faster than typer itself loads. Each command's CPU time (user + system, from
the kernel's accounting of the child) is printed beside its wall time: on a loaded machine the
wall time includes waiting for a core, the CPU time much less so.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _llmctl() -> list[str]:
    script = Path(sys.executable).with_name("llmctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmctl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs

    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = Path(tempfile.mkdtemp(prefix="llmctl-bench-"))
    kubectl = shutil.which("kubectl", path=f"{Path(sys.executable).parent}:{env['PATH']}")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "llmctl --help": [*_llmctl(), "--help"],
        "llmctl render --cloud all": [*_llmctl(), "render", "--cloud", "all", "--out", str(out)],
    }
    subprocess.run(commands["llmctl render --cloud all"], env=env, check=True, capture_output=True)
    if kubectl:
        overlay = out / "clusters" / "aws" / "overlays" / "gpu"
        commands["kubectl kustomize (one overlay)"] = [kubectl, "kustomize", str(overlay)]

    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():  # interleaved: noise hits every command alike
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    shutil.rmtree(out)

    baseline = statistics.median(times["python -c pass"])
    typer_import = statistics.median(times["python -c 'import typer'"])
    typer_cpu = statistics.median(cpu["python -c 'import typer'"])
    print(f"median wall time over {runs} runs (interleaved), load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'command':34} {'median':>9} {'min':>9} {'x python':>9} {'x typer':>8} "
        f"{'cpu':>9} {'cpu x typer':>11}"
    )
    for name, samples in times.items():
        median = statistics.median(samples)
        cpu_median = statistics.median(cpu[name])
        print(
            f"{name:34} {median * 1000:8.1f}ms {min(samples) * 1000:8.1f}ms "
            f"{median / baseline:8.1f}x {median / typer_import:7.2f}x "
            f"{cpu_median * 1000:7.1f}ms {cpu_median / typer_cpu:10.2f}x"
        )
    print("targets: llmctl --help < 250 ms; llmctl render --cloud all < 500 ms")


if __name__ == "__main__":
    main()
