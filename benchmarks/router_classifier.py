"""What the prompt classifier costs per request, by prompt size and shape (issue 19, review #2).

The classifier runs on the router's event loop, so its worst case is a pause for every other
client. Printed per input: the best of N runs of `policy.classify_prompt` in microseconds and
per KB of prompt, beside the classifier as it was before (its patterns are copied below as the
baseline: unbounded input, a quadratic arithmetic pattern).

    nice python benchmarks/router_classifier.py [--runs 5] [--no-baseline]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from llmctl.router import policy  # noqa: E402

# The classifier before issue 19 (commit 17143b2), for the side-by-side figures.
_OLD_REASONING = re.compile(
    r"\bstep[- ]by[- ]step\b|\bprove\b|\bproof\b|\bderive\b|\bderivation\b|\btheorem\b"
    r"|\bsolve\b|\bcalculate\b|\bcompute\b|\bestimate\b|\bwhy does\b|\bwhy is\b|\bwhy do\b"
    r"|\breason(?:ing)?\b|\banaly[sz]e\b|\btrade-?offs?\b|\bcompare and contrast\b"
    r"|\bpros and cons\b|\bplan\b.{0,30}\bsteps\b|\blogic puzzle\b|\briddle\b"
    r"|\d+\s*[-+*/^]\s*\d+\s*[-+*/^=]",
    re.IGNORECASE,
)


def old_classify(text: str) -> str:
    if policy._CODE.search(text):
        return policy.CODE_GENERATION
    if len(text) > policy.LONG_PROMPT_CHARS or _OLD_REASONING.search(text):
        return policy.REASONING
    return policy.CHAT


def inputs() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for size in (1_000, 4_000, 64_000, 1_000_000):
        out.append((f"digits {size // 1000} KB", ("1" * size)))
        out.append((f"'write ' {size // 1000} KB", ("write " * (size // 6 + 1))[:size]))
        out.append((f"'python ' {size // 1000} KB", ("python " * (size // 7 + 1))[:size]))
        out.append((f"prose {size // 1000} KB", ("The quick brown fox jumps. " * size)[:size]))
    return out


def best_us(func: Callable[[str], str], text: str, runs: int, budget_s: float = 5.0) -> float:
    best = float("inf")
    spent = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        func(text)
        took = time.perf_counter() - started
        best = min(best, took)
        spent += took
        if spent > budget_s:
            break
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    print(f"{'input':>20} {'now us':>10} {'us/KB':>8}", end="")
    print("" if args.no_baseline else f" {'before us':>12} {'us/KB':>10}")
    worst = 0.0
    for name, text in inputs():
        kb = len(text) / 1000
        now = best_us(policy.classify_prompt, text, args.runs)
        worst = max(worst, now)
        print(f"{name:>20} {now:>10.0f} {now / kb:>8.1f}", end="")
        if args.no_baseline:
            print()
        else:
            # The old quadratic pattern: one run only past 64 KB (seconds each).
            before = best_us(old_classify, text, 1 if kb > 64 else args.runs)
            print(f" {before:>12.0f} {before / kb:>10.1f}")
    print(f"worst case now: {worst / 1000:.2f} ms per request, whatever the prompt size")


if __name__ == "__main__":
    main()
