"""`llmctl plan` through the CLI: catalog models, local files, URLs, errors, and the docs."""

from __future__ import annotations

import json
import re
import shlex
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli.main import app
from tests.support.cli import python_on_src
from tests.support.gguf_models import TINY, write_llama_gguf
from tests.support.range_server import range_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plan.md"
# Rich reads COLUMNS: the documented output was printed 100 columns wide.
ENV = {
    "COLUMNS": "100",
    "LLMCTL_CONFIG": "",
    "GPU_ENABLED": None,
    "GPU_INSTANCE_TYPE": None,
    "MAX_GPU_REPLICAS": None,
}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no ./llmctl.yaml
    return CliRunner()


def flat(output: str) -> str:
    """Rich's error box, unwrapped: one line of words."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def plan_json(runner: CliRunner, *args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["plan", *args, "-o", "json"], env=ENV)
    assert result.exit_code == 0, result.output
    data: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return data


def test_default_is_the_gpu_tier(runner: CliRunner) -> None:
    data = plan_json(runner)
    assert data["model"]["name"] == "llama-2-7b-chat" and data["model"]["source"] == "catalog"
    assert data["settings"] == {
        "ctxSize": 8192,
        "parallel": 4,
        "ctxPerSlot": 2048,
        "kvType": "f16",
        "flashAttn": True,
        "ngl": -1,
        "kvUnified": False,
    }
    (t4,) = data["plans"]
    assert (t4["gpu"], t4["clouds"], t4["fits"], t4["level"]) == (
        "t4",
        ["aws", "azure", "gcp"],
        True,
        "ok",
    )
    assert t4["maxParallel"] == 10 and t4["maxCtxPerRequest"] == 5376
    assert sum(v for k, v in t4["needBytes"].items() if k != "total") == t4["needBytes"]["total"]


def test_config_and_flags_change_the_plan(runner: CliRunner) -> None:
    # An A10G on AWS splits the columns by GPU.
    data = plan_json(runner, "--set", "gpu.instanceTypes.aws=g5.xlarge")
    assert {p["gpu"]: p["clouds"] for p in data["plans"]} == {
        "a10g": ["aws"],
        "t4": ["azure", "gcp"],
    }
    f16 = plan_json(runner, "--gpu", "h100", "--parallel", "8", "--ctx-per-request", "4096")
    q8 = plan_json(
        runner, "--gpu", "h100", "--parallel", "8", "--ctx-per-request", "4096", "--kv-type", "q8_0"
    )
    kv16, kv8 = f16["plans"][0]["needBytes"]["kvCache"], q8["plans"][0]["needBytes"]["kvCache"]
    assert kv16 == 32 * 8 * 4096 * 2 * 4096 * 2 and kv8 * 64 == kv16 * 34


def test_helm_example_warns_about_512_tokens_per_slot(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "llama-2-13b",
            "--gpu",
            "t4",
            "--ctx-size",
            "4096",
            "--parallel",
            "8",
            "--no-kv-unified",
        ],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    assert "512 tokens per request" in result.stdout
    assert "Each slot holds 512 tokens" in result.stdout


def test_helm_example_unifies_the_cache_as_render_does(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["plan", "--model", "llama-2-13b", "--gpu", "t4", "--ctx-size", "4096", "--parallel", "8"],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    assert "-np 8 --kv-unified: 4096 tokens per request (shared by 8" in result.stdout
    assert "8 slots sharing 4096 tokens (f16 KV, unified)" in " ".join(result.stdout.split())


def test_local_gguf_file(runner: CliRunner, tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", TINY)
    data = plan_json(runner, "--model", str(path), "--gpu", "t4")
    assert data["model"]["name"] == "tiny"
    assert data["model"]["source"] == f"GGUF header of {path}"
    assert (data["model"]["layers"], data["model"]["kvHeads"], data["model"]["headDim"]) == (
        TINY.n_layers,
        TINY.n_kv_heads,
        TINY.head_dim,
    )
    assert data["plans"][0]["fits"] is True


def test_remote_gguf_over_http(runner: CliRunner, tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", TINY)
    with range_server({"m/tiny.gguf": path}) as srv:
        data = plan_json(runner, "--model", f"{srv.base_url}/redirect/m/tiny.gguf", "--gpu", "l4")
    assert data["model"]["layers"] == TINY.n_layers
    assert all(r is not None for p, r in srv.requests if not p.startswith("/redirect/"))


def test_errors_are_one_sentence_with_the_right_exit_code(
    runner: CliRunner, tmp_path: Path
) -> None:
    notgguf = tmp_path / "notes.gguf"
    notgguf.write_text("hello")
    cases = [
        (["--model", str(notgguf)], 2, "is not a GGUF file"),
        (["--model", str(tmp_path / "missing.gguf")], 2, "does not exist"),
        (["--model", "llama-99b"], 2, "is not a catalog model"),
        (["--gpu", "v100"], 2, "is not a GPU llmctl knows"),
        (
            ["--kv-type", "q8_0", "--set", "gpu.llamacpp.flash_attn=false"],
            2,
            "needs flash attention",
        ),
        (["--model", "s3://bucket/m.gguf"], 2, "cannot read a GGUF header over s3://"),
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cases.append((["--model", f"http://127.0.0.1:{closed_port}/m.gguf"], 1, "cannot reach"))
    for args, code, message in cases:
        result = runner.invoke(app, ["plan", *args], env=ENV)
        assert result.exit_code == code, (args, result.output)
        assert message in flat(result.output), (args, result.output)
        assert "Traceback" not in result.output
    with range_server({}) as srv:
        result = runner.invoke(app, ["plan", "--model", f"{srv.base_url}/gone.gguf"], env=ENV)
    assert result.exit_code == 1 and "HTTP 404" in flat(result.output)


def test_cli_startup_does_not_import_gguf_or_numpy() -> None:
    code = (
        "import sys, llmctl.cli.main; "
        "print(sorted(m for m in ('gguf', 'numpy') if m in sys.modules))"
    )
    out = python_on_src(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def documented_examples() -> list[tuple[str, str]]:
    blocks = re.findall(r"```console\n\$ (llmctl [^\n]*)\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 5
    return blocks


@pytest.mark.parametrize(("command", "expected"), documented_examples())
def test_documented_example_output_is_real(runner: CliRunner, command: str, expected: str) -> None:
    result = runner.invoke(app, shlex.split(command)[1:], env=ENV)
    # A plan that does not fit exits 1 (docs/plan.md, "Exit codes"), after printing in full.
    assert result.exit_code == (1 if "\nrefuse: " in expected else 0), result.output
    got = "\n".join(line.rstrip() for line in result.output.rstrip("\n").split("\n"))
    assert got == expected.rstrip("\n"), f"docs/plan.md is stale for `{command}`"


@pytest.mark.parametrize("output", ["table", "json"])
def test_a_plan_that_does_not_fit_exits_1_so_ci_can_gate_on_it(
    runner: CliRunner, output: str
) -> None:
    # Review 2026-12-06, N6: this printed "refuse: ..." and exited 0.
    args = ["plan", "--model", "llama-2-13b-chat", "--gpu", "t4", "--ctx-per-request", "2048"]
    result = runner.invoke(app, [*args, "--parallel", "8", "-o", output], env=ENV)
    assert result.exit_code == 1, result.output
    if output == "json":
        assert json.loads(result.output)["plans"][0]["fits"] is False
    else:
        assert "refuse: " in result.output
    fits = runner.invoke(app, [*args, "--parallel", "4", "-o", output], env=ENV)
    assert fits.exit_code == 0, fits.output
