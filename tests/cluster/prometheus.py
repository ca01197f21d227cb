"""A real Prometheus (Debian's `prometheus`) on loopback, scraping the targets a test runs."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.router import LoopbackProcess
from tests.support.tools import require_tool


class Prometheus(LoopbackProcess):
    """`labels` are added to every target, as the Prometheus Operator adds `namespace` (and
    more) to each target of a ServiceMonitor; `rule_files` are loaded and evaluated."""

    def __init__(
        self,
        workdir: Path,
        targets: dict[str, str],
        scrape_interval_s: float = 1.0,
        labels: dict[str, str] | None = None,
        rule_files: list[Path] | None = None,
    ):
        super().__init__()
        self.binary = require_tool("prometheus")
        self.workdir, self.targets, self.interval = workdir, targets, scrape_interval_s
        self.labels, self.rule_files = labels or {}, rule_files or []
        self.log = workdir / f"prometheus-{self.port}.log"

    def start(self, timeout_s: float = 60.0) -> Prometheus:
        interval = f"{int(self.interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [target], "labels": self.labels}],
                }
                for job, target in self.targets.items()
            ],
        }
        path = self.workdir / f"prometheus-{self.port}.yml"
        path.write_text(yaml.safe_dump(config))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={self.workdir / f'tsdb-{self.port}'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_it_answers("/-/ready", timeout_s, "prometheus", self.log, step=0.2)
        return self

    def query(self, promql: str) -> float | None:
        """The value of an instant query that returns one sample, or None when it has none."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: dict[str, Any] = json.load(resp)
        result = body["data"]["result"]
        if not result:
            return None
        if body["data"]["resultType"] == "scalar":
            return float(result[1])
        return float(result[0]["value"][1])

    def firing(self) -> list[dict[str, Any]]:
        """The alerts in state `firing`, each as the API gives it (labels, annotations...)."""
        with urllib.request.urlopen(self.url + "/api/v1/alerts", timeout=5) as resp:
            body: dict[str, Any] = json.load(resp)
        return [a for a in body["data"]["alerts"] if a["state"] == "firing"]
