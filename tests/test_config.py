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


# --- router.gpuWait and named API keys (the router's own settings, config/router_settings.py) ---

ROUTER_SETTINGS = """\
router:
  apiKeys:
    secretName: router-keys
    keys:
      - name: team-a
        gpuTokensPerDay: 200000
        overBudget: refuse
        requestsPerMinute: 120
        gpuWaitSeconds: 60
      - {name: batch, tiers: [cpu]}
    budgetStore:
      prometheusUrl: http://prometheus-operated.monitoring.svc:9090
      matchers: 'namespace="llm-server"'
  gpuWait:
    defaultSeconds: 30
    maxSeconds: 600
    onGiveUp: reject
"""


def test_gpu_wait_and_named_keys_are_read_with_their_meaning(tmp_path: Path) -> None:
    from llmctl.config import GiveUp, OverBudget

    loaded = load_stack(_write(tmp_path, ROUTER_SETTINGS), env={})
    router = loaded.stack.router
    wait = router.gpu_wait
    assert (wait.default_seconds, wait.max_seconds, wait.on_give_up) == (30, 600, GiveUp.REJECT)
    assert (wait.max_depth, wait.retry_after_seconds) == (64, 30)  # the router's defaults
    team, batch = router.api_keys.keys
    assert team.over_budget is OverBudget.REFUSE and team.gpu_tokens_per_day == 200_000
    assert team.tiers == ("cpu", "gpu") and batch.tiers == ("cpu",)
    assert router.api_keys.budget_store is not None
    assert router.api_keys.budget_store.refresh_seconds == 5.0
    # `config show` lists each as set in the file (a list is one setting, at its own line).
    assert str(loaded.changed["router.apiKeys.keys"][1]) == f"{tmp_path / 'llmctl.yaml'}:4"
    assert str(loaded.changed["router.gpuWait.defaultSeconds"][1]).endswith(":15")


@pytest.mark.parametrize(
    ("text", "line", "needles", "hint"),
    [
        (
            "router:\n  apiKeys:\n    keys: [{name: team-a}]\n",
            3,
            ["invalid router.apiKeys", "named keys need router.apiKeys.secretName"],
            "name:secret",
        ),
        (
            "router:\n  apiKeys:\n    secretName: k\n    keys:\n"
            "      - {name: a, gpuTokensPerDay: 5}\n",
            3,
            ["gpuTokensPerDay (keys a) needs router.apiKeys.budgetStore.prometheusUrl"],
            "observability.prometheusUrl",
        ),
        (
            "router:\n  apiKeys:\n    secretName: k\n    keys:\n      - name: a\n"
            "      - name: b\n        tiers: [tpu]\n",
            6,
            ["invalid router.apiKeys.keys.1", "key b: tiers must be a non-empty list"],
            "tiers: [cpu]",
        ),
        (
            "router:\n  apiKeys:\n    secretName: k\n    keys: [{name: a}, {name: a}]\n",
            3,
            ["key names must be unique; repeated: a"],
            "its own name",
        ),
        (
            "router:\n  gpuWait:\n    maxSeconds: 60\n    defaultSeconds: 90\n",
            3,
            ["invalid router.gpuWait", "defaultSeconds must not be longer than maxSeconds"],
            "raise gpuWait.maxSeconds to at least 90",
        ),
        (
            "router:\n  gpuWait:\n    onGiveUp: queue\n",
            3,
            ["invalid router.gpuWait.onGiveUp (got 'queue')", "'fallback' or 'reject'"],
            None,
        ),
        (
            "router:\n  apiKeys:\n    secretName: k\n    keys:\n      - name: a:b\n",
            5,
            ["invalid router.apiKeys.keys.0.name (got 'a:b')"],
            None,
        ),
    ],
)
def test_bad_router_settings_are_one_sentence_with_the_line_and_a_hint(
    tmp_path: Path, text: str, line: int, needles: list[str], hint: str | None
) -> None:
    path = _write(tmp_path, text)
    message = _error(config_file=path, env={})
    first, _, rest = message.partition("\nHint: ")
    assert first.startswith(f"{path}:{line}: "), message
    for needle in needles:
        assert needle in first, message
    if hint is not None:
        assert hint in rest, message


def test_a_secret_in_llmctl_yaml_is_refused_and_the_allowed_keys_listed(tmp_path: Path) -> None:
    """The secrets stay in the Secret: a key policy has no place for one, so none can reach the
    rendered files."""
    text = (
        "router:\n  apiKeys:\n    secretName: k\n    keys:\n      - name: a\n        secret: sk-1\n"
    )
    message = _error(config_file=_write(tmp_path, text), env={})
    assert "unknown setting 'router.apiKeys.keys.0.secret'" in message
    assert f"{tmp_path / 'llmctl.yaml'}:6" in message
    assert "allowed keys here: gpuTokensPerDay, gpuWaitSeconds, name, overBudget" in message
