"""The chart's llama-server arguments are llmctl's, for any llamacpp settings: the same per-slot
context sizing, the same `--kv-unified` rule, and a `fail` wherever config.LlamaCpp refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llmctl.config import LlamaCpp, Stack
from llmctl.manifests.llamacpp import server_args
from tests.charts.helm import by_name, pod_spec, template, template_error
from tests.manifests.test_llamacpp import KNOWN

STACK = Stack()

SETTINGS: list[dict[str, Any]] = [
    {"ctx_per_request": 2048, "parallel": 4, "ngl": -1, "flash_attn": True},
    {"ctx_per_request": 2048, "ctx_size": 4096, "parallel": 8, "ngl": -1, "flash_attn": True},
    {"ctx_per_request": 2048, "ctx_size": 1024, "parallel": 2, "ngl": 0, "flash_attn": False},
    {
        "ctx_per_request": 2048,
        "ctx_size": 4096,
        "parallel": 8,
        "kv_unified": False,
        "ngl": 10,
        "flash_attn": False,
    },
    {
        "ctx_per_request": 512,
        "ctx_size": 4096,
        "parallel": 8,
        "ngl": 99,
        "flash_attn": True,
        "threads": 6,
    },
    {
        "ctx_per_request": 1024,
        "ctx_size": 8192,
        "parallel": 4,
        "kv_unified": True,
        "ngl": 0,
        "flash_attn": False,
    },
    {"ctx_per_request": 4096, "parallel": 1, "ngl": -1, "flash_attn": False},
    {"ctx_per_request": 3000, "ctx_size": 8000, "parallel": 3, "ngl": 0, "flash_attn": True},
    {
        "ctx_per_request": 3000,
        "ctx_size": 8000,
        "parallel": 3,
        "kv_unified": False,
        "ngl": 0,
        "flash_attn": True,
    },
]


def _sets(prefix: str, settings: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in settings.items():
        args += ["--set", f"{prefix}.{key}={str(value).lower()}"]
    return args


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_chart_args_match_llmctl_or_both_refuse(tier: str, settings: dict[str, Any]) -> None:
    prefix = "cpu.llamacpp" if tier == "cpu" else "llamacpp"
    # Start from settings of the tier's own, replacing every one the case names.
    flags = ["--set", "gpu.enabled=true", "--set", f"{prefix}.ctx_per_request=2048"]
    flags += _sets(prefix, settings)
    try:
        # The tier's own --device (CUDA0 on the GPU tier) stays: the cases don't name one.
        expected = LlamaCpp(**{"device": getattr(STACK, tier).llamacpp.device, **settings})
    except ValidationError:
        error = template_error(*flags)
        # The same numbers and the same advice as llmctl's own refusal.
        refused = LlamaCpp.model_construct(**{"kv_unified": None, "ctx_size": None, **settings})
        assert f"{prefix}: ctx_size {refused.effective_ctx_size} " in error
        assert f"leaves {refused.ctx_per_slot} tokens per request" in error
        minimum = refused.ctx_per_request * (1 if refused.unified else refused.parallel)
        assert f"raise {prefix}.ctx_size to at least {minimum} (or leave it unset)" in error
        return
    model = getattr(STACK, tier).model
    name = f"demo-{tier}-llm-server"
    pod = pod_spec(by_name(template(*flags))[("Deployment", name)])
    args = pod["containers"][0]["args"]
    assert args == server_args(model, expected)
    assert [a for a in args if a.startswith("-") and a not in KNOWN] == []


def test_too_small_to_split_unifies_the_kv_cache() -> None:
    pod = pod_spec(
        by_name(
            template("--set", "cpu.llamacpp.ctx_size=2048", "--set", "cpu.llamacpp.parallel=4")
        )[("Deployment", "demo-cpu-llm-server")]
    )
    assert pod["containers"][0]["args"][-1] == "--kv-unified"


def test_one_request_that_cannot_fit_fails_with_how_to_fix_it() -> None:
    error = template_error("--set", "gpu.enabled=true", "--set", "llamacpp.ctx_size=1024")
    assert (
        "llamacpp: ctx_size 1024 unified leaves 1024 tokens per request, less than "
        "ctx_per_request 2048; raise llamacpp.ctx_size to at least 2048 (or leave it unset), "
        "lower llamacpp.parallel or llamacpp.ctx_per_request"
    ) in error


def test_short_slots_with_kv_unified_off_fail_and_say_so() -> None:
    error = template_error(
        "--set", "cpu.llamacpp.ctx_size=2048", "--set", "cpu.llamacpp.kv_unified=false"
    )
    assert "cpu.llamacpp: ctx_size 2048 split over 2 parallel slots leaves 1024 tokens" in error
    assert "or drop cpu.llamacpp.kv_unified: false" in error
