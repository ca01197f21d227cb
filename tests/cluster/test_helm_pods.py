"""The Helm chart serving from real pods: `charts/llm-router` installed with the real `helm` on
the real node (a real kubelet, containerd and runc; tests/cluster/node.py), with only the values
tests/cluster/real_stack.py's `chart_values` sets (the router image built from the unchanged
Dockerfile, the model URL, the storage class, placement on the real node, sizes). One install,
one completion through the router's Service, one uninstall that leaves no pods.

This module shares nothing mutable with tests/cluster/test_pods.py: its own namespace, release
and PersistentVolumes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.controlplane import REPO, ControlPlane
from tests.cluster.kit import delete_namespace, wait_for
from tests.cluster.node import RealNode
from tests.cluster.real_stack import (
    MODEL,
    answers_through_service,
    chart_values,
    dump,
    import_images,
    model_volumes,
    pods,
    ready,
    serving_model,
    wait_rollout,
)
from tests.support.cli import llmctl_env
from tests.support.tools import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.tools]

RELEASE, NAMESPACE = "llm", "llm-helm-node"
ROUTER_SERVICE = f"{RELEASE}-llm-router"
ROUTER = "app.kubernetes.io/component=router"
LLAMA = "app.kubernetes.io/component=llama-cpu"
# One llama-server pod takes one volume; a spare for a retried start.
VOLUMES = 2
VOLUME_PREFIX = "llmctl-helm-node-model"
# On a shared 2-core machine a first pod start (model download and load) can take minutes.
START_TIMEOUT_S = 600.0


def _helm(plane: ControlPlane, *args: str) -> str:
    done = subprocess.run(
        [require_tool("helm"), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def test_the_chart_serves_a_completion_from_real_pods(
    control_plane: ControlPlane, real_node: RealNode, tmp_path: Path
) -> None:
    plane = control_plane
    timings: dict[str, float] = {}
    t = time.monotonic()
    images = import_images(real_node)
    timings["images built (cached) and imported"] = time.monotonic() - t
    chart = REPO / "charts" / "llm-router"
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    # The chart's own llama-server image is what the node has: nothing else to set for it.
    assert defaults["images"]["llamaServer"] in images.archives, sorted(images.archives)
    volumes = model_volumes(tmp_path / "volumes", VOLUMES, VOLUME_PREFIX)
    plane.kubectl("create", "namespace", NAMESPACE)
    # As the base's namespace: the chart's pods must pass Pod Security `restricted`.
    plane.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    plane.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(volumes))
    try:
        with serving_model(real_node) as model:
            values = tmp_path / "values.yaml"
            values.write_text(yaml.safe_dump(chart_values(images.router, model.url, model.sha256)))
            t = time.monotonic()
            _helm(plane, "install", RELEASE, str(chart), "-n", NAMESPACE, "-f", str(values),
                  "--wait=false")  # fmt: skip
            wait_rollout(plane, NAMESPACE, f"{RELEASE}-cpu-llm-server", START_TIMEOUT_S)
            wait_rollout(plane, NAMESPACE, f"{RELEASE}-llm-router", START_TIMEOUT_S)
            timings["installed to both Deployments rolled out"] = time.monotonic() - t

            router, llama = pods(plane, NAMESPACE, ROUTER), pods(plane, NAMESPACE, LLAMA)
            assert len(router) == 1 and len(llama) == 1, dump(plane, NAMESPACE)
            for pod in (*router, *llama):
                assert ready(pod), dump(plane, NAMESPACE)
                assert pod["spec"]["nodeName"] == real_node.name
                for status in pod["status"]["containerStatuses"]:
                    # started: the startup probe passed; ready: the readiness probe passes.
                    assert status["started"] and status["ready"], status
                    assert status["restartCount"] == 0, status
            (fetch,) = llama[0]["status"]["initContainerStatuses"]
            assert fetch["state"]["terminated"]["exitCode"] == 0
            # The init container fetched the model from the test's server (`llmctl model
            # fetch`: ranged GETs in parallel since issue 30, no longer one plain GET).
            fetched = [rng for path, rng in model.served.requests if path == model.path]
            assert fetched and all(rng is not None for rng in fetched), model.served.requests

            t = time.monotonic()
            # The router retries a backend that failed while llama-server was loading with a
            # growing backoff (healthCheck.maxBackoffSeconds).
            wait_for(
                "the router to answer through its Service",
                lambda: answers_through_service(plane, NAMESPACE, ROUTER_SERVICE),
                START_TIMEOUT_S,
            )
            # llmctl's own port-forward (the kubelet's, for real) to the release's Service.
            done = subprocess.run(
                [sys.executable, "-m", "llmctl", "test-inference", "--cloud", "aws",
                 "--kubeconfig", str(plane.kubeconfig), "--namespace", NAMESPACE,
                 "--service", ROUTER_SERVICE, "--model", MODEL, "--max-tokens", "8",
                 "--expect-tier", "cpu", "-o", "json"],
                capture_output=True, text=True, env=llmctl_env(), timeout=180,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
            assert answer["tiers"] == {"cpu": 1} and answer["results"][0]["tier"] == "cpu"
            assert answer["url"].startswith(f"port-forward to service {ROUTER_SERVICE}")
            timings["router answering, then test-inference --cloud"] = time.monotonic() - t

            t = time.monotonic()
            _helm(plane, "uninstall", RELEASE, "-n", NAMESPACE, "--wait",
                  "--cascade", "foreground")  # fmt: skip
            wait_for(
                "the release's pods to be gone",
                lambda: not pods(plane, NAMESPACE, "app.kubernetes.io/instance=" + RELEASE),
                120,
            )
            timings["uninstalled, no pods left"] = time.monotonic() - t
            shown = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            print(f"chart on the real node: {shown}")
    finally:
        subprocess.run([require_tool("helm"), f"--kubeconfig={plane.kubeconfig}", "uninstall",
                        RELEASE, "-n", NAMESPACE, "--ignore-not-found"],
                       capture_output=True)  # fmt: skip
        delete_namespace(plane, NAMESPACE, timeout_s=300)
        names = [v["metadata"]["name"] for v in volumes]
        plane.kubectl("delete", "pv", *names, "--ignore-not-found", "--wait=false")
