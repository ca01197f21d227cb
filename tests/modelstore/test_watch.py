"""The llama pod's stage watcher (`python3 -m llmctl.modelstore.watch`, a container beside
llama-server in the pod) with the real processes it sits between: the pod's fetcher (`llmctl
model fetch`) writes its record, a real llama-server loads the model, a real Prometheus scrapes
the watcher.

A pod on the real node runs the same in tests/cluster/test_pods.py; this one runs in seconds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmctl.modelstore import stages
from tests.cluster.kit import wait_for
from tests.cluster.prometheus import Prometheus
from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer, free_port
from tests.support.range_server import range_server
from tests.support.router import SRC

pytestmark = pytest.mark.e2e


def test_prometheus_scrapes_each_stage_of_a_start_fetch_load_first_ready(tmp_path: Path) -> None:
    (tmp_path / "served").mkdir()
    gguf = write_llama_gguf(tmp_path / "served" / "tiny.gguf")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    models = tmp_path / "models"
    models.mkdir()
    record = models / ".llmctl-fetch.prom"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC)}
    with range_server({"tiny.gguf": gguf}) as served:
        fetched = subprocess.run(
            [sys.executable, "-m", "llmctl", "model", "fetch"],
            env=env
            | {
                "MODEL_URI": f"{served.base_url}/tiny.gguf",
                "MODEL_PATH": str(models / "tiny.gguf"),
                "MODEL_SHA256": digest,
                "MODEL_FETCH_METRICS_FILE": str(record),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert fetched.returncode == 0, fetched.stderr
    llama_port, watch_port = free_port(), free_port()
    log = (tmp_path / "watch.log").open("w")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "llmctl.modelstore.watch"],
        env=env
        | {
            "MODEL_FETCH_METRICS_FILE": str(record),
            "LLAMA_SERVER_URL": f"http://127.0.0.1:{llama_port}",
            "STAGES_PORT": str(watch_port),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prometheus = Prometheus(tmp_path, {"stages": f"127.0.0.1:{watch_port}"})
    try:
        # The server starts after the watcher, as llama-server does after its sidecar.
        with LlamaServer(models / "tiny.gguf", "tiny", tmp_path, port=llama_port):
            prometheus.start()
            wait_for(
                "Prometheus to scrape first_ready from the watcher",
                lambda: (
                    prometheus.query('llmctl_pod_stage_seconds{stage="first_ready"}') is not None
                ),
                60,
            )
            fetch = prometheus.query('llmctl_pod_stage_seconds{stage="fetch"}')
            load = prometheus.query('llmctl_pod_stage_seconds{stage="load"}')
            first = prometheus.query('llmctl_pod_stage_seconds{stage="first_ready"}')
            size = prometheus.query('llmctl_model_fetch_bytes{model="tiny.gguf"}')
            rate = prometheus.query("llmctl_model_fetch_megabytes_per_second")
    finally:
        prometheus.stop()
        watcher.terminate()
        watcher.wait(timeout=10)
        log.close()
    assert watcher.returncode == 0, (tmp_path / "watch.log").read_text()
    assert fetch is not None and load is not None and first is not None
    assert load > 0 and first == pytest.approx(fetch + load, abs=0.002)
    assert size == gguf.stat().st_size and rate is not None and rate > 0
    lines = [
        stages.parse_stage_line(line)
        for line in (tmp_path / "watch.log").read_text().splitlines()
        if line.startswith(stages.PREFIX)
    ]
    assert [line["stage"] for line in lines] == ["load", "first_ready"]
    assert float(lines[0]["server_answered_after"]) <= float(lines[0]["seconds"])


def test_the_watcher_serves_what_it_knows_before_the_server_is_up(tmp_path: Path) -> None:
    """Before llama-server answers, /metrics already has the fetch (a start stuck in the load
    shows where it stands), and SIGTERM ends the watcher cleanly."""
    import urllib.request

    record = tmp_path / ".llmctl-fetch.prom"
    fetch = stages.Stage("fetch", 2.5, {"bytes": 1000, "mb_per_s": 0.4})
    stages.write_metrics(record, [fetch], {"model": "m.gguf", "store": "https"})
    port = free_port()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "llmctl.modelstore.watch"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC)}
        | {
            "MODEL_FETCH_METRICS_FILE": str(record),
            "LLAMA_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            "STAGES_PORT": str(port),
        },
    )
    try:

        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return str(r.read().decode())
            except OSError:
                return None

        text = wait_for("the watcher to answer /metrics", scrape, 30)
        assert 'llmctl_pod_stage_seconds{model="m.gguf",store="https",stage="fetch"} 2.500' in text
        assert "llmctl_model_fetch_bytes" in text and 'stage="load"' not in text
    finally:
        started = time.monotonic()
        watcher.terminate()
        assert watcher.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
