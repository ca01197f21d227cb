"""Layered configuration: every source applies in order, and every bad value names its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.config import Stack, load_stack, parse_set_flags
from llmctl.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmctl.yaml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    loaded = load_stack(env={})
    stack = loaded.stack
    assert loaded.changed == {} and loaded.config_file is None
    assert stack.cpu.model.name == "tinyllama-1.1b-chat"
    assert stack.gpu.model.name == "llama-2-7b-chat" and stack.gpu.model.uri.endswith("Q4_K_M.gguf")
    assert (stack.gpu.enabled, stack.gpu.min_replicas, stack.gpu.max_replicas) == (False, 0, 2)
    assert stack.gpu.resource_name == "nvidia.com/gpu"
    assert stack.gpu.llamacpp.ctx_per_slot >= 2048 and stack.cpu.llamacpp.ctx_per_slot >= 2048
    assert stack.gpu.instance_types.aws == "g4dn.xlarge"
    assert stack.gpu.instance_types.azure == "Standard_NC4as_T4_v3"
    assert stack.gpu.instance_types.gcp == "n1-standard-4"


def test_sources_apply_lowest_first(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpu:\n  enabled: false\n  maxReplicas: 3\nrouter:\n  replicas: 4\n")
    loaded = load_stack(
        path,
        env={"GPU_ENABLED": "true", "MAX_GPU_REPLICAS": "2"},
        flags=parse_set_flags(["gpu.maxReplicas=1"]),
    )
    assert loaded.stack.gpu.enabled is True  # env beats file
    assert loaded.stack.gpu.max_replicas == 1  # flag beats env
    assert loaded.stack.router.replicas == 4  # file beats default
    assert str(loaded.changed["router.replicas"][1]) == f"{path}:5"
    assert str(loaded.changed["gpu.enabled"][1]) == "environment variable GPU_ENABLED"
    assert str(loaded.changed["gpu.maxReplicas"][1]) == "--set gpu.maxReplicas"


def test_config_file_comes_from_llmctl_config_env(tmp_path: Path) -> None:
    path = _write(tmp_path, "router:\n  replicas: 3\n")
    loaded = load_stack(env={"LLMCTL_CONFIG": str(path)})
    assert loaded.config_file == path and loaded.stack.router.replicas == 3


def test_gpu_instance_type_env_sets_its_own_cloud_only() -> None:
    stack = load_stack(env={"GPU_INSTANCE_TYPE": "Standard_NC8as_T4_v3"}).stack
    assert stack.gpu.instance_types.azure == "Standard_NC8as_T4_v3"
    assert stack.gpu.instance_types.aws == "g4dn.xlarge"


def _error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_stack(**kwargs)  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    return info.value.format_message()


def test_bad_file_value_names_field_file_line_and_what_is_allowed(tmp_path: Path) -> None:
    path = _write(tmp_path, "# comment\ngpu:\n  enabled: true\n  maxReplicas: -1\n")
    message = _error(config_file=path, env={})
    assert f"{path}:4" in message and "gpu.maxReplicas" in message
    assert "greater than or equal to 1" in message


def test_typo_in_file_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpu:\n  enabeld: true\n")
    message = _error(config_file=path, env={})
    assert f"{path}:2" in message and "gpu.enabeld" in message
    assert "enabled" in message and "maxReplicas" in message


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GPU_ENABLED": "maybe"}, "GPU_ENABLED='maybe' is not a boolean"),
        ({"MAX_GPU_REPLICAS": "two"}, "MAX_GPU_REPLICAS='two' is not a whole number"),
        (
            {"MAX_GPU_REPLICAS": "0"},
            "environment variable MAX_GPU_REPLICAS: invalid gpu.maxReplicas",
        ),
        ({"GPU_INSTANCE_TYPE": "p5.48xlarge"}, "g4dn.xlarge"),
    ],
)
def test_bad_env_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    assert needle in _error(env=env)


def test_slots_that_cannot_hold_one_request_are_refused(tmp_path: Path) -> None:
    # The trap TOOLING.md records: -c 4096 -np 8 leaves each request 512 tokens.
    path = _write(
        tmp_path, "gpu:\n  llamacpp:\n    ctx_size: 4096\n    parallel: 8\n    kv_unified: false\n"
    )
    message = _error(config_file=path, env={})
    assert "split over 8 parallel slots leaves 512 tokens per request" in message
    assert "16384" in message and f"{path}:3" in message


def test_short_slots_get_a_unified_cache_when_it_holds_a_request(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpu:\n  llamacpp:\n    ctx_size: 4096\n    parallel: 8\n")
    llamacpp = load_stack(path, env={}).stack.gpu.llamacpp
    assert llamacpp.unified and llamacpp.ctx_per_slot == 4096


def test_unified_cache_smaller_than_one_request_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpu:\n  llamacpp:\n    ctx_size: 1024\n    parallel: 8\n")
    message = _error(config_file=path, env={})
    assert "ctx_size 1024 unified leaves 1024 tokens per request" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "gpu:\n  enabled: [true\n")
    assert f"{path}:" in _error(config_file=path, env={})


def test_missing_config_file_says_how_to_fix(tmp_path: Path) -> None:
    message = _error(config_file=tmp_path / "nope.yaml", env={})
    assert "cannot read config file" in message and "--config" in message


def test_min_above_max_is_refused() -> None:
    message = _error(env={}, flags=parse_set_flags(["gpu.minReplicas=3", "gpu.maxReplicas=2"]))
    assert "minReplicas 3 is above maxReplicas 2" in message


def test_set_flag_needs_key_and_value() -> None:
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_set_flags(["gpu.enabled"])


def test_stack_is_frozen() -> None:
    with pytest.raises(ValueError):
        Stack().gpu.enabled = True  # type: ignore[misc]


def test_a_unified_cache_too_small_asks_only_for_one_request() -> None:
    # ctx_size 1024 unified over 8 slots: one request may use the whole cache, so 2048 is enough
    # (the hint used to ask for ctx_per_request x parallel = 16384).
    from pydantic import ValidationError

    from llmctl.config import LlamaCpp

    with pytest.raises(ValidationError, match="raise ctx_size to at least 2048 "):
        LlamaCpp(ngl=-1, flash_attn=True, ctx_per_request=2048, ctx_size=1024, parallel=8)
    with pytest.raises(ValidationError, match="at least 16384 .*drop kv_unified: false"):
        LlamaCpp(
            ngl=-1,
            flash_attn=True,
            ctx_per_request=2048,
            ctx_size=4096,
            parallel=8,
            kv_unified=False,
        )


@pytest.mark.parametrize("text", ["", "{}\n", "# only a comment\n"])
def test_a_config_file_that_sets_nothing_gives_the_defaults(tmp_path: Path, text: str) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text(text)
    assert load_stack(config, env={}).stack == Stack()


def test_numeric_quantities_read_as_kubernetes_reads_them(tmp_path: Path) -> None:
    """`cpu: 2` in YAML, or `--set ...cpu=2`, is a number to the parser and a valid Kubernetes
    quantity: it is kept as its text, not refused for not being a string."""
    path = _write(tmp_path, "cpu:\n  resources:\n    requests: {cpu: 2, memory: 1Gi}\n")
    path_stack = load_stack(path, env={}).stack
    assert path_stack.cpu.resources.requests.cpu == "2"
    flags = parse_set_flags(["router.resources.requests.cpu=0.5"])
    assert load_stack(None, env={}, flags=flags).stack.router.resources.requests.cpu == "0.5"
    with pytest.raises(ConfigError, match="cpu.resources.requests.cpu"):
        load_stack(None, env={}, flags=parse_set_flags(["cpu.resources.requests.cpu=true"]))
