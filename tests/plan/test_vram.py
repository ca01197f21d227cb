"""The VRAM arithmetic: hand-computed cases, and llama-server's own figures on CPU."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack, load_stack, parse_set_flags
from llmctl.plan.gguf import read_gguf_header
from llmctl.plan.vram import (
    MIB,
    FitLevel,
    ModelShape,
    ServeSettings,
    check_gpu_fit,
    compute_buffer_bytes,
    estimate,
    kv_cache_bytes,
    plan,
)
from tests.plan.test_gguf import SMOLLM2
from tests.support.cli import python_on_src
from tests.support.gguf_headers import write_q4_k_m_header
from tests.support.gguf_models import LLAMA2_7B, TINY, LlamaShape, write_llama_gguf
from tests.support.tools import require_tool

GIB = 1024**3
T4 = catalog.GPUS["t4"]
T4_USABLE = 15104 * MIB  # nvidia-smi's 15360 MiB (ECC on) less 256 MiB the driver keeps


def llama_7b() -> ModelShape:
    return ModelShape.from_catalog(catalog.MODELS["llama-2-7b-chat"])


def test_llama2_7b_q4_k_m_on_a_t4_by_hand() -> None:
    # llmctl's GPU default: 4 slots x 2048 tokens, f16 KV cache, flash attention, all layers.
    p = plan(llama_7b(), T4, ServeSettings(ctx_per_request=2048, parallel=4))
    s = p.settings
    assert (s.kv_cells, s.cells_per_stream, s.ctx_per_slot) == (8192, 2048, 2048)

    # Weights, from the catalog's file size 4,081,004,224 B and 6,738,415,616 parameters:
    #   bytes/parameter = 0.605633...; token_embd = 32000 x 4096 params x 0.605633 = 79,381,477 B,
    #   stays in host memory. The rest, 4,081,004,224 - 79,381,477 = 4,001,622,747 B, is on the
    #   GPU (3816.2 MiB; the real tensors of this file add up to 3820.9 MiB, see the next test).
    assert p.need.weights == 4_001_622_747
    # KV cache: 32 layers x 8192 cells x (K + V) x 32 KV heads x 128 x 2 B (f16)
    #   = 32 x 8192 x 2 x 4096 x 2 = 4,294,967,296 B = 4 GiB.
    assert p.need.kv_cache == 4 * GIB
    # Compute buffer, flash attention: mask 2048 cells x 512 tokens x 2 B = 2,097,152
    #   + max(FFN max(4 x 11008, 3 x 11008 + 4 x 4096) = 49,408 floats x 512 x 4 B = 101,187,584,
    #   attention (5 x 4096 + 2 x 4096) x 512 x 4 = 58,720,256) = 103,284,736 B (98.5 MiB).
    assert p.need.compute == 2_097_152 + 101_187_584 == 103_284_736
    # CUDA overhead 320 MiB = 335,544,320. Total = 4,001,622,747 + 4,294,967,296 + 103,284,736
    #   + 335,544,320 = 8,735,419,099 B (8.14 GiB).
    assert p.need.total == 8_735_419_099
    # T4 usable: 15104 MiB = 15,837,691,904 B; headroom 7,102,272,805 B (44.8%).
    assert p.usable == 15_837_691_904
    assert p.fits and p.headroom == 7_102_272_805
    # Each more 2048-token slot adds 32 x 2048 x 16384 B = 1 GiB of KV cache:
    #   + 6 GiB = 15,177,870,043 fits (10 slots), + 7 GiB = 16,251,611,867 does not.
    assert p.max_parallel == 10
    # At 4 slots and 5376 tokens each: KV 32 x 21504 cells x 16384 B = 11,274,289,152, mask
    #   5376 x 512 x 2 = 5,505,024; total 4,001,622,747 + 11,274,289,152 + 5,505,024
    #   + 101,187,584 + 335,544,320 = 15,718,148,827 fits; at 5632 tokens: 16,255,281,883 not.
    assert p.max_ctx_per_request == 5376


def test_llama2_7b_q4_k_m_from_its_gguf_header(tmp_path: Path) -> None:
    # The tensor table of a Q4_K_M file (llama.cpp's recipe: Q4_K, with attn_v and ffn_down in
    # Q6_K in 16 of the 32 layers, output Q6_K, norms F32). Rows of 4096: Q4_K 16 blocks x 144 B
    # = 2304 B, Q6_K 16 x 210 = 3360 B; rows of 11008: Q4_K 43 x 144 = 6192, Q6_K 43 x 210 = 9030.
    #   Q4 layer: 4 x (4096 x 2304) + 3 x (11008 x 2304 = 4096 x 6192) + 2 x 4096 x 4
    #           = 37,748,736 + 76,087,296 + 32,768 = 113,868,800
    #   Q6 layer: + (4096 x 3360 - 4096 x 2304) + (4096 x 9030 - 4096 x 6192) = 129,818,624
    #   output 32000 x 3360 = 107,520,000, output_norm 16,384
    #   GPU: 16 x 113,868,800 + 16 x 129,818,624 + 107,520,000 + 16,384 = 4,006,535,168 B
    #        = 3820.93 MiB; token_embd 32000 x 2304 = 73,728,000 B (70.31 MiB) stays on the CPU.
    header = read_gguf_header(write_q4_k_m_header(tmp_path / "7b.gguf", LLAMA2_7B))
    assert header.bytes_fetched < 1024 * 1024  # the header alone; no 4 GB download
    shape = ModelShape.from_header(header)
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.head_dim_k) == (32, 32, 32, 128)
    assert (shape.n_ff, shape.n_vocab, shape.quantization) == (11008, 32000, "Q4_K_M")
    assert shape.input_bytes == 73_728_000
    need = estimate(shape, ServeSettings(ctx_per_request=2048, parallel=4))
    assert need.weights == 4_006_535_168
    # The catalog's estimate of the same file is within 0.2%.
    catalog_weights = estimate(llama_7b(), ServeSettings(2048, 4)).weights
    assert abs(catalog_weights - need.weights) / need.weights < 0.002


def test_q8_0_kv_cache_and_partial_offload() -> None:
    m = llama_7b()
    # q8_0 rows: 4096 / 32 blocks x 34 B = 4352 B; 32 x 8192 x 2 x 4352 = 2,281,701,376.
    assert kv_cache_bytes(m, ServeSettings(2048, 4, kv_type="q8_0")) == 2_281_701_376
    # -ngl 16: the last 16 blocks, no output head, half the KV cache.
    need = estimate(m, ServeSettings(2048, 4, ngl=16))
    assert need.gpu_layers == 16 and not need.output_on_gpu
    assert need.weights == 16 * m.layer_bytes[0]
    assert need.kv_cache == 2 * GIB
    # -ngl 0: nothing of the model on the GPU.
    none = estimate(m, ServeSettings(2048, 4, ngl=0))
    assert (none.weights, none.kv_cache, none.compute) == (0, 0, 0)


def test_helm_example_13b_on_a_t4() -> None:
    # The Helm issue's values: ctx_size 4096 split over 8 slots leaves 512 tokens per request.
    m = ModelShape.from_catalog(catalog.MODELS["llama-2-13b-chat"])
    helm = plan(m, T4, ServeSettings(ctx_per_request=2048, parallel=8, ctx_size=4096))
    assert helm.settings.ctx_per_slot == 512
    # KV: 40 layers x 4096 cells x 2 x 5120 x 2 B = 1,677,721,600 x 2 = 3.125 GiB: it fits...
    assert helm.need.kv_cache == 3_355_443_200
    assert helm.fits
    # ...but giving each of the 8 requests 2048 tokens needs 4 x the KV cache (12.5 GiB): no.
    full = plan(m, T4, ServeSettings(ctx_per_request=2048, parallel=8))
    assert full.need.kv_cache == 4 * 3_355_443_200
    assert not full.fits
    assert full.max_parallel < 8 and full.max_ctx_per_request < 2048
    # The answers are consistent: the largest values fit and one step more does not.
    for n, fits in ((full.max_parallel, True), (full.max_parallel + 1, False)):
        assert plan(m, T4, ServeSettings(2048, n)).fits is fits
    for c, fits in ((full.max_ctx_per_request, True), (full.max_ctx_per_request + 256, False)):
        assert plan(m, T4, ServeSettings(c, 8)).fits is fits


def test_slot_context_rounds_up_like_llama_cpp() -> None:
    # llama.cpp: n_ctx_seq = pad(n_ctx / n_seq, 256): -c 1000 -np 3 -> 512 cells per slot.
    s = ServeSettings(ctx_per_request=256, parallel=3, ctx_size=1000)
    assert (s.cells_per_stream, s.kv_cells) == (512, 1536)
    s = ServeSettings(ctx_per_request=256, parallel=4, ctx_size=3000)
    assert (s.cells_per_stream, s.kv_cells) == (768, 3072)
    s = ServeSettings(ctx_per_request=256, parallel=3, ctx_size=4096, kv_unified=True)
    assert (s.cells_per_stream, s.kv_cells, s.ctx_per_slot) == (4096, 4096, 4096)


# ---------------------------------------------------------------------------------------------
# check_gpu_fit, the check `llmctl render` runs


def stack_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *sets: str) -> Stack:
    monkeypatch.chdir(tmp_path)  # no ./llmctl.yaml
    return load_stack(env={}, flags=parse_set_flags(list(sets))).stack


def test_check_gpu_fit_levels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = stack_with(monkeypatch, tmp_path)
    for cloud in CloudName:
        report = check_gpu_fit(default, cloud)
        assert report.level is FitLevel.OK, report.message
        assert report.message.startswith(f"{cloud.value}: llama-2-7b-chat")
    # 10 slots of 2048 tokens fit a T4 with 4% to spare: a warning.
    tight = stack_with(monkeypatch, tmp_path, "gpu.llamacpp.parallel=10")
    report = check_gpu_fit(tight, CloudName.AWS)
    assert report.level is FitLevel.WARN
    assert "leaving only" in report.message and "gpu.llamacpp.parallel" in report.message
    # 13B with 8 x 4096 tokens: refused, with the values that would fit.
    big = stack_with(
        monkeypatch,
        tmp_path,
        "gpu.model.name=llama-2-13b-chat",
        "gpu.llamacpp.ctx_per_request=4096",
        "gpu.llamacpp.parallel=8",
    )
    report = check_gpu_fit(big, CloudName.GCP)
    assert report.level is FitLevel.REFUSE
    assert report.plan is not None
    assert f"lower gpu.llamacpp.parallel to {report.plan.max_parallel}" in report.message
    assert "q8_0" in report.message
    # A g5 (A10G, 24 GB) has room where the T4 has not.
    on_a10g = stack_with(
        monkeypatch,
        tmp_path,
        "gpu.model.name=llama-2-13b-chat",
        "gpu.llamacpp.parallel=8",
        "gpu.llamacpp.ctx_per_request=1024",
        "gpu.instanceTypes.aws=g5.xlarge",
    )
    assert check_gpu_fit(on_a10g, CloudName.AWS).level is FitLevel.OK
    assert check_gpu_fit(on_a10g, CloudName.AZURE).level is not FitLevel.OK


def test_check_gpu_fit_unknown_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stack = stack_with(monkeypatch, tmp_path, "gpu.model.name=my-own-model")
    report = check_gpu_fit(stack, CloudName.AWS)
    assert report.level is FitLevel.UNKNOWN and report.plan is None
    assert "not in llmctl's catalog" in report.message and "llmctl plan --model" in report.message


# ---------------------------------------------------------------------------------------------
# Against the real llama-server (CPU): its log states the KV cache and compute buffer sizes.


def llama_server_log(model: Path, *args: str) -> str:
    """Start llama-server, read its log until it listens (or exits), stop it."""
    binary = require_tool("llama-server", "LLAMA_SERVER_BIN")
    cmd = [
        binary,
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "-lv",
        "4",
        "-fit",
        "off",
        "-t",
        "1",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "sched_reserve: graph" in line or "listening on" in line:
                break
            if time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    return "".join(lines)


def logged_mib(log: str, pattern: str) -> float:
    match = re.search(pattern + r"\s*=\s*([\d.]+) MiB", log)
    assert match, f"no {pattern!r} line in llama-server's log:\n{log[-3000:]}"
    return float(match.group(1))


CALIBRATION = {
    "tiny": TINY,
    "gqa": LlamaShape(
        n_layers=2, n_embd=512, n_heads=8, n_kv_heads=2, n_ff=2048, extra_pieces=2000
    ),
    "wide": LlamaShape(
        n_layers=2, n_embd=1024, n_heads=16, n_kv_heads=16, n_ff=4096, extra_pieces=500
    ),
}


@pytest.fixture(scope="module")
def calibration_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vram")
    return {
        name: write_llama_gguf(d / f"{name}.gguf", shape) for name, shape in CALIBRATION.items()
    }


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("model", "ctx", "np_", "fa", "kv", "unified"),
    [
        ("tiny", 4096, 4, "on", "f16", False),
        ("tiny", 1000, 3, "on", "f16", False),
        ("gqa", 4096, 1, "off", "f16", False),
        ("gqa", 4096, 4, "on", "q8_0", False),
        ("wide", 4096, 2, "off", "f16", False),
        ("wide", 4096, 3, "on", "f16", True),
        ("smollm2", 4096, 2, "on", "f16", False),
        ("smollm2", 4096, 2, "on", "q8_0", False),
        ("smollm2", 8192, 4, "off", "f16", False),
    ],
)
def test_kv_and_compute_match_llama_server(
    calibration_models: dict[str, Path],
    model: str,
    ctx: int,
    np_: int,
    fa: str,
    kv: str,
    unified: bool,
) -> None:
    path = SMOLLM2 if model == "smollm2" else calibration_models[model]
    header = read_gguf_header(path)
    shape = ModelShape.from_header(header)
    settings = ServeSettings(
        ctx_per_request=256,
        parallel=np_,
        ctx_size=ctx,
        kv_type=kv,
        flash_attn=fa == "on",
        kv_unified=unified,
    )
    args = ["-c", str(ctx), "-np", str(np_), "-fa", fa, "-ctk", kv, "-ctv", kv]
    log = llama_server_log(path, *args, "-kvu" if unified else "-no-kvu")

    # The KV cache: exact, to the 0.01 MiB llama.cpp prints.
    assert logged_mib(log, r"llama_kv_cache: size") == pytest.approx(
        kv_cache_bytes(shape, settings) / MIB, abs=0.005
    )
    # The compute buffer: llama.cpp's allocator reuses freed tensors, so its peak is not a plain
    # sum; the formula is an upper bound at most two n_embd x n_ubatch f32 tensors above it.
    measured = logged_mib(log, r"CPU compute buffer size")
    predicted = compute_buffer_bytes(shape, settings) / MIB
    slack = 2 * shape.n_embd * 512 * 4 / MIB
    assert predicted - slack - 0.1 <= measured <= predicted + 0.1
    # The weights: on CPU every tensor is in the mapped model buffer.
    assert logged_mib(log, r"CPU_Mapped model buffer size") == pytest.approx(
        header.tensor_bytes / MIB, abs=0.005
    )


def test_render_check_stays_light() -> None:
    # `llmctl render` calls check_gpu_fit: it must not pull in gguf or numpy.
    code = (
        "import sys\n"
        "from llmctl.catalog import CloudName\n"
        "from llmctl.config import Stack\n"
        "from llmctl.plan.vram import check_gpu_fit\n"
        "assert check_gpu_fit(Stack(), CloudName.AWS).level == 'ok'\n"
        "print(sorted(m for m in ('gguf', 'numpy') if m in sys.modules))\n"
    )
    out = python_on_src(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
