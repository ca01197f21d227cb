"""`llmctl test-inference` end to end: the CLI in its own process, against the real router
(`llmctl router serve`) in front of real llama.cpp servers.

Topology: one CPU backend (aws/cpu, "tinyllama-1.1b-chat") and one "GPU" backend (aws/gpu, a
second llama-server labelled gpu, "llama-2-7b-chat"), both loading the tiny random-weight GGUF
the tests write; the router requires an API key. A second router in front of the same CPU
server has a GPU backend that never answers, so the GPU tier degrades to cpu-fallback.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmctl.catalog import CloudName
from llmctl.config import NAMESPACE
from llmctl.config import Stack as StackConfig
from llmctl.manifests import cluster_setup_objects
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    apply_objects,
    deploy_router,
    ensure_namespace,
    gpu_node,
    only_these_gpu_nodes,
    port_forward_to,
    reset_llmctl_objects,
    wait_for,
)
from tests.support.cli import run_llmctl
from tests.support.gguf_models import write_llama_gguf
from tests.support.gpu_check_pod import SMI_LOG, check_pods, serve_smi_log
from tests.support.llama import CPU_MODEL, GPU_MODEL, LlamaServer, free_port, routed_models
from tests.support.router import RouterProcess, router_config

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-inference"
MODELS = routed_models(cpu_aliases=("tinyllama",))
# Wide enough that Rich's error panel keeps each sentence on one line.
KEY_ENV = {"LLMCTL_API_KEY": API_KEY, "OPENAI_API_KEY": "", "COLUMNS": "400"}
NO_KEY_ENV = {"OPENAI_API_KEY": "", "COLUMNS": "400"}


class Stack:
    def __init__(
        self, cpu: LlamaServer, gpu: LlamaServer, router: RouterProcess, degraded: RouterProcess
    ) -> None:
        self.cpu, self.gpu, self.router, self.degraded = cpu, gpu, router, degraded


def backend(name: str, url: str, tier: str, model: str) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "tier": tier,
        "cloud": "aws",
        "model": model,
        "slots": 2,
        "costWeight": 1.0,
        "hourlyCostUsd": 0.5 if tier == "gpu" else 0.1,
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("test-inference")
    gguf = write_llama_gguf(tmp / "tiny.gguf")
    cpu, gpu = LlamaServer(gguf, CPU_MODEL, tmp), LlamaServer(gguf, GPU_MODEL, tmp)
    routers: list[RouterProcess] = []
    try:
        cpu.start()
        gpu.start()
        keys = {"apiKeys": {"env": "ROUTER_KEYS"}}
        env = {"ROUTER_KEYS": API_KEY}
        router = RouterProcess(
            router_config(
                [
                    backend("aws/cpu", cpu.url, "cpu", CPU_MODEL),
                    backend("aws/gpu", gpu.url, "gpu", GPU_MODEL),
                ],
                MODELS,
                CPU_MODEL,
                **keys,
            ),
            tmp,
            env=env,
        )
        routers.append(router.start())
        dead_gpu = f"http://127.0.0.1:{free_port()}"
        degraded = RouterProcess(
            router_config(
                [
                    backend("aws/cpu", cpu.url, "cpu", CPU_MODEL),
                    backend("aws/gpu", dead_gpu, "gpu", GPU_MODEL),
                ],
                MODELS,
                CPU_MODEL,
                **keys,
            ),
            tmp,
            env=env,
        )
        routers.append(degraded.start())
        yield Stack(cpu, gpu, router, degraded)
    finally:
        for started in routers:
            started.stop()
        cpu.stop()
        gpu.stop()


def llmctl_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    result = run_llmctl("test-inference", *args, "--output", "json", env=env or KEY_ENV)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def ask(
    url: str, model: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """`llmctl test-inference --url URL --model MODEL ARGS`, its JSON report."""
    return llmctl_json("--url", url, "--model", model, *args, env=env)


def ask_text(url: str, model: str, *args: str) -> Any:
    """`llmctl test-inference --url URL --model MODEL ARGS`, its report for people."""
    return run_llmctl("test-inference", "--url", url, "--model", model, *args, env=KEY_ENV)


# --- reports ----------------------------------------------------------------------------------


def test_streaming_report_has_tier_backend_ttft_and_tokens(stack: Stack) -> None:
    code, data, stderr = ask(stack.router.url, "tinyllama", "--max-tokens", "12")
    assert code == 0, stderr
    assert data["passed"] and data["succeeded"] == 1 and data["failed"] == 0
    result = data["results"][0]
    assert result["status"] == 200
    assert result["tier"] == "cpu" and result["backend"] == "aws/cpu"
    assert result["model"] == CPU_MODEL
    assert 0 < result["ttftSeconds"] <= result["latencySeconds"]
    # llama-server reports usage in the stream's last chunk (stream_options.include_usage).
    assert result["tokensCounted"] is False
    assert 1 <= result["outputTokens"] <= 12
    assert result["tokensPerSecond"] == pytest.approx(
        result["outputTokens"] / result["latencySeconds"]
    )
    assert isinstance(result["reply"], str) and result["reply"]


def test_non_streaming_report_reads_usage(stack: Stack) -> None:
    code, data, stderr = ask(stack.router.url, GPU_MODEL, "--no-stream", "--max-tokens", "8")
    assert code == 0, stderr
    result = data["results"][0]
    assert data["stream"] is False
    assert result["tier"] == "gpu" and result["backend"] == "aws/gpu"
    assert result["ttftSeconds"] is None
    assert 1 <= result["outputTokens"] <= 8 and result["tokensCounted"] is False


def test_text_report_for_people(stack: Stack) -> None:
    result = ask_text(stack.router.url + "/v1", "tinyllama", "--max-tokens", "6")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in (
        "status",
        "200 OK",
        "tier",
        "backend",
        "aws/cpu",
        "time to first token",
        "total latency",
        "output tokens",
        "tokens/s",
    ):
        assert row in out
    assert "PASS: 1 of 1 answered (cpu 1)" in out


def test_complexity_header_and_expect_tier_gpu(stack: Stack) -> None:
    code, data, stderr = ask(
        stack.router.url,
        "tinyllama",
        "--complexity",
        "reasoning",
        "--expect-tier",
        "gpu",
        "--max-tokens",
        "4",
    )
    assert code == 0, stderr
    assert data["tiers"] == {"gpu": 1} and data["passed"]


def test_many_requests_concurrently(stack: Stack) -> None:
    code, data, stderr = ask(
        stack.router.url, "tinyllama", "--requests", "20", "--concurrency", "4", "--max-tokens", "8"
    )
    assert code == 0, stderr
    assert data["requests"] == 20 and data["concurrency"] == 4
    assert data["succeeded"] == 20 and data["errors"] == {}
    assert len(data["results"]) == 20
    lat = data["latencySeconds"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= data["wallSeconds"]
    assert data["ttftSeconds"]["p50"] <= lat["p50"]
    assert data["throughputRequestsPerSecond"] == pytest.approx(20 / data["wallSeconds"])
    assert data["outputTokens"] == sum(r["outputTokens"] for r in data["results"])
    assert data["tiers"] == {"cpu": 20} and data["backends"] == {"aws/cpu": 20}


def test_many_requests_text_summary(stack: Stack) -> None:
    result = ask_text(
        stack.router.url,
        GPU_MODEL,
        "-n",
        "6",
        "--concurrency",
        "3",
        "--max-tokens",
        "4",
        "--no-stream",
    )
    assert result.returncode == 0, result.stderr
    for row in (
        "6 (6 ok, 0 failed)",
        "latency p50/p95/p99",
        "throughput",
        "req/s",
        "gpu 6",
        "aws/gpu 6",
        "errors",
        "none",
    ):
        assert row in result.stdout
    assert "PASS: 6 of 6 answered (gpu 6)" in result.stdout


# --- failure modes ------------------------------------------------------------------------------


def test_connection_refused_names_the_url_and_port_forward() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, data, stderr = llmctl_json("--url", url)
    assert code == 1
    assert data["errors"] == {"connection_refused": 1} and not data["passed"]
    assert f"connection refused: nothing is listening at {url}" in stderr
    assert "port-forward svc/llm-router 8080:80" in stderr and "--cloud" in stderr


def test_missing_api_key_says_how_to_pass_it(stack: Stack) -> None:
    code, data, stderr = ask(stack.router.url, "tinyllama", env=NO_KEY_ENV)
    assert code == 1
    assert data["results"][0]["status"] == 401 and data["errors"] == {"unauthorized": 1}
    assert "needs an API key (HTTP 401" in stderr
    assert "--api-key KEY" in stderr and "$LLMCTL_API_KEY" in stderr


def test_wrong_api_key_is_refused(stack: Stack) -> None:
    code, data, stderr = ask(stack.router.url, "tinyllama", "--api-key", "sk-wrong", env=NO_KEY_ENV)
    assert code == 1 and data["errors"] == {"unauthorized": 1}
    assert "refused the API key" in stderr
    assert "sk-wrong" not in stderr  # keys are never echoed


def test_openai_api_key_is_the_fallback(stack: Stack) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "COLUMNS": "400"}
    code, data, stderr = ask(stack.router.url, "tinyllama", "--max-tokens", "2", env=env)
    assert code == 0, stderr


def test_unknown_model_lists_the_served_ones(stack: Stack) -> None:
    code, data, stderr = ask(stack.router.url, "gpt-4")
    assert code == 1
    failure = data["results"][0]["failure"]
    assert failure["kind"] == "model_not_found" and failure["status"] == 404
    assert set(failure["models"]) == {CPU_MODEL, "tinyllama", GPU_MODEL}
    assert "model 'gpt-4' is not served at" in stderr
    assert "llama-2-7b-chat" in stderr and "--model" in stderr


def test_expect_gpu_but_cpu_answers(stack: Stack) -> None:
    code, data, stderr = ask(
        stack.router.url, "tinyllama", "--expect-tier", "gpu", "--max-tokens", "2"
    )
    assert code == 1
    assert data["succeeded"] == 1 and data["tiers"] == {"cpu": 1} and not data["passed"]
    assert data["problems"][0]["kind"] == "wrong_tier"
    assert "expected the gpu tier to answer, but cpu (1) answered 1 of 1" in stderr
    assert "more than 3B" in stderr


def test_expect_gpu_when_the_gpu_pool_is_down_reports_the_fallback(stack: Stack) -> None:
    code, data, stderr = ask(
        stack.degraded.url, GPU_MODEL, "--expect-tier", "gpu", "--max-tokens", "2"
    )
    assert code == 1
    assert data["tiers"] == {"cpu-fallback": 1}
    assert "but cpu-fallback (1) answered" in stderr
    assert "no GPU backend was ready" in stderr and "llmctl gpu status" in stderr
    # The CPU tier accepts its own fallback.
    code, data, stderr = ask(
        stack.degraded.url, GPU_MODEL, "--expect-tier", "cpu", "--max-tokens", "2"
    )
    assert code == 0, stderr


def test_no_backend_ready_is_503_with_retry_after(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = router_config([backend("aws/cpu", dead, "cpu", CPU_MODEL)], MODELS[:1], CPU_MODEL)
    with RouterProcess(config, tmp_path) as router:
        code, data, stderr = ask(router.url, CPU_MODEL)
    assert code == 1
    failure = data["results"][0]["failure"]
    assert failure["kind"] == "unavailable" and failure["status"] == 503
    assert failure["retryAfter"] is not None and int(failure["retryAfter"]) >= 1
    assert "unavailable (503)" in stderr and "Retry-After:" in stderr


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code, data, stderr = llmctl_json("--url", url, "--timeout", "0.5")
    assert code == 1
    assert data["errors"] == {"timeout": 1}
    assert "no answer from" in stderr and "within 0.5 s" in stderr and "--timeout" in stderr


def test_usage_errors_exit_2() -> None:
    result = run_llmctl("test-inference")
    assert result.returncode == 2 and "give --url URL" in result.stderr
    result = run_llmctl("test-inference", "--url", "ftp://x")
    assert result.returncode == 2 and "is not an http(s) URL" in result.stderr
    result = run_llmctl("test-inference", "--url", "http://127.0.0.1:1", "--gpu-check")
    assert result.returncode == 2 and "--gpu-check needs --cloud" in result.stderr
    result = run_llmctl("test-inference", "--url", "http://127.0.0.1:1", "--expect-tier", "tpu")
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--url", "http://127.0.0.1:1", "--cold", "cpu"], "--cold needs --cloud"),
        (["--cloud", "aws", "--cold", "cpu", "-n", "3"], "--cold times one request"),
        (["--cloud", "aws", "--cold", "cpu", "--concurrency", "2"], "--cold times one request"),
        (["--cloud", "aws", "--cold", "cpu", "--no-stream"], "needs streaming"),
        (["--cloud", "aws", "--deployment", "x"], "give --cold too"),
        (["--cloud", "aws", "--cold", "tpu"], "Invalid value for '--cold'"),
    ],
)
def test_cold_usage_errors_exit_2(args: list[str], said: str) -> None:
    """Refused before any cluster is reached (no kubeconfig is needed to say so)."""
    result = run_llmctl("test-inference", *args, env={"KUBECONFIG": "/nonexistent", **NO_KEY_ENV})
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr


# --- a real model ---------------------------------------------------------------------------------


def smollm2_path() -> Path:
    import os

    path = Path(
        os.environ.get("SMOLLM2_GGUF")
        or Path.home() / ".cache/llmctl/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    if not path.is_file():
        pytest.fail(
            f"the SmolLM2-135M GGUF is missing at {path}: run "
            "`bash scripts/fetch-smollm2.sh` (or set SMOLLM2_GGUF)"
        )
    return path


ENGLISH = {
    "the",
    "a",
    "is",
    "of",
    "and",
    "to",
    "in",
    "that",
    "it",
    "are",
    "can",
    "quantum",
    "computing",
    "computers",
    "information",
    "which",
    "this",
    "on",
    "with",
    "as",
}


def test_smollm2_answers_in_real_english(tmp_path: Path) -> None:
    with LlamaServer(smollm2_path(), CPU_MODEL, tmp_path, ctx=1024) as server:
        config = router_config(
            [backend("aws/cpu", server.url, "cpu", CPU_MODEL)], MODELS[:1], CPU_MODEL
        )
        with RouterProcess(config, tmp_path) as router:
            code, data, stderr = ask(
                router.url,
                CPU_MODEL,
                "--prompt",
                "Explain quantum computing",
                "--max-tokens",
                "48",
                "--expect-tier",
                "cpu",
            )
    assert code == 0, stderr
    reply = data["results"][0]["reply"]
    words = [w.strip(".,;:!?()\"'").lower() for w in reply.split()]
    assert len(words) >= 15, reply
    assert sum(w in ENGLISH for w in words) >= 5, reply
    assert sum(c.isascii() for c in reply) / len(reply) > 0.97, reply


def tier_requests(router: RouterProcess) -> float:
    """llm_router_tier_requests_total, every tier: requests the router has received."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(router.url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_router_tier_requests_total"
    )


