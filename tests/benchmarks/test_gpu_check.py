"""The GPU check (benchmarks/gpu/, issue 17): its parts, and its whole path on the CPU.

A GPU machine is at hand only now and then, for minutes, with no network; the check must work
the first time it runs there. So CI runs `benchmarks/gpu/run.sh --cpu-selftest`, which goes
through every step with tiny models and the CPU llama-server, and checks the figures it writes.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from benchmarks.gpu import build as builds
from benchmarks.gpu import load, memory, run

from llmctl.config import Stack
from llmctl.manifests import llamacpp
from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]

# --- llama-server's log ---------------------------------------------------------------------

# As llama-server 0.3.36's sources print them at -lv 4 (the CPU lines were seen here).
GPU_LOG = """\
0.00.029.100 I load_tensors: offloaded 33/33 layers to GPU
0.00.029.143 I load_tensors:   CPU_Mapped model buffer size =    70.31 MiB
0.00.029.150 I load_tensors:        CUDA0 model buffer size =  3820.93 MiB
0.00.034.951 I llama_kv_cache:      CUDA0 KV buffer size =   512.00 MiB
0.00.081.039 I llama_kv_cache: size =  512.00 MiB (  1024 cells,  32 layers,  4/4 seqs), K (f16): \
256.00 MiB, V (f16):  256.00 MiB
0.00.088.100 I sched_reserve:      CUDA0 compute buffer size =   300.00 MiB
0.00.088.168 I sched_reserve:      CUDA0 compute buffer size =   312.01 MiB
0.00.088.169 I sched_reserve:  CUDA_Host compute buffer size =    24.02 MiB
"""


def test_log_buffers_reads_the_gpu_lines_and_the_last_of_repeated_ones() -> None:
    buffers = memory.log_buffers(GPU_LOG, memory.GPU_DEVICES)
    mib = 1024**2
    assert buffers == {
        "weights": round(3820.93 * mib),
        "kv_cache": 512 * mib,
        "compute": round(312.01 * mib),  # the last compute line of CUDA0, not the dry run's
    }
    assert memory.kv_cells(GPU_LOG) == 1024
    # On the CPU self-test the host buffers are the ones that count.
    assert memory.log_buffers(GPU_LOG, memory.CPU_DEVICES) == {"weights": round(70.31 * mib)}


def test_compare_gives_the_relative_error_of_each_term() -> None:
    p = memory.Prediction(
        weights=110,
        kv_cache=100,
        compute=50,
        cuda_overhead=40,
        llama_buffers=260,
        total=300,
        layout="4 x 2048 tokens",
    )
    rows = {
        r["term"]: r
        for r in memory.compare(p, {"weights": 100, "kv_cache": 100, "compute": 40}, process=None)
    }
    assert rows["weights"]["relative_error"] == pytest.approx(0.10)
    assert rows["kv_cache"]["relative_error"] == 0
    assert rows["compute"]["relative_error"] == pytest.approx(0.25)
    assert rows["llama_buffers"]["measured_bytes"] == 240
    assert rows["total"]["measured_bytes"] is None and rows["total"]["relative_error"] is None


# --- the overlay's flags --------------------------------------------------------------------


def test_server_command_is_the_overlays_with_only_address_model_and_alias_replaced() -> None:
    stack = Stack()
    container = run.overlay_container(stack)
    argv = run.server_command(container, Path("/b/llama-server"), Path("/m/x.gguf"), "xa", 4321)
    # The rest comes from the project's own code, not a copy of it.
    expected = llamacpp.server_args(stack.gpu.model, stack.gpu.llamacpp)
    assert argv[0] == "/b/llama-server"
    assert len(argv) == len(expected) + 1
    for name, value in (
        ("--host", "127.0.0.1"),
        ("--port", "4321"),
        ("--model", "/m/x.gguf"),
        ("--alias", "xa"),
    ):
        assert argv[argv.index(name) + 1] == value
    untouched = {"--host", "--port", "--model", "--alias"}
    pairs = dict(zip(expected[::2], expected[1::2], strict=False))
    for flag, value in pairs.items():
        if flag not in untouched and flag.startswith("-") and not value.startswith("-"):
            assert argv[argv.index(flag) + 1] == value, flag


def test_a_wrapper_command_runs_this_machines_binary() -> None:
    container = {
        "command": ["sh", "-c", 'exec /app/llama-server "$@"', "--"],
        "args": ["--port", "8080", "--model", "/models/a.gguf"],
    }
    argv = run.server_command(container, Path("/b/llama-server"), Path("/m.gguf"), "a", 9)
    assert argv == [
        "sh",
        "-c",
        'exec /b/llama-server "$@"',
        "--",
        "--port",
        "9",
        "--model",
        "/m.gguf",
    ]


def test_the_router_config_keeps_the_overlays_limits_with_one_local_gpu_backend() -> None:
    rendered = run.overlay_router_config(Stack())
    case = run.model_cases(True)[1]
    config = run.router_config(rendered, case, "http://127.0.0.1:5", slots=4)
    assert config["limits"] == rendered["limits"]
    assert [b["url"] for b in config["backends"]] == ["http://127.0.0.1:5"]
    assert config["backends"][0]["tier"] == "gpu"
    assert config["models"][0]["name"] == case.alias


# --- the build ------------------------------------------------------------------------------


def test_arch_of_reads_nvidia_smis_compute_capability() -> None:
    assert builds.arch_of("9.0") == "90"
    assert builds.arch_of(" 7.5\n") == "75"
    with pytest.raises(ValueError):
        builds.arch_of("N/A")


def test_the_cuda_build_command_names_cuda_the_architecture_and_both_tools() -> None:
    configure, compile_ = builds.cmake_commands(Path("/s"), Path("/b"), "90", 16)
    assert "-DGGML_CUDA=ON" in configure and "-DCMAKE_CUDA_ARCHITECTURES=90-real" in configure
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in configure  # it would download
    assert compile_[-4:] == ["llama-server", "llama-quantize", "-j", "16"]


def _fake_tool(path: Path, version_rc: int = 0, says: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{says}' >&2\nexit {version_rc}\n")
    path.chmod(0o755)


def test_a_carried_build_is_reused_only_when_both_tools_run(tmp_path: Path) -> None:
    root = tmp_path / "cuda" / "sm_90"
    assert not builds.carried(root)
    _fake_tool(root / "bin" / "llama-server")
    assert not builds.carried(root)  # llama-quantize missing
    _fake_tool(root / "bin" / "llama-quantize", version_rc=1)
    assert not builds.carried(root)  # it does not run
    # llama-quantize has no --version: its usage and exit code 1 show that it starts.
    _fake_tool(root / "bin" / "llama-quantize", version_rc=1, says="usage: llama-quantize [--help]")
    assert builds.carried(root)


def test_a_carried_build_archive_is_unpacked(tmp_path: Path) -> None:
    made = tmp_path / "made" / "sm_75"
    _fake_tool(made / "bin" / "llama-server")
    _fake_tool(made / "bin" / "llama-quantize")
    out = tmp_path / "cuda"
    out.mkdir()
    assert builds.pack(made, out) == [out / "sm_75.tar.xz"]
    assert builds.carried(out / "sm_75")


def test_a_build_too_big_for_one_file_comes_back_in_parts_that_are_joined(
    tmp_path: Path,
) -> None:
    made = tmp_path / "made" / "sm_90"
    _fake_tool(made / "bin" / "llama-server")
    _fake_tool(made / "bin" / "llama-quantize")
    (made / "bin" / "libggml-cuda.so").write_bytes(os.urandom(300_000))  # incompressible
    out = tmp_path / "cuda"
    out.mkdir()
    # Parts of 128 KiB here; 16 MiB less 4 KiB by default, what one file from $OUT may hold.
    assert builds.PART <= 16 * 1024**2
    assert builds.pack(made, out, max_parts=2, part_size=128 * 1024) == []  # 3 would be needed
    parts = builds.pack(made, out, part_size=128 * 1024)
    assert [p.name for p in parts] == ["sm_90.tar.xz.00", "sm_90.tar.xz.01", "sm_90.tar.xz.02"]
    assert all(p.stat().st_size <= 128 * 1024 for p in parts)
    assert builds.carried(out / "sm_90")
    assert (out / "sm_90" / "bin" / "libggml-cuda.so").stat().st_size == 300_000


def _tarball(path: Path, top: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in ("CMakeLists.txt", "ggml/CMakeLists.txt", "tools/server/x.cpp"):
            data = b"x"
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("top", ["llama.cpp", "llama_cpp_python-0.3.36/vendor/llama.cpp"])
def test_sources_are_found_in_the_sdist_and_in_the_trimmed_tarball(
    tmp_path: Path, top: str
) -> None:
    tarball = _tarball(tmp_path / "src.tar.gz", top)
    assert builds.source_dir(tarball, tmp_path / "work") == tmp_path / "work" / top


def test_findings_name_a_slow_router_a_wrong_plan_and_a_cpu_fallback() -> None:
    report: dict[str, Any] = {
        "models": {
            "7b": {
                "throughput": {"8": {"router_over_direct_tok_s": 0.95}},
                "memory_table": [{"term": "total", "relative_error": 0.15}],
            }
        },
        "fail_loudly": {"fails_loudly": False, "state": "healthy"},
    }
    found = run.findings(report)
    assert len(found) == 3
    assert "0.950x" in found[0] and "+15.0%" in found[1] and "healthy" in found[2]


# --- the whole path on the CPU --------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_cpu_selftest_runs_every_step_and_writes_sane_figures(tmp_path: Path) -> None:
    server = require_tool("llama-server", "LLAMA_SERVER_BIN")
    quantizer = require_tool("llama-quantize", "LLAMA_QUANTIZE_BIN")
    out = tmp_path / "gpu-check.json"
    env = dict(
        os.environ,
        LLAMA_SERVER_BIN=server,
        LLAMA_QUANTIZE_BIN=quantizer,
        GPU_CHECK_PYTHON=sys.executable,
    )
    env.pop("OUT", None)
    done = subprocess.run(
        [
            "bash",
            str(REPO / "benchmarks" / "gpu" / "run.sh"),
            "--cpu-selftest",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=360,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    settings = report["settings"]

    assert report["mode"] == "cpu-selftest"
    assert "error" not in report and "interrupted" not in report
    assert report["elapsed_s"] < report["budget_s"]
    # The CUDA build cannot run here, and the output says so instead of passing over it.
    if builds.find_nvcc() is None:
        assert re.search(r"SKIPPED CUDA build: no nvcc", done.stdout)
        assert any(s["step"] == "CUDA build" for s in report["skipped"])
    # The overlay's flags, from the rendered manifests.
    assert "--n-gpu-layers" in report["overlay"]["args"]

    assert set(report["models"]) == {"1.1b", "7b"}
    for key, model in report["models"].items():
        assert "error" not in model, (key, model.get("error"))
        assert model["quantize_s"] > 0 and "q4_k_m" in model["file"]
        command = model["command"]
        assert command[command.index("--flash-attn") + 1] in ("on", "off")
        rows = {r["term"]: r for r in model["memory_table"]}
        for term in ("weights", "kv_cache", "compute", "llama_buffers"):
            assert rows[term]["predicted_bytes"] > 0, (key, term)
            assert rows[term]["measured_bytes"] > 0, (key, term)
            assert rows[term]["relative_error"] is not None
        # The KV cache does not depend on the device: plan must match llama.cpp exactly.
        assert abs(rows["kv_cache"]["relative_error"]) < 0.01, rows["kv_cache"]
        assert rows["total"]["predicted_bytes"] > rows["llama_buffers"]["predicted_bytes"]
        assert model["nvidia_smi"]["process_after_load_bytes"] is None  # no GPU here

        levels = model["throughput"]
        assert list(levels) == [str(c) for c in settings["levels"]] == ["1", "8", "16"]
        for level, row in levels.items():
            for target in ("direct", "router"):
                figures = row[target]
                assert figures["errors"] == 0, (key, level, target, figures["first_errors"])
                assert (
                    figures["requests"] == int(level) * settings["per_client"] * settings["rounds"]
                )
                # ignore_eos reached the server through the router too: every answer is full.
                assert figures["tokens_per_request"] == settings["max_tokens"]
                assert figures["aggregate_tok_s"] > 0
                assert len(figures["aggregate_tok_s_per_round"]) == settings["rounds"]
                assert 0 < figures["ttft_p50_ms"] <= figures["ttft_p90_ms"]
            assert row["router_over_direct_tok_s"] > 0
            assert row["router_over_direct_ttft_p50"] > 0

    fail = report["fail_loudly"]
    assert fail["env"] == {"CUDA_VISIBLE_DEVICES": ""}
    assert fail["state"] in ("exited", "healthy", "timeout")
    assert isinstance(fail["fails_loudly"], bool)
    if fail["fails_loudly"]:
        # The overlay names --device CUDA0: a build without that device refuses to start.
        assert fail["exit_code"] != 0 and fail["reason"], fail
        assert "fails loudly" in done.stdout
    else:
        assert any("no usable GPU" in f for f in report["findings"])
    # The table printed at the end carries the same figures.
    assert "router tok/s" in done.stdout and "kv_cache" in done.stdout


def test_load_summary_counts_tokens_over_wall_time() -> None:
    bursts = [
        load.Burst(tokens=80, requests=10, ttft=[0.1] * 10, wall=2.0),
        load.Burst(tokens=40, requests=5, ttft=[0.3] * 5, wall=2.0),
    ]
    s = load._summary(bursts, max_tokens=8)
    assert s["aggregate_tok_s"] == 30.0 and s["tokens_per_request"] == 8.0
    assert s["aggregate_tok_s_per_round"] == [40.0, 20.0]
    assert s["ttft_p50_ms"] == 100.0


def test_the_selftest_drops_only_the_device_choice_a_cpu_build_cannot_honour() -> None:
    argv = ["/b/llama-server", "--n-gpu-layers", "all", "--device", "CUDA0", "--metrics"]
    assert run.without_device(argv) == (
        ["/b/llama-server", "--n-gpu-layers", "all", "--metrics"],
        ["--device", "CUDA0"],
    )
    container = {
        "env": [
            {"name": "CUDA_CACHE_PATH", "value": "/var/cache/cuda"},
            {"name": "X", "valueFrom": {}},
        ]
    }
    assert run.container_env(container, Path("/w")) == {"CUDA_CACHE_PATH": "/w/cuda-cache"}
