"""The second newcomer review's bad inputs (shared/reviews/2026-12-06-newcomer.md, N8, N12):
each gave "llmctl hit a bug" or a confusing hint. Now each is one sentence, a hint and the
documented exit code (docs/cli.md), run as a user runs llmctl: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import llmctl_env, run_llmctl

BUG = "hit a bug"


@pytest.fixture
def not_text(tmp_path: Path) -> Path:
    """2 kB that no UTF-8 decoder accepts (the review used /dev/urandom)."""
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(128, 256)) * 16)
    return path


def flat(text: str) -> str:
    """Rich's error box, unwrapped: one line of words."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_a_config_file_that_is_not_text(not_text: Path) -> None:
    result = run_llmctl("config", "show", "--config", str(not_text))
    assert result.returncode == 2, result.stderr
    assert f"config file {not_text} is not UTF-8 text" in flat(result.stderr)
    assert BUG not in result.stderr


def test_a_kubeconfig_that_is_not_text_skips_the_dry_runs_preflight(not_text: Path) -> None:
    result = run_llmctl(
        "gpu", "enable", "--cloud", "aws", "--dry-run", env={"KUBECONFIG": str(not_text)}
    )
    assert result.returncode == 0, result.stderr
    assert "Preflight skipped, cluster not read" in result.stderr
    assert f"{not_text} is not UTF-8 text" in flat(result.stderr)
    assert BUG not in result.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:eighty", "Port could not be cast"),
    ],
)
def test_a_malformed_url_is_a_usage_error(url: str, why: str) -> None:
    result = run_llmctl("test-inference", "--url", url)
    assert result.returncode == 2, result.stderr
    assert f"--url {url!r} is not a valid URL: {why}" in flat(result.stderr)
    model = run_llmctl("plan", "--model", url + "/m.gguf")
    assert model.returncode == 2, model.stderr
    assert "is not a valid URL" in flat(model.stderr) and BUG not in model.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("plan",),
        ("plan", "-o", "json"),
        ("render", "--cloud", "aws", "--stdout"),
        ("cost", "estimate", "-o", "json"),
        ("config", "show"),
        ("--help",),
    ],
)
def test_a_full_disk_on_stdout(args: tuple[str, ...]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "llmctl", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=llmctl_env(),
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert "cannot write the output: No space left on device" in flat(result.stderr)
    assert BUG not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_the_kubeconfig_hint_of_test_inference_is_a_sentence_about_its_own_flags(
    tmp_path: Path,
) -> None:
    # N12: "Hint: or point $KUBECONFIG ...; --skip-cluster-setup skips this step" (a gpu flag).
    env = {"KUBECONFIG": os.fspath(tmp_path / "absent")}
    result = run_llmctl("test-inference", "--cloud", "aws", env=env)
    assert result.returncode == 1, result.stderr
    hint = flat(result.stderr).split("Hint: ", 1)[1]
    assert hint.startswith("point $KUBECONFIG"), hint
    assert "--skip-cluster-setup" not in hint


def test_router_serve_given_the_rendered_manifest_says_where_the_config_is(repo: Path) -> None:
    # N5: "router config ... is not valid YAML: expected a single document in the stream".
    manifest = repo / "clusters" / "aws" / "base" / "router.yaml"
    result = run_llmctl("router", "serve", "--config", str(manifest))
    assert result.returncode == 2, result.stderr
    said = flat(result.stderr)
    assert "is a Kubernetes manifest" in said and "data.router.yaml" in said, said
    assert "docs/router.md" in said


def test_router_serve_with_a_config_that_is_not_text(not_text: Path) -> None:
    result = run_llmctl("router", "serve", "--config", str(not_text))
    assert result.returncode == 2, result.stderr
    assert "is not UTF-8 text" in flat(result.stderr) and BUG not in result.stderr


def test_live_prices_without_the_cloud_extra_say_how_to_add_it() -> None:
    # N13: "could not refresh aws prices (ModuleNotFoundError: No module named 'boto3')".
    from tests.cli.test_no_traceback import BOOT

    result = subprocess.run(
        [sys.executable, "-c", BOOT, "boto3,botocore", "cost", "estimate", "--live"]
        + ["--cloud", "aws", "--mode", "gpu"],
        capture_output=True,
        text=True,
        env=llmctl_env({"COLUMNS": "200", "AWS_EC2_METADATA_DISABLED": "true"}),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert (
        "could not refresh aws prices (boto3 is not installed; install llmctl's cloud extra:"
        in (said)
    ), said
    assert "ModuleNotFoundError" not in said
