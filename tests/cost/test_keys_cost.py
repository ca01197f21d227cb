"""`llmctl cost keys` (issue 31): the split of the GPU bill by key, and its bad input."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llmctl.cli.main import app
from llmctl.cost.keys import GpuPrice, KeyTokens, key_costs, parse_window, to_data
from llmctl.errors import ConfigError
from tests.support.llama import free_port


def test_gpu_bill_is_split_by_share_of_gpu_tokens() -> None:
    gpu = [GpuPrice("aws", 2.0, "g4dn.xlarge", "us-east-1", 0.25)]
    report = key_costs(
        3600, [KeyTokens("a", 300, 0), KeyTokens("b", 100, 50), KeyTokens("c", 0, 900)], gpu
    )
    assert [(r.key, r.gpu_share, r.gpu_usd) for r in report.rows] == [
        ("a", 0.75, 0.375),
        ("b", 0.25, 0.125),
        ("c", 0.0, 0.0),
    ]
    assert report.gpu_usd == 0.5 and report.unattributed_usd == 0.0
    assert to_data(report)["totals"] == {
        "gpuTokens": 400,
        "cpuTokens": 950,
        "gpuUsd": 0.5,
        "unattributedUsd": 0.0,
    }


def test_gpu_time_without_gpu_tokens_is_unattributed() -> None:
    gpu = [GpuPrice("aws", 1.0, "g4dn.xlarge", "us-east-1", 0.2)]
    report = key_costs(3600, [KeyTokens("a", 0, 10)], gpu)
    assert report.rows[0].gpu_usd == 0.0 and report.unattributed_usd == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86_400), ("90m", 5400), ("7d", 604_800), ("30", 30)]
)
def test_windows(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "soon"])
def test_bad_window_is_a_usage_error(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_window(text)


def test_bad_input_exits_2_and_no_prometheus_exits_1() -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["cost", "keys", "--prometheus", "http://127.0.0.1:9", "--since", "x"])
    assert bad.exit_code == 2 and "--since 'x' is not a duration" in bad.output
    assert "Traceback" not in bad.output
    url = f"http://127.0.0.1:{free_port()}"
    down = runner.invoke(app, ["cost", "keys", "--prometheus", url])
    assert down.exit_code == 1, down.output
    assert f"could not read Prometheus at {url}" in down.output
    assert "Traceback" not in down.output
