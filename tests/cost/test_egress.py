"""Egress for federation (issue 16): the dated, sourced rates, the per-token arithmetic, and the
cost estimate's table of serving remotely beside waking the local GPU."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from llmctl.catalog import CloudName
from llmctl.cli.main import app
from llmctl.cost import egress

AWS, AZURE, GCP = CloudName.AWS, CloudName.AZURE, CloudName.GCP


def test_every_cloud_has_a_dated_sourced_rate() -> None:
    catalog = egress.load_egress()
    assert set(catalog.clouds) == {AWS, AZURE, GCP}
    for price in catalog.clouds.values():
        assert price.source.startswith("https://")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.date)
        assert price.note
        assert 0.01 < price.usd_per_unit < 0.5  # a first-tier internet rate, not a typo


def test_gib_and_gb_rates_are_converted_per_byte() -> None:
    gb = egress.EgressPrice(
        usd_per_unit=0.09, unit="GB", free_gb_per_month=0, tier="t", source="s", date="2026-01-01"
    )
    gib = gb.model_copy(update={"usd_per_unit": 0.12, "unit": "GiB"})
    assert gb.usd_per_byte == pytest.approx(0.09 / 1e9)
    assert gib.usd_per_byte == pytest.approx(0.12 / 2**30)


def test_per_million_tokens_is_bytes_per_token_times_the_rate() -> None:
    catalog = egress.load_egress()
    rows = egress.remote_serving(catalog, (AWS, GCP))
    aws, gcp = rows
    rate = catalog.clouds[AWS].usd_per_byte
    assert aws.cloud == "aws" and gcp.cloud == "gcp"
    assert aws.streamed_usd_per_million_tokens == pytest.approx(
        egress.STREAMED_BYTES_PER_TOKEN * 1e6 * rate
    )
    assert aws.plain_usd_per_million_tokens == pytest.approx(
        egress.PLAIN_BYTES_PER_TOKEN * 1e6 * rate
    )
    assert aws.prompt_usd_per_million_tokens == pytest.approx(
        egress.PROMPT_BYTES_PER_TOKEN * 1e6 * rate
    )
    assert aws.streamed_usd_per_million_tokens > aws.plain_usd_per_million_tokens


def test_a_wake_bills_the_cold_start_and_the_cooldown() -> None:
    assert egress.wake_usd(0.36, cold_start_s=240, idle_timeout_s=300) == pytest.approx(0.054)
    assert egress.wake_usd(0.36, cold_start_s=0, idle_timeout_s=0) == 0


def test_tokens_per_wake() -> None:
    assert egress.tokens_per_wake(0.03, 0.02) == pytest.approx(1.5e6)
    assert egress.tokens_per_wake(0.03, 0.0) is None


def test_remote_rows_weigh_each_clouds_wake_against_the_cheapest_other_cloud() -> None:
    catalog = egress.load_egress()
    rows = egress.remote_rows(catalog, {AWS: 0.36, AZURE: 0.0, GCP: 0.18}, 240, 300)
    assert [r.serving.cloud for r in rows] == ["aws", "azure", "gcp"]
    by_cloud = {r.serving.cloud: r for r in rows}
    streamed = {r.serving.cloud: r.serving.streamed_usd_per_million_tokens for r in rows}
    cheapest_for_aws = min(("azure", "gcp"), key=streamed.__getitem__)
    assert by_cloud["aws"].cheapest_other == cheapest_for_aws
    assert by_cloud["aws"].wake_usd == pytest.approx(0.054)
    assert by_cloud["aws"].tokens_per_wake == pytest.approx(
        0.054 / streamed[cheapest_for_aws] * 1e6
    )
    assert by_cloud["azure"].tokens_per_wake == 0


def test_one_cloud_alone_has_no_other_cloud_to_serve_it() -> None:
    (row,) = egress.remote_rows(egress.load_egress(), {GCP: 0.2}, 240, 300)
    assert row.cheapest_other is None and row.tokens_per_wake is None


def test_cost_estimate_shows_egress_beside_the_wake() -> None:
    result = CliRunner().invoke(app, ["cost", "estimate"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Served by another cloud" in result.output
    assert "$0.09/GB" in result.output and "$0.12/GiB" in result.output
    assert "https://cloud.google.com/vpc/network-pricing" in result.output


def test_cost_estimate_json_has_the_remote_rows() -> None:
    result = CliRunner().invoke(app, ["cost", "estimate", "--output", "json"])
    assert result.exit_code == 0, result.output
    remote = json.loads(result.stdout)["remote"]
    assert [r["cloud"] for r in remote] == ["aws", "azure", "gcp"]
    for row in remote:
        assert row["egressUsdPerMillionTokensStreamed"] > 0
        assert row["wakeLocalGpuUsd"] > 0
        assert row["date"] and row["source"].startswith("https://")
