"""Issue 30: `cost estimate` counts the model cache: the GPU model kept in each cloud's store a
month, and each wake's ranged GETs (in-region transfer is free)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from llmctl.catalog import CLOUDS, MODELS, CloudName
from llmctl.cost import model_store

LLMCTL = str(Path(sys.executable).parent / "llmctl")


def test_storage_and_gets_follow_the_model_size_and_the_fetchers_ranges() -> None:
    size = MODELS["llama-2-7b-chat"].file_bytes
    prices = model_store.load_storage()
    rows = {r.cloud: r for r in model_store.store_rows(prices, CLOUDS, size)}
    for cloud in CloudName:
        price = prices.clouds[cloud]
        row = rows[cloud.value]
        assert math.isclose(row.storage_usd_per_month, size / 1e9 * price.usd_per_gb_month)
        assert row.gets_per_wake == math.ceil(size / (16 * 1024 * 1024)) + 2 == 246
        assert math.isclose(row.usd_per_wake, 246 * price.usd_per_1000_gets / 1000)
        assert math.isclose(row.hub_fetch_s, size / 50e6)
        assert price.in_region_transfer_usd_per_gb == 0.0


def test_cost_estimate_json_carries_the_model_store(tmp_path: Path) -> None:
    out = subprocess.run(
        [LLMCTL, "cost", "estimate", "--output", "json"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    rows = json.loads(out)["modelStore"]
    assert [r["cloud"] for r in rows] == ["aws", "azure", "gcp"]
    size = MODELS["llama-2-7b-chat"].file_bytes
    assert all(math.isclose(r["modelGb"], size / 1e9) for r in rows)
