"""Every `--output json` follows docs/cli.md's one convention: a single object, camelCase keys
(data-keyed maps aside), and sums apart from the rows they sum.

The commands are found by walking the Typer app for an `--output` option that offers json, so a
new command with a JSON output fails here until it has an invocation below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import typer
import typer.core
from moto import mock_aws
from typer.testing import CliRunner

from llmctl.cli.main import app
from llmctl.cli.output import DATA_MAPS, camel
from tests.support.cli import command_tree
from tests.support.cloud_env import clean_cloud_env
from tests.support.fake_service_quotas import ec2_quotas

__all__ = ["clean_cloud_env"]
runner = CliRunner()
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def _json_commands() -> set[tuple[str, ...]]:
    found = set()
    for path, command in command_tree(app):
        if isinstance(command, typer.core.TyperGroup):
            continue
        for param in command.params:
            if "--output" not in getattr(param, "opts", ()):
                continue
            choices = getattr(param.type_descriptor, "choices", None) or ()
            values = [getattr(c, "value", c) for c in choices]
            if "json" in values or "json" in (param.help or ""):
                found.add(path)
    return found


def _keys(data: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield where, str(key)
            if str(key) not in DATA_MAPS:
                yield from _keys(value, f"{where}.{key}")
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _keys(item, f"{where}[{i}]")


def check_convention(data: Any) -> None:
    assert isinstance(data, dict), "the document is one JSON object"
    bad = [f"{where}.{key}" for where, key in _keys(data) if not CAMEL.match(key)]
    assert not bad, f"keys that are not camelCase: {bad}"
    rows = data.get("rows")
    if isinstance(rows, list):
        sums = [r for r in rows if isinstance(r, dict) and "total" in r.values()]
        assert not sums, "a sum among the rows: put it under totals"


@pytest.fixture
def eks(monkeypatch: pytest.MonkeyPatch, clean_cloud_env: None) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ec2_quotas(monkeypatch)  # an account with G-family quota: enable reads it first
        client = boto3.client("eks", region_name="us-east-1")
        client.create_cluster(
            name="llm-aws",
            roleArn="arn:aws:iam::123456789012:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-a"]},
        )
        client.create_nodegroup(
            clusterName="llm-aws",
            nodegroupName="system",
            subnets=["subnet-a"],
            nodeRole="arn:aws:iam::123456789012:role/n",
        )
        yield


# How to get each command's JSON without a cloud or a deployment. test-inference reports a
# failed request as JSON too (exit 1), which is enough to check its keys.
INVOCATIONS: dict[tuple[str, ...], tuple[list[str], int]] = {
    ("plan",): (["plan", "-o", "json"], 0),
    ("cost", "estimate"): (["cost", "estimate", "-o", "json"], 0),
    ("config", "show"): (["config", "show", "-o", "json"], 0),
    ("gpu", "status"): (["gpu", "status", "--cloud", "aws", "--skip-cluster", "-o", "json"], 0),
    ("test-inference",): (["test-inference", "--url", "http://127.0.0.1:9", "-o", "json"], 1),
    ("model", "push"): (
        ["model", "push", "llama-2-7b-chat", "--cloud", "aws", "--bucket", "acme-llm-models"]
        + ["--create-bucket", "--dry-run", "-o", "json"],
        0,
    ),
}


def test_every_json_command_has_an_invocation() -> None:
    assert _json_commands() == set(INVOCATIONS)


@pytest.mark.parametrize("path", sorted(INVOCATIONS), ids=" ".join)
def test_json_output_follows_the_convention(
    path: tuple[str, ...], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMCTL_CONFIG", raising=False)
    if path[0] in ("gpu", "model"):
        request.getfixturevalue("eks")  # moto's EKS, S3 and Service Quotas
    if path == ("gpu", "status"):
        enabled = runner.invoke(
            app, ["gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup"]
        )
        assert enabled.exit_code == 0, enabled.output
    args, code = INVOCATIONS[path]
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    check_convention(json.loads(result.stdout))


def test_the_checker_catches_what_the_review_found() -> None:
    with pytest.raises(AssertionError, match="camelCase"):
        check_convention({"rows": [], "wall_s": 1.0})
    with pytest.raises(AssertionError, match="totals"):
        check_convention({"rows": [{"cloud": "aws"}, {"cloud": "total"}]})
    check_convention({"tiers": {"cpu-fallback": 1}, "labels": {"llmctl.dev/x": "y"}})
    assert camel("output_tokens_per_s") == "outputTokensPerSecond"
    assert camel("wall_s") == "wallSeconds" and camel("headroomBytes") == "headroomBytes"