def test_cli_does_not_hang_on_ctrl_c_during_requests(stack: Stack) -> None:
    """Ctrl-C while requests are in flight: exit 130, no traceback."""
    import signal
    import sys

    from tests.support.cli import llmctl_env

    before = tier_requests(stack.router)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmctl",
            "test-inference",
            "--url",
            stack.router.url,
            "--model",
            "tinyllama",
            "-n",
            "3000",
            "--concurrency",
            "2",
            "--max-tokens",
            "128",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=llmctl_env(KEY_ENV),
    )
    # Its requests are in flight once the router has counted one (not while it still imports:
    # a Ctrl-C there is Python's, not the command's).
    wait_for(
        "a request of the command at the router", lambda: tier_requests(stack.router) > before, 60
    )
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Interrupted" in err and "Traceback" not in err


# --- through the kubeconfig: --cloud port-forward and --gpu-check --------------------------------
# Against the real API server of the `control_plane` fixture: the rendered router Service and
# Deployment run on a kwok node, whose kubelet (kwok) forwards their port 8080 to the real router
# on loopback; the --gpu-check pod is scheduled on a kwok GPU node shaped as `gpu enable` makes it.


@pytest.fixture
def cluster(stack: Stack, control_plane: ControlPlane, tmp_path: Path) -> Iterator[str]:
    """The router deployed as rendered, each of its pods' port 8080 forwarded (by kwok, its
    kubelet) to the real router; returns the kubeconfig."""
    ensure_namespace(control_plane)
    for cloud in CloudName:  # what `llmctl gpu enable` applies, the RuntimeClass included
        apply_objects(control_plane, cluster_setup_objects(StackConfig(), cloud))
    for pod in deploy_router(control_plane):
        port_forward_to(control_plane, NAMESPACE, pod, 8080, stack.router.port)
    serve_smi_log(control_plane, tmp_path, SMI_LOG)
    yield str(control_plane.kubeconfig)
    assert check_pods(control_plane) == [], "a GPU check pod was left behind"
    reset_llmctl_objects(control_plane)


