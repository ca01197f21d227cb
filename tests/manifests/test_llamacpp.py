"""Every rendered llama-server flag exists in the pinned release, with a value it accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmctl.config import LlamaCpp, Stack
from llmctl.manifests.llamacpp import server_args

HELP = Path(__file__).resolve().parents[1] / "data" / "llama-server-help.txt"
STACK = Stack()


def _known_flags() -> set[str]:
    flags: set[str] = set()
    for line in HELP.read_text().splitlines():
        head = line[:40]
        if head.startswith("-"):
            flags.update(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", head))
    return flags


KNOWN = _known_flags()


def test_the_help_file_lists_the_flags_we_rely_on() -> None:
    # Guards the parser above: an empty set would make the next test pass vacuously.
    assert {"--ctx-size", "--parallel", "--flash-attn", "--n-gpu-layers", "--metrics"} <= KNOWN
    assert len(KNOWN) > 150


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_every_rendered_flag_is_in_the_pinned_release(tier: str) -> None:
    settings = getattr(STACK, tier)
    args = server_args(settings.model, settings.llamacpp)
    flags = [a for a in args if a.startswith("-")]
    unknown = [f for f in flags if f not in KNOWN]
    assert not unknown, f"llama-server of the pinned release has no {unknown}"


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_gpu_tier_offloads_every_layer_with_flash_attention_and_sized_slots() -> None:
    args = server_args(STACK.gpu.model, STACK.gpu.llamacpp)
    assert _value(args, "--n-gpu-layers") == "all"  # the pinned release's word for -1
    assert _value(args, "--flash-attn") == "on"  # takes a value since b6xxx
    parallel = int(_value(args, "--parallel"))
    assert int(_value(args, "--ctx-size")) // parallel >= STACK.gpu.llamacpp.ctx_per_request >= 2048


def test_flash_attn_values_are_the_ones_the_release_accepts() -> None:
    line = next(line for line in HELP.read_text().splitlines() if "--flash-attn" in line[:40])
    accepted = set(re.search(r"\[([a-z|]+)\]", line).group(1).split("|"))  # type: ignore[union-attr]
    for flash in (True, False):
        settings = LlamaCpp(ngl=0, flash_attn=flash, ctx_per_request=512, parallel=1)
        assert _value(server_args(STACK.cpu.model, settings), "--flash-attn") in accepted


def test_split_slots_render_no_unified_flag() -> None:
    assert "--kv-unified" not in server_args(STACK.gpu.model, STACK.gpu.llamacpp)


def test_unified_kv_lets_one_request_use_the_whole_context() -> None:
    settings = LlamaCpp(ngl=-1, flash_attn=True, ctx_per_request=4096, ctx_size=4096, parallel=8)
    args = server_args(STACK.gpu.model, settings)
    assert "--kv-unified" in args and _value(args, "--ctx-size") == "4096"
