"""The real HorizontalPodAutoscaler on the rendered ScaledObject (issue 28: "one busy stream
never asks for a second node"): KEDA's operator makes the HPA, kube-controller-manager's HPA
controller reads the External metric through KEDA's metrics adapter (the external.metrics.k8s.io
APIService on the real kube-apiserver), and Prometheus evaluates the ScaledObject's own query
over the router's own metric series (llmctl.router.metrics, set here instead of by traffic: the
demand a test wants, held as long as it wants). One stream in flight, below the GPU pod's slots:
the HPA asks for 1 replica. More streams than the slots: it asks for more, as
tests/support/hpa.py's arithmetic says it must.

What the test changes in the rendered overlay, and why: as tests/cluster/test_scale_from_zero.py
(the Prometheus address, polling interval and cooldown)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmctl.catalog import CloudName
from llmctl.config import NAMESPACE
from llmctl.router.metrics import CONTENT_TYPE, RouterMetrics
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import delete_namespace, get_json, reset_llmctl_objects, wait_for
from tests.cluster.prometheus import Prometheus
from tests.cluster.test_scale_from_zero import (
    GPU_DEPLOYMENT,
    apply,
    for_this_machine,
    keda_hpa,
    rendered_overlay,
    replicas,
)
from tests.support.hpa import desired_replicas, quantity, targets_of_hpa

pytestmark = [pytest.mark.e2e, pytest.mark.tools]

CLOUD = CloudName.AWS


class RouterSeries:
    """The router's metrics module behind a loopback HTTP server, its GPU demand set by hand."""

    def __init__(self) -> None:
        self.metrics = RouterMetrics()
        self.labels = ("gpu", CLOUD.value)
        self.metrics.tier_requests.inc(self.labels, 0)  # the series exists, as after a scrape
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = metrics.render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_demand(self, streams: int) -> None:
        current = self.metrics.tier_demand.get(self.labels)
        self.metrics.tier_demand.inc(self.labels, streams - current)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def series(tmp_path: Path, control_plane: ControlPlane) -> Iterator[RouterSeries]:
    if "KEDA_ADAPTER" not in control_plane.bins:
        pytest.fail("KEDA's metrics adapter was not built (scripts/build-control-plane.sh)")
    router = RouterSeries()
    yield router
    router.stop()
    control_plane.kubectl("delete", "scaledobject", "-n", NAMESPACE, "--all", "--ignore-not-found")
    delete_namespace(control_plane, NAMESPACE)


def hpa_reading(plane: ControlPlane) -> tuple[float, int] | None:
    """The External metric value the HPA controller last read through the adapter, and the
    replica count it wants; None until it has read one."""
    hpa = keda_hpa(plane)
    status = hpa.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    active = conditions.get("ScalingActive", {})
    if active.get("status") != "True" or not status.get("currentMetrics"):
        return None
    value = status["currentMetrics"][0]["external"]["current"]["averageValue"]
    return quantity(value), int(status["desiredReplicas"])


def settled_on(plane: ControlPlane, demand: float) -> tuple[float, int] | None:
    reading = hpa_reading(plane)
    return reading if reading is not None and reading[0] == demand else None


def test_the_real_hpa_buys_one_gpu_for_one_stream_and_more_past_the_slots(
    control_plane: ControlPlane, series: RouterSeries, tmp_path: Path, repo: Path
) -> None:
    reset_llmctl_objects(control_plane)
    objects = rendered_overlay(control_plane, repo, CLOUD)
    prometheus = Prometheus(
        tmp_path, {"llm-router": series.address}, labels={"namespace": NAMESPACE}
    ).start()
    try:
        series.set_demand(1)  # one stream in flight on the GPU tier
        apply(control_plane, for_this_machine(objects, prometheus.url))
        wait_for("KEDA to wake the GPU tier (0 -> 1)", lambda: replicas(control_plane) == 1, 90)
        hpa = keda_hpa(control_plane)
        (target,) = targets_of_hpa(hpa)
        slots = target.average_value
        assert slots > 1, f"the HPA's per-replica target is {slots}: one stream would fill it"

        value, wanted = wait_for(
            "the HPA to read demand 1 through the adapter", lambda: settled_on(control_plane, 1), 90
        )
        assert (value, wanted) == (1, 1), f"one busy stream: the HPA wants {wanted}"
        assert replicas(control_plane) == 1

        busy = int(slots) + 2  # more streams than one GPU pod's slots
        series.set_demand(busy)
        value, wanted = wait_for(
            f"the HPA to read demand {busy}", lambda: settled_on(control_plane, busy), 90
        )
        bounds = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
        model = desired_replicas(1, [target], {target.name: value}, *bounds)
        assert wanted == model > 1, f"{busy} streams, {slots} slots: HPA {wanted}, model {model}"
        wait_for(
            f"the GPU Deployment to reach {wanted}",
            lambda: replicas(control_plane) == wanted,
            60,
        )
        deployment = get_json(control_plane, "deployment", "-n", NAMESPACE, GPU_DEPLOYMENT)
        assert deployment["spec"]["replicas"] == wanted
    finally:
        prometheus.stop()
