"""Edges of the GPU memory model that mutation testing showed no test pinned (issue 20).

By-hand figures only: `benchmarks/mutation.py --core vram` reruns these against each mutant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack, load_stack, parse_set_flags
from llmctl.plan import vram
from llmctl.plan.gguf import GgufFormatError, GgufHeader, SkippedArray, TensorInfo
from llmctl.plan.vram import (
    GIB,
    MIB,
    FitLevel,
    ModelShape,
    Plan,
    ServeSettings,
    VramNeed,
    compute_buffer_bytes,
    estimate,
    fit_report,
    kv_row_bytes,
    offload,
    plan,
    usable_bytes,
)

T4 = catalog.GPUS["t4"]


def llama_7b() -> ModelShape:
    return ModelShape.from_catalog(catalog.MODELS["llama-2-7b-chat"])


# --- usable memory -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "mib"),
    [  # nvidia-smi's total with ECC on, less the 256 MiB the driver keeps
        ("t4", 15360 - 256),
        ("l4", 23034 - 256),
        ("a10g", 23028 - 256),
        ("a100-40gb", 40960 - 256),
        ("h100", 81559 - 256),
    ],
)
def test_usable_memory_of_each_known_gpu(gpu: str, mib: int) -> None:
    assert usable_bytes(catalog.GPUS[gpu]) == mib * MIB


@pytest.mark.parametrize(("gib", "mib"), [(16, 15360 - 256), (10, 9600 - 256), (1, 960 - 256)])
def test_usable_memory_of_an_unknown_gpu_loses_ecc_and_the_driver_share(gib: int, mib: int) -> None:
    # 6.25% to ECC, then 256 MiB to the driver: 10 GiB -> 9600 MiB -> 9344 MiB
    gpu = catalog.GpuInfo("some-new-gpu", gib * GIB, "nvidia-some-new-gpu")
    assert usable_bytes(gpu) == mib * MIB


# --- KV cache types and settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kv_type", "row"),
    [  # a 4096-element row: f32/f16/bf16 per element, the rest per block of 32
        ("f32", 4096 * 4),
        ("f16", 4096 * 2),
        ("bf16", 4096 * 2),
        ("q8_0", 128 * 34),
        ("q5_1", 128 * 24),
        ("q5_0", 128 * 22),
        ("q4_1", 128 * 20),
        ("q4_0", 128 * 18),
        ("iq4_nl", 128 * 18),
    ],
)
def test_kv_row_bytes_of_each_cache_type(kv_type: str, row: int) -> None:
    assert kv_row_bytes(4096, kv_type) == row


def test_kv_row_rounds_up_to_whole_blocks() -> None:
    assert kv_row_bytes(33, "q8_0") == 2 * 34
    assert kv_row_bytes(32, "q8_0") == 34
    assert kv_row_bytes(1, "q4_0") == 18


def test_serve_settings_bounds() -> None:
    s = ServeSettings(1, 1)
    assert (s.ctx_per_request, s.parallel, s.kv_type, s.ngl) == (1, 1, "f16", -1)
    assert (s.flash_attn, s.kv_unified, s.ctx_size, s.n_ubatch) == (True, False, None, 512)
    for bad in ((0, 1), (1, 0), (-1, 4)):
        with pytest.raises(ValueError, match="^parallel and ctx_per_request must be positive$"):
            ServeSettings(*bad)
    with pytest.raises(ValueError, match="unknown KV cache type 'q3'"):
        ServeSettings(1, 1, kv_type="q3")


def test_slot_cells_and_layout() -> None:
    s = ServeSettings(2048, 4)
    assert (s.requested_ctx, s.cells_per_stream, s.kv_cells) == (8192, 2048, 8192)
    assert s.layout == "4 x 2048 tokens"
    u = ServeSettings(2048, 4, kv_unified=True)
    assert (u.requested_ctx, u.cells_per_stream, u.kv_cells) == (8192, 8192, 8192)
    assert u.layout == "4 slots sharing 8192 tokens"
    # below one pad unit, a slot still gets 256 cells; one token more is a second unit
    assert ServeSettings(1, 1).cells_per_stream == 256
    assert ServeSettings(257, 1).cells_per_stream == 512
    assert ServeSettings(256, 2, ctx_size=100).cells_per_stream == 256


def test_offload_by_ngl() -> None:
    m = llama_7b()
    assert offload(m, -1) == (32, True)
    assert offload(m, 33) == (32, True)  # above the block count: the output head too
    assert offload(m, 32) == (32, False)  # exactly the blocks: the head stays on the CPU
    assert offload(m, 0) == (0, False)
    assert offload(m, 5) == (5, False)


def test_partial_offload_takes_the_last_blocks() -> None:
    m = replace(llama_7b(), layer_bytes=tuple(range(1, 33)))
    need = estimate(m, ServeSettings(2048, 4, ngl=3))
    assert need.weights == 30 + 31 + 32
    assert need.compute > 0 and need.cuda_overhead == 320 * MIB
    assert need.llama_buffers == need.weights + need.kv_cache + need.compute
    assert need.total == need.llama_buffers + need.cuda_overhead


# --- the compute buffer --------------------------------------------------------------------


def shape(**kw: Any) -> ModelShape:
    base: dict[str, Any] = {
        "name": "m",
        "source": "test",
        "architecture": "llama",
        "quantization": "F16",
        "n_layers": 2,
        "n_embd": 64,
        "n_heads": 4,
        "n_kv_heads": 2,
        "head_dim_k": 16,
        "head_dim_v": 16,
        "n_ff": 256,
        "n_vocab": 100,
        "ctx_train": 512,
        "layer_bytes": (1, 1),
        "input_bytes": 0,
        "output_bytes": 0,
    }
    return ModelShape(**{**base, **kw})


def test_compute_buffer_when_n_ff_is_wide() -> None:
    # n_ff = 8 x n_embd: 4 n_ff (2048) > 3 n_ff + 4 n_embd (1792); flash attention, 1 x 512 cells
    m = shape(n_embd=64, n_ff=512)
    s = ServeSettings(512, 1)
    mask = 512 * 512 * 2
    ffn = 4 * 512 * 512 * 4
    assert compute_buffer_bytes(m, s) == mask + ffn


def test_compute_buffer_when_n_ff_is_narrow() -> None:
    # n_ff = 2 x n_embd: 3 n_ff + 4 n_embd (640) > 4 n_ff (512)
    m = shape(n_embd=64, n_ff=128)
    s = ServeSettings(512, 1)
    assert compute_buffer_bytes(m, s) == 512 * 512 * 2 + (3 * 128 + 4 * 64) * 512 * 4


def test_compute_buffer_when_attention_binds_without_flash_attention() -> None:
    # flash off: f32 mask, and the KQ scores (cells x ubatch x heads) make attention the peak
    m = shape(n_embd=64, n_ff=64, n_heads=4, n_kv_heads=2, head_dim_k=16)
    s = ServeSettings(1024, 1, flash_attn=False)
    cells, ub = 1024, 512
    mask = cells * ub * 4
    attention = (5 * 64 + 2 * 2 * 16) * ub * 4 + cells * ub * 4 * 4
    assert attention > max(4 * 64, 3 * 64 + 4 * 64) * ub * 4
    assert compute_buffer_bytes(m, s) == mask + attention


def test_compute_buffer_attention_phase_with_flash_attention() -> None:
    # a tiny feed-forward: the attention phase (5 n_embd + 2 KV width) binds
    m = shape(n_embd=64, n_ff=1, n_kv_heads=4, head_dim_k=64)
    s = ServeSettings(256, 1)
    assert compute_buffer_bytes(m, s) == 256 * 256 * 2 + (5 * 64 + 2 * 256) * 256 * 4


def test_compute_buffer_micro_batch_is_capped_by_the_cells() -> None:
    m = shape(n_embd=64, n_ff=512)
    small = ServeSettings(256, 1, n_ubatch=4096)  # 256 cells: the micro-batch is 256
    assert compute_buffer_bytes(m, small) == 256 * 256 * 2 + 4 * 512 * 256 * 4


def test_no_compute_buffer_without_offloaded_layers() -> None:
    need = estimate(llama_7b(), ServeSettings(2048, 4, ngl=0))
    assert (need.weights, need.kv_cache, need.compute, need.gpu_layers) == (0, 0, 0, 0)


# --- shapes from the catalog and from a header ---------------------------------------------


def test_catalog_shape_splits_the_file_by_parameter_counts() -> None:
    # 4,081,004,224 B over 6,738,415,616 params; token_embd and output 32000 x 4096 params each
    # at that rate: 79,381,477 B; the 32 blocks share the rest: (4,081,004,224 - 2 x 79,381,477)
    # // 32 = 122,570,039 B each (the GGUF header's real average is 121.8 MB); the output gets
    # what is left, so the three parts add up to the file.
    m = llama_7b()
    assert m.input_bytes == 79_381_477
    assert m.layer_bytes == (122_570_039,) * 32
    assert m.output_bytes == 4_081_004_224 - 79_381_477 - 32 * 122_570_039 == 79_381_499
    assert m.weight_bytes == 4_081_004_224
    assert (m.n_ff, m.n_vocab, m.head_dim_k, m.head_dim_v) == (11008, 32000, 128, 128)
    assert (m.source, m.architecture, m.quantization, m.ctx_train) == (
        "catalog",
        "llama",
        "Q4_K_M",
        4096,
    )


def test_catalog_shape_without_n_ff_assumes_four_times_n_embd() -> None:
    info = replace(catalog.MODELS["llama-2-7b-chat"], n_ff=0)
    assert ModelShape.from_catalog(info).n_ff == 4 * 4096


def header(metadata: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], int]]) -> GgufHeader:
    md = {"general.architecture": "llama", **metadata}
    return GgufHeader(
        source="/models/m.gguf",
        version=3,
        metadata=md,
        tensors=tuple(TensorInfo(n, s, 1, "F16", b) for n, s, b in tensors),
        data_offset=0,
        bytes_fetched=0,
    )


SHAPE_MD = {
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.attention.head_count": 4,
}


def test_header_takes_the_vocabulary_from_token_embd_when_metadata_lacks_it() -> None:
    h = header(
        SHAPE_MD,
        [
            ("token_embd.weight", (64, 320), 1000),
            ("output.weight", (64, 320), 500),
            ("blk.0.attn_q.weight", (64, 64), 10),
            ("blk.1.attn_q.weight", (64, 64), 20),
        ],
    )
    m = ModelShape.from_header(h)
    assert m.n_vocab == 320
    assert m.layer_bytes == (10, 20) and m.input_bytes == 1000 and m.output_bytes == 500
    # defaults when the header leaves them out
    assert (m.n_kv_heads, m.head_dim_k, m.head_dim_v) == (4, 16, 16)
    assert (m.n_ff, m.ctx_train, m.quantization, m.name) == (4 * 64, 0, "unknown", "m")
    assert m.source == "GGUF header of /models/m.gguf"


def test_header_vocabulary_from_the_token_list_then_metadata() -> None:
    tensors = [("token_embd.weight", (64,), 10), ("output.weight", (64, 5), 5)]
    assert (
        ModelShape.from_header(
            header({**SHAPE_MD, "tokenizer.ggml.tokens": ["a", "b", "c"]}, tensors)
        ).n_vocab
        == 3
    )
    # the metadata's vocab_size wins over the token list and the tensor's shape
    both = {**SHAPE_MD, "tokenizer.ggml.tokens": ["a"], "llama.vocab_size": 7}
    assert ModelShape.from_header(header(both, tensors)).n_vocab == 7
    # neither: 0
    assert ModelShape.from_header(header(SHAPE_MD, tensors)).n_vocab == 0


def test_header_block_tensors_beyond_the_block_count_are_not_layers() -> None:
    h = header(
        SHAPE_MD,
        [
            ("token_embd.weight", (64, 10), 1),
            ("output.weight", (64, 10), 2),
            ("blk.0.x", (1,), 3),
            ("blk.1.x", (1,), 4),
            ("blk.2.x", (1,), 50),
        ],
    )
    m = ModelShape.from_header(h)
    assert m.layer_bytes == (3, 4) and m.output_bytes == 2 + 50


@pytest.mark.parametrize(
    ("file_type", "name"), [(15, "Q4_K_M"), (1, "F16"), (9999, "file type 9999"), ("x", "unknown")]
)
def test_header_quantization_names(file_type: object, name: str) -> None:
    h = header(
        {**SHAPE_MD, "general.file_type": file_type},
        [("token_embd.weight", (64, 10), 1), ("output.weight", (64, 10), 1)],
    )
    assert ModelShape.from_header(h).quantization == name


# --- plans that do not fit -----------------------------------------------------------------


def test_a_model_too_big_for_the_gpu_at_any_setting() -> None:
    huge = replace(llama_7b(), layer_bytes=(GIB,) * 32)  # 32 GiB of weights on a 15 GiB T4
    p = plan(huge, T4, ServeSettings(2048, 4))
    assert (p.fits, p.max_parallel, p.max_ctx_per_request) == (False, 0, 0)
    report = fit_report(p)
    assert report.level is FitLevel.REFUSE
    assert "lower parallel" not in report.message
    assert "lower ctx_per_request" not in report.message
    assert report.message.endswith(
        ": use a q8_0 KV cache, or choose a bigger GPU or a smaller model."
    )


def need_of(total: int) -> VramNeed:
    return VramNeed(
        weights=total, kv_cache=0, compute=0, cuda_overhead=0, gpu_layers=1, output_on_gpu=True
    )


def refused(max_parallel: int, max_ctx: int, kv_type: str = "f16") -> str:
    p = Plan(
        model=llama_7b(),
        gpu=T4,
        settings=ServeSettings(2048, 4, kv_type=kv_type),
        need=need_of(2 * GIB),
        usable=GIB,
        max_parallel=max_parallel,
        max_ctx_per_request=max_ctx,
    )
    report = fit_report(p, ctx_name="c", par_name="p")
    assert report.level is FitLevel.REFUSE and report.plan is p
    return report.message


def test_refusal_names_every_fix_that_applies() -> None:
    assert refused(3, 1024) == (
        "llama-2-7b-chat (Q4_K_M) with 4 x 2048 tokens (f16 KV) on a t4 needs 2.00 GiB, more "
        "than the 1.00 GiB usable: lower p to 3, lower c to 1024, use a q8_0 KV cache, "
        "or choose a bigger GPU or a smaller model."
    )


def test_refusal_boundaries() -> None:
    assert "lower p to 1," in refused(1, 0)  # one slot still fits
    assert "lower p" not in refused(0, 512)
    assert "lower c to 256," in refused(0, 256)  # the smallest context llama.cpp gives a slot
    assert "lower c" not in refused(1, 0)
    assert "use a q8_0 KV cache" not in refused(1, 256, kv_type="q8_0")
    assert refused(0, 0, kv_type="q8_0").endswith(
        "usable: or choose a bigger GPU or a smaller model."
    )


def test_warn_and_ok_messages() -> None:
    def report(total: int) -> vram.FitReport:
        return fit_report(
            Plan(
                model=llama_7b(),
                gpu=T4,
                settings=ServeSettings(2048, 4, kv_unified=True),
                need=need_of(total),
                usable=100 * GIB,
                max_parallel=8,
                max_ctx_per_request=4096,
            )
        )

    warn = report(91 * GIB)  # 9% to spare
    assert warn.level is FitLevel.WARN
    assert warn.message == (
        "llama-2-7b-chat (Q4_K_M) with 4 slots sharing 8192 tokens (f16 KV, unified) on a t4 "
        "needs 91.00 GiB of 100.00 GiB usable, leaving only 9.00 GiB (9%): lower parallel or "
        "ctx_per_request to keep a margin for allocation spikes."
    )
    assert report(90 * GIB).level is FitLevel.OK  # exactly 10% to spare is enough
    ok = report(50 * GIB)
    assert ok.message.endswith("needs 50.00 GiB of 100.00 GiB usable, 50.00 GiB (50%) to spare.")
    fits_exactly = report(100 * GIB)
    assert fits_exactly.plan is not None and fits_exactly.plan.fits
    assert fits_exactly.level is FitLevel.WARN


def test_headroom() -> None:
    p = Plan(
        model=llama_7b(),
        gpu=T4,
        settings=ServeSettings(1, 1),
        need=need_of(3 * GIB),
        usable=4 * GIB,
        max_parallel=1,
        max_ctx_per_request=256,
    )
    assert (p.fits, p.headroom, p.headroom_fraction) == (True, GIB, 0.25)


def test_gib_text() -> None:
    assert vram.gib(GIB) == "1.00 GiB"
    assert vram.gib(3 * GIB // 2) == "1.50 GiB"
    assert vram.gib(0) == "0.00 GiB"


def test_largest_search() -> None:
    assert vram._largest(1, 256, lambda n: n <= 10) == 10
    assert vram._largest(1, 256, lambda n: True) == 256
    assert vram._largest(1, 256, lambda n: n <= 1) == 1
    assert vram._largest(1, 256, lambda n: False) == 0
    assert vram._largest(1, 2, lambda n: n <= 2) == 2
    assert vram._largest(5, 5, lambda n: True) == 5


def test_max_values_are_the_largest_that_fit() -> None:
    p = plan(llama_7b(), T4, ServeSettings(2048, 4))
    # a 2048-token slot costs 1 GiB of KV cache: 10 fit on a T4 (see test_vram.py)
    assert p.max_parallel == 10
    assert p.max_ctx_per_request == 5376
    assert p.need == estimate(llama_7b(), ServeSettings(2048, 4))


def test_header_reads_every_shape_key() -> None:
    md = {
        **SHAPE_MD,
        "llama.attention.head_count_kv": [2, 4, 2],  # per layer: the largest sizes the cache
        "llama.attention.key_length": 24,
        "llama.attention.value_length": 20,
        "llama.feed_forward_length": 200,
        "llama.context_length": 2048,
        "llama.vocab_size": 99,
    }
    m = ModelShape.from_header(
        header(md, [("token_embd.weight", (64, 320), 1), ("output.weight", (64, 320), 1)]),
        name="given",
    )
    assert (m.n_layers, m.n_embd, m.n_heads, m.n_kv_heads) == (2, 64, 4, 4)
    assert (m.head_dim_k, m.head_dim_v, m.n_ff, m.ctx_train, m.n_vocab) == (24, 20, 200, 2048, 99)
    assert (m.name, m.architecture) == ("given", "llama")


def test_header_name_comes_from_the_file_name() -> None:
    h = replace(
        header(SHAPE_MD, [("output.weight", (64, 10), 1)]),
        source="https://huggingface.co/x/resolve/main/My-Model.Q4_K_M.gguf?download=true",
    )
    assert ModelShape.from_header(h).name == "My-Model.Q4_K_M"


@pytest.mark.parametrize(
    ("md", "key"),
    [
        ({"llama.embedding_length": 64, "llama.attention.head_count": 4}, "llama.block_count"),
        ({**SHAPE_MD, "llama.block_count": True}, "llama.block_count"),
        ({**SHAPE_MD, "llama.embedding_length": "64"}, "llama.embedding_length"),
        ({**SHAPE_MD, "llama.attention.head_count_kv": 2.5}, "llama.attention.head_count_kv"),
    ],
)
def test_header_without_a_usable_shape_key_is_refused(md: dict[str, Any], key: str) -> None:
    with pytest.raises(GgufFormatError) as error:
        ModelShape.from_header(header(md, [("output.weight", (64, 10), 1)]))
    assert error.value.message == f"/models/m.gguf: GGUF metadata has no usable {key}"
    assert error.value.hint == "llmctl plans llama-family models whose header names their shape"


def test_tied_embedding_puts_a_second_copy_of_token_embd_on_the_gpu() -> None:
    # no output.weight: llama.cpp loads token_embd again as the output head, next to the norm
    h = header(
        SHAPE_MD,
        [
            ("token_embd.weight", (64, 320), 1000),
            ("output_norm.weight", (64,), 7),
            ("blk.0.x", (1,), 3),
            ("blk.1.x", (1,), 4),
        ],
    )
    m = ModelShape.from_header(h)
    assert (m.input_bytes, m.output_bytes) == (1000, 7 + 1000)
    assert estimate(m, ServeSettings(256, 1)).weights == 3 + 4 + 7 + 1000
    # the file holds the embedding once
    assert m.tied_embedding and m.weight_bytes == 3 + 4 + 7 + 1000


def test_untied_output_head_is_counted_once() -> None:
    h = header(
        SHAPE_MD,
        [
            ("token_embd.weight", (64, 320), 1000),
            ("output_norm.weight", (64,), 7),
            ("output.weight", (64, 320), 900),
            ("blk.0.x", (1,), 3),
            ("blk.1.x", (1,), 4),
        ],
    )
    m = ModelShape.from_header(h)
    assert (m.input_bytes, m.output_bytes) == (1000, 7 + 900)
    assert not m.tied_embedding and m.weight_bytes == 1000 + 907 + 7
    assert m.warnings == ()  # its size is unknown: nothing to warn about


def test_a_cut_short_file_is_warned_about() -> None:
    tensors = [("token_embd.weight", (64, 10), 100), ("output.weight", (64, 10), 50)]
    whole = replace(header(SHAPE_MD, tensors), data_offset=1000, file_size=1150)
    assert ModelShape.from_header(whole).warnings == ()
    short = replace(whole, file_size=1_000)
    assert ModelShape.from_header(short).warnings == (
        "/models/m.gguf is 150 bytes shorter than the tensor data its header describes: a "
        "cut-short download, which llama-server will not load",
    )


def test_searches_keep_llama_cpp_default_split() -> None:
    # the Helm example: -c 4096 over 8 slots, 512 tokens each. The parallel search keeps 512
    # tokens per slot; the context search keeps 8 slots; both drop the fixed -c.
    m = ModelShape.from_catalog(catalog.MODELS["llama-2-13b-chat"])
    helm = plan(m, T4, ServeSettings(2048, 8, ctx_size=4096))
    assert helm.max_parallel == plan(m, T4, ServeSettings(512, 1)).max_parallel
    assert helm.max_ctx_per_request == plan(m, T4, ServeSettings(256, 8)).max_ctx_per_request
    assert (helm.max_parallel, helm.max_ctx_per_request) == (18, 1024)


# --- check_gpu_fit reads the Stack -----------------------------------------------------------


StackWith = Callable[..., Stack]


@pytest.fixture
def stack_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StackWith:
    """`stack_with("key=value", ...)`: the Stack those --set flags give, with no config file."""
    monkeypatch.chdir(tmp_path)  # no ./llmctl.yaml

    def load(*sets: str) -> Stack:
        return load_stack(env={}, flags=parse_set_flags(list(sets))).stack

    return load


def test_check_gpu_fit_passes_every_llama_cpp_setting(stack_with: StackWith) -> None:
    stack = stack_with(
        "gpu.model.name=llama-2-7b",  # an alias of llama-2-7b-chat
        "gpu.llamacpp.ngl=20",
        "gpu.llamacpp.flash_attn=false",
        "gpu.llamacpp.ctx_per_request=2048",
        "gpu.llamacpp.parallel=4",
        "gpu.llamacpp.ctx_size=4096",  # shorter than 4 x 2048: the cache is unified
    )
    report = vram.check_gpu_fit(stack, CloudName.AZURE)
    assert report.plan is not None
    assert report.plan.settings == ServeSettings(
        ctx_per_request=2048,
        parallel=4,
        kv_type="f16",
        flash_attn=False,
        ngl=20,
        kv_unified=True,
        ctx_size=4096,
    )
    assert report.plan.model == llama_7b()
    assert report.plan.gpu == T4
    assert report.level is FitLevel.OK
    assert report.message.startswith(
        "azure: llama-2-7b-chat (Q4_K_M) with 4 slots sharing 4096 tokens (f16 KV, unified) "
        "on a t4 needs "
    )


def test_check_gpu_fit_refusal_names_the_config_keys(stack_with: StackWith) -> None:
    stack = stack_with(
        "gpu.model.name=llama-2-13b-chat",
        "gpu.llamacpp.ctx_per_request=4096",
        "gpu.llamacpp.parallel=8",
    )
    report = vram.check_gpu_fit(stack, CloudName.AWS)
    assert report.level is FitLevel.REFUSE and report.plan is not None
    p = report.plan
    assert f"lower gpu.llamacpp.parallel to {p.max_parallel}, " in report.message
    assert f"lower gpu.llamacpp.ctx_per_request to {p.max_ctx_per_request}, " in report.message


def test_check_gpu_fit_unknown_model_names_its_uri(stack_with: StackWith) -> None:
    stack = stack_with("gpu.model.name=my-own-model")
    report = vram.check_gpu_fit(stack, CloudName.GCP)
    assert report.message == (
        "model 'my-own-model' is not in llmctl's catalog, so its GPU memory was not checked: "
        f"run `llmctl plan --model {stack.gpu.model.uri}` to read its GGUF header. The router "
        f"sizes it by gpu.model.parameters, now {stack.gpu.model.parameters:,} (inherited from "
        "the default model unless you set it): set it to the model's own count."
    )


def test_header_vocabulary_from_a_token_list_read_as_its_length() -> None:
    # the reader skips long arrays and keeps their length
    tokens = SkippedArray(item_type=8, length=500)
    tensors = [("token_embd.weight", (64,), 10), ("output.weight", (64, 5), 5)]
    md = {**SHAPE_MD, "tokenizer.ggml.tokens": tokens}
    assert ModelShape.from_header(header(md, tensors)).n_vocab == 500
    # something that is neither: no vocabulary
    md = {**SHAPE_MD, "tokenizer.ggml.tokens": "not a list"}
    assert ModelShape.from_header(header(md, tensors)).n_vocab == 0
    # token_embd's shape wins over the token list
    wide = [("token_embd.weight", (64, 320), 10), ("output.weight", (64, 5), 5)]
    md = {**SHAPE_MD, "tokenizer.ggml.tokens": ["a", "b"]}
    assert ModelShape.from_header(header(md, wide)).n_vocab == 320


def test_header_name_of_a_bare_file_name() -> None:
    h = replace(header(SHAPE_MD, [("output.weight", (64, 10), 1)]), source="tiny.gguf")
    assert ModelShape.from_header(h).name == "tiny"


def test_fits_includes_the_last_byte() -> None:
    m, s = llama_7b(), ServeSettings(2048, 4)
    total = estimate(m, s).total
    assert vram._fits(m, total, s)
    assert not vram._fits(m, total - 1, s)


def test_plan_figures_are_whole_numbers() -> None:
    p = plan(llama_7b(), T4, ServeSettings(2048, 4))
    assert type(p.max_parallel) is int and type(p.max_ctx_per_request) is int
    assert type(vram._largest(1, 256, lambda n: n <= 10)) is int


def test_estimate_says_whether_the_output_head_is_on_the_gpu() -> None:
    assert estimate(llama_7b(), ServeSettings(2048, 4)).output_on_gpu is True
    assert estimate(llama_7b(), ServeSettings(2048, 4, ngl=32)).output_on_gpu is False
