"""`llmctl render` and `llmctl config show` through the real command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from llmctl.catalog import CloudName
from llmctl.cli.main import app
from llmctl.config import Stack
from llmctl.manifests.build import built_objects
from tests.support.cli import run_llmctl

runner = CliRunner()


def render(*args: str, **env: str) -> Any:
    """`llmctl render ARGS` with only these environment variables."""
    return runner.invoke(app, ["render", *args], env=env)


def test_render_writes_every_tree(tmp_path: Path) -> None:
    result = render("--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "42 file(s) written" in result.output
    for cloud in ("aws", "azure", "gcp"):
        assert (tmp_path / "clusters" / cloud / "base" / "kustomization.yaml").is_file()
        assert (tmp_path / "clusters" / cloud / "overlays" / "gpu" / "kustomization.yaml").is_file()
        for tier in ("cpu", "gpu"):
            assert (tmp_path / "charts" / "llm-router" / f"values-{cloud}-{tier}.yaml").is_file()
    again = render("--out", str(tmp_path))
    assert "0 file(s) written, 42 unchanged" in again.output


def test_render_one_cloud(tmp_path: Path) -> None:
    result = render("--cloud", "gcp", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "clusters").iterdir()) == ["components", "gcp"]
    values = sorted(p.name for p in (tmp_path / "charts" / "llm-router").glob("values-*-*.yaml"))
    assert values == ["values-gcp-cpu.yaml", "values-gcp-gpu.yaml"]
    # The chart itself comes along, so `helm install ... charts/llm-router` works anywhere.
    assert (tmp_path / "charts" / "llm-router" / "Chart.yaml").is_file()
    assert "Helm chart in" in result.output


def test_render_in_the_checkout_leaves_the_chart_alone(repo: Path) -> None:
    from llmctl.manifests.rendering import chart_files, chart_source

    assert chart_source() == repo / "charts" / "llm-router"
    files = chart_files()
    assert Path("Chart.yaml") in files and Path("values.yaml") in files
    assert not any(p.name.startswith("values-") and p.name.endswith("-gpu.yaml") for p in files)


def test_stdout_prints_the_gpu_overlay_objects() -> None:
    result = render("--cloud", "aws", "--gpu", "--stdout")
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(result.stdout)) == built_objects(
        Stack(), CloudName.AWS, gpu=True
    )


def test_gpu_enabled_env_picks_the_overlay_for_stdout() -> None:
    on = render("--cloud", "azure", "--stdout", GPU_ENABLED="true")
    off = render("--cloud", "azure", "--stdout", GPU_ENABLED="false")
    assert "gpu-llm-server" in on.output and "gpu-llm-server" not in off.output


def test_unknown_cloud_exits_2_with_the_allowed_values() -> None:
    result = render("--cloud", "oracle", "--stdout")
    assert result.exit_code == 2
    assert "oracle" in result.output and "aws, azure, gcp, all" in result.output
    assert "Traceback" not in result.output


def test_stdout_needs_one_cloud() -> None:
    result = render("--stdout")
    assert result.exit_code == 2 and "--cloud" in result.output


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text("gpu:\n  maxReplicas: lots\n")
    # Wide enough that the error panel does not cut pytest's long temporary path.
    result = render("--config", str(config), "--out", str(tmp_path), COLUMNS="300")
    assert result.exit_code == 2
    assert f"{config}:2" in result.output and "gpu.maxReplicas" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "clusters").exists()  # nothing half-written


def test_config_show_reports_sources(tmp_path: Path) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text("router:\n  replicas: 3\n")
    result = runner.invoke(
        app,
        ["config", "show", "--config", str(config), "--set", "gpu.maxReplicas=3"],
        env={"GPU_ENABLED": "1"},
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["gpu"]["enabled"] is True and shown["gpu"]["maxReplicas"] == 3
    assert shown["router"]["replicas"] == 3
    assert "gpu.enabled" in result.output and "(environment variable GPU_ENABLED)" in result.output
    assert f"({config}:2)" in result.output and "(--set gpu.maxReplicas)" in result.output


def test_config_show_json() -> None:
    import json

    result = runner.invoke(
        app, ["config", "show", "--output", "json"], env={"MAX_GPU_REPLICAS": "3"}
    )
    data = json.loads(result.output)
    assert data["config"]["gpu"]["maxReplicas"] == 3
    assert data["sources"] == {"gpu.maxReplicas": "environment variable MAX_GPU_REPLICAS"}


def test_python_dash_m_works() -> None:
    result = run_llmctl("--version")
    assert result.returncode == 0 and result.stdout.startswith("llmctl ")


def test_render_refuses_a_gpu_tier_that_does_not_fit_and_writes_nothing(tmp_path: Path) -> None:
    result = render(
        "--out",
        str(tmp_path),
        "--set",
        "gpu.llamacpp.parallel=10",
        "--set",
        "gpu.llamacpp.ctx_per_request=4096",
    )
    assert result.exit_code == 2
    flat = " ".join(result.output.replace("│", " ").split())
    assert "would not fit its GPU" in flat and "lower gpu.llamacpp.parallel to 5" in flat
    assert not (tmp_path / "clusters").exists()


def test_render_warns_when_the_gpu_model_cannot_be_checked(tmp_path: Path) -> None:
    result = render("--cloud", "aws", "--gpu", "--stdout", "--set", "gpu.model.name=my-model")
    assert result.exit_code == 0
    assert "warning: model 'my-model' is not in llmctl's catalog" in result.stderr
    assert "warning:" not in result.stdout  # the YAML on stdout stays clean
    assert list(yaml.safe_load_all(result.stdout))


def test_an_uncatalogued_model_is_warned_about_once_with_its_inherited_size(
    tmp_path: Path,
) -> None:
    # Review 2026-12-06, N11: the warning came once per cloud, and never said that the router
    # kept Llama-2-7B's 6738415616 parameters for the new model.
    result = render("--out", str(tmp_path), "--set", "gpu.model.name=mistral-7b")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("is not in llmctl's catalog") == 1, result.stderr
    assert "gpu.model.parameters, now 6,738,415,616 (inherited" in result.stderr


def test_render_warns_on_stderr_while_the_router_image_is_the_unpublished_default() -> None:
    result = render("--cloud", "aws", "--stdout")
    assert result.exit_code == 0
    assert "warning: images.router is still the default ghcr.io/llmctl/llm-router" in (
        result.stderr
    )
    assert "warning:" not in result.stdout
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-router:0.1.0"
    own = render("--cloud", "aws", "--stdout", "--set", f"images.router={image}")
    assert own.exit_code == 0
    assert "images.router" not in own.stderr


def test_render_warns_about_eks_model_volumes_without_a_storage_class(tmp_path: Path) -> None:
    result = render("--out", str(tmp_path))
    assert result.exit_code == 0
    flat = " ".join(result.stderr.split())
    # The GPU tier's model volume is an emptyDir on the node's local disk (issue 30): no class.
    assert "cpu.model.storageClassName unset" in flat
    assert "gpu.model.storageClassName" not in flat
    assert "EKS clusters created at 1.30 or later have none" in flat
    network = render("--out", str(tmp_path), "--set", "gpu.model.volume=ephemeral")
    flat = " ".join(network.stderr.split())
    assert "cpu.model.storageClassName and gpu.model.storageClassName unset" in flat
    gcp = render("--cloud", "gcp", "--stdout")
    assert "storageClassName" not in gcp.stderr  # GKE and AKS have a default class
    classed = render("--cloud", "aws", "--stdout", "--set", "cpu.model.storageClassName=gp3")
    assert "storageClassName" not in classed.stderr  # the base has no GPU tier
    assert "storageClassName: gp3" in classed.stdout