def test_cloud_port_forwards_to_the_router_service(cluster: str) -> None:
    code, data, stderr = llmctl_json(
        "--cloud",
        "aws",
        "--kubeconfig",
        cluster,
        "--model",
        "tinyllama",
        "-n",
        "4",
        "--concurrency",
        "2",
        "--max-tokens",
        "6",
    )
    assert code == 0, stderr
    assert data["succeeded"] == 4 and data["tiers"] == {"cpu": 4}
    assert data["url"] == "port-forward to service llm-router in llm-server (aws)"


def test_gpu_check_runs_the_pod_prints_its_log_and_deletes_it(
    stack: Stack, cluster: str, control_plane: ControlPlane
) -> None:
    only_these_gpu_nodes(control_plane, [gpu_node(CloudName.GCP, "gpu-gcp-1")])
    result = run_llmctl(
        "test-inference",
        "--cloud",
        "gcp",
        "--url",
        stack.router.url,
        "--kubeconfig",
        cluster,
        "--gpu-check",
        "--model",
        "tinyllama",
        "--max-tokens",
        "4",
        env=KEY_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "Tesla T4" in result.stdout and "Succeeded" in result.stdout
    assert "gpu-gcp-1" in result.stdout and "PASS" in result.stdout
    assert check_pods(control_plane) == []


def test_gpu_check_failure_exits_1_and_deletes_the_pod(
    stack: Stack, cluster: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    serve_smi_log(
        control_plane,
        tmp_path,
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
    )
    only_these_gpu_nodes(control_plane, [gpu_node(CloudName.AWS, "gpu-no-driver")])  # kwok: exit 9
    code, data, stderr = llmctl_json(
        "--cloud", "aws", "--url", stack.router.url, "--kubeconfig", cluster, "--gpu-check"
    )
    assert code == 1
    assert data["gpuCheck"]["phase"] == "Failed" and data["gpuCheck"]["deleted"] is True
    assert "couldn't communicate with the NVIDIA driver" in data["gpuCheck"]["log"]
    assert "the GPU check pod ended Failed (pod deleted: True)" in stderr
    assert check_pods(control_plane) == []


def test_gpu_check_ctrl_c_deletes_the_pod(
    stack: Stack, cluster: str, control_plane: ControlPlane
) -> None:
    import signal
    import sys

    from tests.support.cli import llmctl_env

    only_these_gpu_nodes(control_plane, [])  # no GPU node ever comes
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmctl",
            "test-inference",
            "--cloud",
            "azure",
            "--url",
            stack.router.url,
            "--kubeconfig",
            cluster,
            "--gpu-check",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=llmctl_env(KEY_ENV),
    )
    wait_for("the check pod to be created", lambda: check_pods(control_plane), 60)
    proc.send_signal(signal.SIGINT)  # whether the create's answer has arrived or not
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "was deleted" in err and "Traceback" not in err
    assert check_pods(control_plane) == []
