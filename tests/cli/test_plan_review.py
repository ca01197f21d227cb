"""`llmctl plan` on the first-use review's inputs (findings 17 and 18): a tied embedding counted
once, a file that is not GGUF at all, and a GGUF whose tensor data was cut short."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmctl.cli.main import app
from llmctl.plan.gguf import read_gguf_header
from tests.plan.test_gguf import SMOLLM2
from tests.support.gguf_models import write_llama_gguf

runner = CliRunner()
ENV: dict[str, str | None] = {"COLUMNS": "200", "LLMCTL_CONFIG": "", "GPU_INSTANCE_TYPE": None}


def _plan(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["plan", *args, "-o", "json"], env=ENV)
    assert result.exit_code == 0, result.output
    data: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return data


def test_a_tied_embedding_counts_once_in_the_weights() -> None:
    assert SMOLLM2.is_file(), f"{SMOLLM2} missing: run scripts/fetch-smollm2.sh"
    header = read_gguf_header(SMOLLM2)
    assert "output.weight" not in {t.name for t in header.tensors}
    in_file = sum(t.n_bytes for t in header.tensors)
    assert in_file == 96_576_768  # the review's figure
    data = _plan("--model", str(SMOLLM2), "--gpu", "t4")
    assert data["model"]["weightBytes"] == in_file  # was 126,657,792: token_embd twice
    assert data["model"]["tiedEmbedding"] is True
    # On the GPU llama.cpp does load token_embd again as the output head: that row keeps it.
    embd = next(t.n_bytes for t in header.tensors if t.name == "token_embd.weight")
    assert data["plans"][0]["needBytes"]["weights"] == in_file - embd + embd  # = in_file


def test_a_file_that_is_not_gguf_says_so(tmp_path: Path) -> None:
    tiny = tmp_path / "x.gguf"
    tiny.write_bytes(b"abc")
    result = runner.invoke(app, ["plan", "--model", str(tiny)], env=ENV)
    assert result.exit_code == 2
    assert "is not a GGUF file" in " ".join(result.output.split())
    assert "ends inside" not in result.output


def test_a_cut_short_gguf_is_planned_with_a_warning(tmp_path: Path) -> None:
    whole = write_llama_gguf(tmp_path / "m.gguf")
    assert _plan("--model", str(whole))["warnings"] == []
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) - 1000])
    result = runner.invoke(app, ["plan", "--model", str(whole), "-o", "json"], env=ENV)
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert len(warnings) == 1 and "1,000 bytes shorter" in warnings[0]
    assert "cut-short download" in result.stderr
