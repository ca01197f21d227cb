"""`llmctl cost estimate` through the real Typer app: defaults, formats and bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from typer.testing import CliRunner

from llmctl.catalog import CloudName
from llmctl.cli.main import app


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no ./llmctl.yaml
    for var in ("LLMCTL_CONFIG", "GPU_INSTANCE_TYPE", "GPU_ENABLED", "MAX_GPU_REPLICAS"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(app, ["cost", "estimate", *args], env=env)

    return invoke


def test_default_table_shows_three_scenarios_and_assumptions(run) -> None:  # type: ignore[no-untyped-def]
    result = run(env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in (
        "CPU-only 24/7",
        "GPU 24/7",
        "scale-to-zero GPU",
        "total",
        "Assumptions",
        "Prices used",
        "g4dn.xlarge",
        "Standard_NC4as_T4_v3",
        "nvidia-tesla-t4",
    ):
        assert text in result.stdout
    # B-series has no Azure spot: said on stderr, priced on demand.
    assert "Standard_B2s has no spot price" in result.stderr


def test_json_parses_and_has_every_row(run) -> None:  # type: ignore[no-untyped-def]
    result = run("--output", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["rows"]) == 9  # 3 clouds x 3 scenarios; the sums are apart
    assert [t["cloud"] for t in data["totals"]] == ["total"] * 3
    for total in data["totals"]:
        mine = [r for r in data["rows"] if r["mode"] == total["mode"]]
        assert sum(r["totalUsd"] for r in mine) == pytest.approx(total["totalUsd"])
    assert {r["mode"] for r in data["rows"]} == {"cpu", "gpu", "scale-to-zero"}
    assert all(p["source"] and p["date"] for p in data["prices"])
    assert data["assumptions"]


def test_yaml_and_csv_parse(run) -> None:  # type: ignore[no-untyped-def]
    as_yaml = yaml.safe_load(run("--output", "yaml", "--cloud", "gcp").stdout)
    assert [r["cloud"] for r in as_yaml["rows"]] == ["gcp", "gcp", "gcp"]
    rows = list(csv.DictReader(io.StringIO(run("--output", "csv", "--mode", "gpu").stdout)))
    # No sum row among the rows: a spreadsheet's SUM() counts each cloud once.
    assert [r["cloud"] for r in rows] == ["aws", "azure", "gcp"]
    assert float(rows[0]["totalUsd"]) > 0


def test_workload_flags_change_scale_to_zero(run) -> None:  # type: ignore[no-untyped-def]
    def s2z(*args: str) -> float:
        out = run("--cloud", "aws", "--mode", "scale-to-zero", "-o", "json", *args)
        assert out.exit_code == 0, out.output
        return float(json.loads(out.stdout)["rows"][0]["gpuNodeHours"])

    quiet = s2z("--gpu-requests-per-day", "10")
    busy = s2z("--gpu-requests-per-day", "5000")
    assert 0 < quiet < busy <= 730
    assert s2z("--gpu-requests-per-day", "10", "--tokens-per-second", "5") > quiet


def test_env_gpu_instance_type_and_region_flag_apply(run) -> None:  # type: ignore[no-untyped-def]
    out = run(
        "--cloud",
        "azure",
        "--mode",
        "gpu",
        "-o",
        "json",
        "--region",
        "westeurope",
        env={"GPU_INSTANCE_TYPE": "Standard_NC4as_T4_v3"},
    )
    assert out.exit_code == 0, out.output
    row = json.loads(out.stdout)["rows"][0]
    assert row["region"] == "westeurope"
    assert row["nodes"] == "2 x Standard_B2s + Standard_NC4as_T4_v3"
    assert row["cpuNodes"] == 2


def test_on_demand_costs_more_than_spot(run) -> None:  # type: ignore[no-untyped-def]
    def gpu(flag: str) -> float:
        out = run("--cloud", "aws", "--mode", "gpu", "-o", "json", flag)
        return float(json.loads(out.stdout)["rows"][0]["computeUsd"])

    assert gpu("--on-demand") == pytest.approx((2 * 0.0208 + 0.526) * 730)
    assert gpu("--spot") < gpu("--on-demand")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--avg-output-tokens", "-5"], {}, "numbers >= 0"),
        (["--gpu-requests-per-day", "-1"], {}, "numbers >= 0"),
        (["--tokens-per-second", "0"], {}, "numbers > 0"),
        (["--region", "mars-1"], {}, "us-east-1"),
        (["--cloud", "aws", "--region", "eastus"], {}, "allowed aws regions: eu-west-1, us-east-1"),
        (["--instance-type", "m5.huge"], {}, "g4dn.xlarge"),
        (
            ["--instance-type", "g4dn.2xlarge"],
            {},
            "us-east-1: g4dn.xlarge, g5.xlarge, t3.small",
        ),
        ([], {"GPU_INSTANCE_TYPE": "g4dn.2xlarge"}, "environment variable GPU_INSTANCE_TYPE"),
        (["--cloud", "gcp", "--gke-free-tier"], {}, "never covers a regional cluster"),
        (["--scale-down-delay", "-1"], {}, "numbers >= 0"),
        ([], {"GPU_INSTANCE_TYPE": "p9.mega"}, "Standard_NC4as_T4_v3"),
        (["--mode", "sometimes"], {}, "scale-to-zero"),
    ],
)
def test_bad_input_exits_2_listing_allowed_values(run, args, env, expected) -> None:  # type: ignore[no-untyped-def]
    result = run(*args, env=env)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


DOC_EXAMPLES = [
    [],
    [
        "--cloud",
        "gcp",
        "--gpu-requests-per-day",
        "2000",
        "--avg-output-tokens",
        "400",
        "--active-hours",
        "10",
    ],
]


@pytest.mark.parametrize("args", DOC_EXAMPLES)
def test_docs_examples_show_what_the_command_prints(run, args) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "cost.md").read_text(encoding="utf-8")
    result = run(*args, "-o", "json")
    assert result.exit_code == 0, result.output
    for row in json.loads(result.stdout)["rows"]:
        assert f"${row['totalUsd']:,.2f}" in docs, row


@pytest.mark.parametrize("name", ["g5.xlarge", "n1-standard-8"])
def test_documented_gpu_instance_types_are_priced(run, name) -> None:  # type: ignore[no-untyped-def]
    result = run("--mode", "gpu", "-o", "json", env={"GPU_INSTANCE_TYPE": name})
    assert result.exit_code == 0, result.output
    assert any(name in r["nodes"] for r in json.loads(result.stdout)["rows"])


def test_gke_fee_follows_the_cluster_location(run) -> None:  # type: ignore[no-untyped-def]
    def fee(*args: str) -> float:
        out = run("--cloud", "gcp", "--mode", "cpu", "-o", "json", *args)
        assert out.exit_code == 0, out.output
        return float(json.loads(out.stdout)["rows"][0]["controlPlaneUsd"])

    assert fee() == pytest.approx(73.0)  # the default us-central1 is a regional cluster
    assert fee("--set", "clouds.gcp.region=us-central1-a") == 0.0
    assert fee("--region", "us-central1-a") == 0.0
    assert fee("--region", "us-central1-a", "--no-gke-free-tier") == pytest.approx(73.0)


def test_a_piped_table_keeps_every_figure_whole(run) -> None:  # type: ignore[no-untyped-def]
    """Piped or redirected, Rich would fit the table to 80 columns and cut "$118.13" to
    "$118.…"; the table keeps its natural width instead."""
    table = run(env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    assert "…" not in table.stdout
    data = json.loads(run("-o", "json").stdout)
    for row in [*data["rows"], *data["totals"]]:
        assert f"${row['totalUsd']:,.2f}" in table.stdout, row
        assert f"${row['computeUsd']:,.2f}" in table.stdout, row


def test_a_narrow_terminal_is_told_the_table_is_cut() -> None:
    from rich.console import Console

    from llmctl.cost import model, report
    from llmctl.cost.prices import load_catalog

    request = model.EstimateRequest(
        clouds=(model.CloudPlan(CloudName.AWS, "us-east-1", "t3.small", "g4dn.xlarge"),)
    )
    result = model.estimate(load_catalog(), request)
    narrow = Console(force_terminal=True, width=100, record=True)
    report.print_table(result, request, narrow)
    said = " ".join(narrow.export_text().split())
    assert "some figures are cut; widen the window, or use -o csv or -o json" in said
    wide = Console(force_terminal=True, width=250, record=True)
    report.print_table(result, request, wide)
    assert "figures are cut" not in wide.export_text()
