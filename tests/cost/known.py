"""What the cost tests share: price catalogs with round numbers (so every figure can be worked
out by hand) are built around the same header and throughput table, and workloads are told as
"N requests a day of M output tokens"."""

from __future__ import annotations

from typing import Any

from llmctl.cost.model import Workload

SOURCE = 'source: test, date: "2026-01-01"'


def catalog_yaml(clouds: str) -> str:
    """A price catalog document with these clouds (the YAML under `clouds:`, two spaces in),
    T4 serving Llama-2-7B at 50 tokens/s and a CPU node TinyLlama at 10."""
    return f"""
version: 1
currency: USD
checked: "2026-01-01"
clouds:
{clouds.strip(chr(10))}
throughput:
  - {{gpu: t4, model: llama-2-7b-chat, tokens_per_second: 50, {SOURCE}}}
  - {{gpu: null, model: tinyllama-1.1b-chat, tokens_per_second: 10, {SOURCE}}}
"""


def per_day(requests: float, tokens: float, **rest: Any) -> Workload:
    """`requests` GPU requests a day of `tokens` output tokens each; the rest as given."""
    return Workload(gpu_requests_per_day=requests, avg_output_tokens=tokens, **rest)
