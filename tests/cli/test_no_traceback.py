"""A newcomer never meets a traceback: every command and subcommand, run as a user would.

The command tree is walked from the Typer app, so a new command is covered without editing this
file: each gets `--help`, `-h`, a bare run and an unknown flag. On top of that come the inputs of
the first-use review (shared/reviews/2026-12-02-newcomer.md), each with its documented exit code
(docs/cli.md): 0 success, 1 failure, 2 usage or configuration error.

Every case runs in its own process with no cloud credentials (no AWS/Azure/GCP variables, HOME
and KUBECONFIG pointing at empty places, metadata servers switched off). The "no extras" runs
block the extras' top-level packages with a meta-path finder, exactly as if they were not
installed; the "extras" runs see everything the test environment has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmctl.cli.main import app
from llmctl.extras import EXTRA_OF_MODULE
from tests.support.cli import SRC, command_tree

NO_EXTRAS = tuple(sorted(EXTRA_OF_MODULE))
ALL_EXTRAS: tuple[str, ...] = ()


def only(extra: str) -> tuple[str, ...]:
    """Block every extra but one: llmctl installed with just that extra."""
    return tuple(sorted(m for m, e in EXTRA_OF_MODULE.items() if e != extra))


# Runs llmctl's real entry point with some top-level packages made unimportable.
BOOT = r"""
import importlib.abc, sys
blocked = {name for name in sys.argv[1].split(",") if name}
for loaded in [m for m in sys.modules if m.split(".")[0] in blocked]:
    del sys.modules[loaded]
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["llmctl", *sys.argv[2:]]
from llmctl.cli.entry import main
main()
"""


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int | tuple[int, ...]
    blocked: tuple[str, ...] = NO_EXTRAS
    env: tuple[tuple[str, str], ...] = ()
    says: str = ""  # a phrase the output must contain
    absent: str = ""  # a phrase it must not contain
    stdin: str = ""

    @property
    def label(self) -> str:
        kept = sorted(set(EXTRA_OF_MODULE.values()) - {EXTRA_OF_MODULE[m] for m in self.blocked})
        mode = "+".join(kept) if kept else "no-extras"
        env = " ".join(f"{k}={v}" for k, v in self.env)
        return f"[{mode}] {env + ' ' if env else ''}llmctl {' '.join(self.args)}".replace(
            "{tmp}", "TMP"
        )


def _walk() -> Iterator[tuple[tuple[str, ...], bool]]:
    import typer.core

    for path, command in sorted(command_tree(app), key=lambda found: found[0]):
        if not getattr(command, "hidden", False):
            yield path, isinstance(command, typer.core.TyperGroup)


COMMANDS = list(_walk())

# What a bare run of a command does, where it is not "print help, exit 0" (groups) or a usage
# error. A command missing here must still exit 0, 1 or 2 without a traceback.
BARE: dict[tuple[str, ...], int] = {
    ("render",): 0,
    ("plan",): 0,
    ("config", "show"): 0,
    ("cost", "estimate"): 0,
    ("gpu", "enable"): 2,
    ("gpu", "status"): 2,
    ("gpu", "disable"): 2,
    ("router", "serve"): 2,
    ("test-inference",): 2,
    ("model", "push"): 2,
    ("model", "fetch"): 2,
}

AZ = (("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000"),)


def _generic_cases() -> list[Case]:
    cases = []
    for path, is_group in COMMANDS:
        cases.append(Case((*path, "--help"), 0, ALL_EXTRAS))
        cases.append(Case((*path, "-h"), 0, says="Usage"))
        cases.append(Case((*path, "--no-such-flag"), 2))
        cases.append(Case(path, 0 if is_group else BARE.get(path, (0, 1, 2))))
    return cases


def _review_cases() -> list[Case]:
    """The review's bad inputs and missing pieces (its finding numbers in the comments)."""
    missing = "extra"
    cases = [
        # 1, 2: the gpu commands without the cloud extra, on every cloud.
        *(
            Case(
                ("gpu", verb, "--cloud", cloud, "--project", "my-project", *yes),
                1,
                env=AZ,
                says=missing,
            )
            for verb, yes in (("enable", ("--yes",)), ("status", ()), ("disable", ("--yes",)))
            for cloud in ("aws", "gcp", "azure")
        ),
        Case(("gpu", "status", "--cloud", "gcp", "--project", "my-project", "--output", "json"), 1),
        # Issue 30: a push needs the cloud extra; the pod's fetch needs none, and says what is
        # missing for a store in one line.
        Case(
            ("model", "push", "llama-2-7b-chat", "--cloud", "aws", "--bucket", "acme-models"),
            1,
            says=missing,
        ),
        Case(
            ("model", "fetch", "--uri", "s3://acme-models/m.gguf", "--path", "/tmp/m.gguf"),
            1,
            says="AWS_REGION",
        ),
        Case(("model", "push", "no-such-model", "--cloud", "gcp"), 2, says="catalog models"),
        Case(("gpu", "status", "--cloud", "aws", "--skip-cluster"), 1, says=missing),
        Case(("gpu", "enable", "--cloud", "aws", "--dry-run"), 0),
        Case(("gpu", "enable", "--cloud", "gcp", "--project", "my-project", "--dry-run"), 0),
        Case(("gpu", "enable", "--cloud", "azure", "--dry-run"), 0, env=AZ),
        Case(("gpu", "enable", "--cloud", "oracle", "--dry-run"), 2),
        Case(("gpu", "enable", "--cloud", "aws", "--dry-run", "--set", "gpu.maxReplicas=5"), 2),
        # 3: router serve without the router extra, with and without a config.
        Case(
            ("router", "serve", "--config", "{tmp}/router.yaml", "--port", "8080"), 1, says=missing
        ),
        Case(("router", "serve", "--config", "{tmp}/absent.yaml"), 1, says=missing),
        Case(("router", "serve", "--config", "{tmp}/router.yaml", "--log-level", "loud"), 2),
        # 3, 8: with the extra: a missing or bad config, and a port already in use.
        Case(("router", "serve", "--config", "{tmp}/absent.yaml"), 2, ALL_EXTRAS),
        Case(("router", "serve", "--config", "{tmp}/bad-router.yaml"), 2, ALL_EXTRAS),
        Case(
            (
                "router",
                "serve",
                "--config",
                "{tmp}/router.yaml",
                "--host",
                "127.0.0.1",
                "--port",
                "{busy_port}",
            ),
            1,
            ALL_EXTRAS,
            says="in use",
        ),
        # 6: -o is --output, never --out.
        Case(("render", "-o", "json"), 2),
        Case(("render", "--stdout"), 2),
        Case(("render", "--cloud", "oracle"), 2),
        Case(("render", "--cloud", "aws", "--gpu", "--stdout"), 0),
        Case(("render", "--out", "/proc/llmctl"), 1, says="cannot use"),
        Case(("render", "--out", "{tmp}/tiny.gguf"), 2),
        # config errors.
        Case(("config", "show", "--config", "{tmp}/absent.yaml"), 2),
        Case(("config", "show", "--config", "{tmp}/bad.yaml"), 2),
        Case(("config", "show", "--set", "nonsense"), 2),
        Case(("config", "show", "--set", "gpu.nope=1"), 2),
        Case(("config", "show", "-o", "xml"), 2),
        Case(("config", "show"), 2, env=(("GPU_INSTANCE_TYPE", "p3.2xlarge"),)),
        Case(("config", "show"), 2, env=(("MAX_GPU_REPLICAS", "many"),)),
        # plan: files that are not GGUF, missing files, bad URLs.
        Case(("plan", "--model", "{tmp}/tiny.gguf"), 2, says="not a GGUF file"),
        Case(("plan", "--model", "{tmp}/absent.gguf"), 2),
        Case(("plan", "--model", "{tmp}"), 2),
        Case(("plan", "--model", "s3://bucket/m.gguf"), 2),
        Case(("plan", "--model", "http://127.0.0.1:9/m.gguf"), 1),
        Case(("plan", "--gpu", "v100"), 2),
        Case(("plan", "-o", "json"), 0),
        # 4, 7, 10: cost inputs.
        Case(("cost", "estimate", "--cloud", "oracle"), 2),
        Case(("cost", "estimate", "--region", "mars-1"), 2),
        Case(("cost", "estimate", "--instance-type", "p3.2xlarge"), 2),
        Case(("cost", "estimate", "--gpu-requests-per-day", "-1"), 2),
        Case(("cost", "estimate", "--tokens-per-second", "0"), 2),
        Case(("cost", "estimate", "--active-hours", "30"), 2),
        Case(("cost", "estimate", "-o", "xml"), 2),
        Case(("cost", "estimate", "--cloud", "gcp", "--gke-free-tier"), 2),
        Case(("cost", "estimate", "--mode", "scale-to-zero", "--idle-timeout", "900"), 0),
        *(
            Case(("cost", "estimate", "-o", "json"), 0, env=(("GPU_INSTANCE_TYPE", name),))
            for name in ("g5.xlarge", "n1-standard-8")
        ),
        *(
            Case(
                ("cost", "estimate"),
                2,
                env=(("GPU_INSTANCE_TYPE", name),),
                says="environment variable GPU_INSTANCE_TYPE",
            )
            for name in ("g4dn.2xlarge", "g2-standard-4", "Standard_NC8as_T4_v3")
        ),
        Case(
            ("cost", "estimate", "--region", "eu-west-1"),
            0,
            env=(("GPU_INSTANCE_TYPE", "g5.xlarge"),),
        ),
        Case(("cost", "estimate", "--region", "us-central1-a"), 0),
        # test-inference without a router, a key or the cloud extra.
        Case(("test-inference", "--url", "http://127.0.0.1:9"), 1),
        Case(("test-inference", "--url", "not a url"), (1, 2)),
        Case(("test-inference", "--url", "http://127.0.0.1:9", "--gpu-check"), 2),
        Case(("test-inference", "--cloud", "aws"), 1, says=missing),
        Case(("test-inference", "--url", "http://127.0.0.1:9", "-o", "json"), 1),
        # a prompt with nobody to answer it says to pass --yes.
        Case(("gpu", "disable", "--cloud", "aws"), (1, 2)),
        # One extra at a time: each command that needs another still says which.
        Case(("plan", "--model", "{tmp}/m.gguf"), 1, says="plan extra"),
        Case(("plan", "--model", "{tmp}/m.gguf"), 0, only("plan")),
        Case(("plan", "--model", "{tmp}/m.gguf"), 1, only("cloud"), says="plan extra"),
        Case(("router", "serve", "--config", "{tmp}/bad-router.yaml"), 2, only("router")),
        Case(
            ("router", "serve", "--config", "{tmp}/router.yaml"),
            1,
            only("cloud"),
            says="router extra",
        ),
        Case(
            ("gpu", "status", "--cloud", "aws", "--skip-cluster"),
            1,
            only("cloud"),
            says="AWS credentials",
        ),
        Case(
            ("gpu", "status", "--cloud", "gcp", "--project", "my-project"),
            1,
            only("router"),
            says="cloud extra",
        ),
        # 2, 11: the extras installed but no credentials anywhere.
        *(
            Case(
                ("gpu", "status", "--cloud", cloud, "--project", "my-project", "--skip-cluster"),
                1,
                ALL_EXTRAS,
                env=AZ,
            )
            for cloud in ("aws", "gcp")
        ),
        Case(("test-inference", "--cloud", "aws"), 1, ALL_EXTRAS),
        # 11: Azure's SDK does not dump its credential search on stderr before llmctl's error.
        Case(
            ("gpu", "status", "--cloud", "azure", "--skip-cluster"),
            1,
            ALL_EXTRAS,
            env=AZ,
            says="no usable Azure credentials",
            absent="Attempted credentials",
        ),
    ]
    return cases


CASES = _generic_cases() + _review_cases()


@dataclass
class Outcome:
    case: Case
    code: int
    output: str = field(repr=False)


def _env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_", "KUBECONFIG", "GPU_", "MAX_GPU", "LLMCTL_")
        )
        and k not in ("OPENAI_API_KEY",)
    }
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        HOME=str(tmp / "home"),
        KUBECONFIG=str(tmp / "absent-kubeconfig"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "absent"),
        AWS_CONFIG_FILE=str(tmp / "absent"),
        NO_GCE_CHECK="true",
        GCE_METADATA_HOST="127.0.0.1:9",
        GCE_METADATA_IP="127.0.0.1:9",
        CLOUDSDK_CONFIG=str(tmp / "gcloud"),
        AZURE_CONFIG_DIR=str(tmp / "azure"),
        # DefaultAzureCredential tries only the developer credentials (files, `az`), not managed
        # identity, which would ask the IMDS address 169.254.169.254: no traffic leaves the
        # machine (`gpu enable --dry-run` reads the quota with it).
        AZURE_TOKEN_CREDENTIALS="dev",
        COLUMNS="200",
    )
    return env


def _run(case: Case, tmp: Path, busy_port: int) -> Outcome:
    args = [a.replace("{tmp}", str(tmp)).replace("{busy_port}", str(busy_port)) for a in case.args]
    workdir = tmp / "work" / str(abs(hash(case)))
    workdir.mkdir(parents=True, exist_ok=True)
    env = _env(tmp)
    env.update(dict(case.env))
    result = subprocess.run(
        [sys.executable, "-c", BOOT, ",".join(case.blocked), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        input=case.stdin,
        timeout=120,
    )
    return Outcome(case, result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[Case, Outcome]:
    import socket

    from typer.testing import CliRunner

    tmp = tmp_path_factory.mktemp("hunt")
    (tmp / "home").mkdir()
    (tmp / "tiny.gguf").write_bytes(b"abc")
    (tmp / "bad.yaml").write_text("gpu: [unclosed\n")
    (tmp / "bad-router.yaml").write_text("models: []\n")
    from tests.support.gguf_models import write_llama_gguf

    write_llama_gguf(tmp / "m.gguf")
    rendered = CliRunner().invoke(app, ["render", "--cloud", "aws", "--stdout"], env={})
    import yaml

    for doc in yaml.safe_load_all(rendered.stdout):
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "llm-router-config":
            (tmp / "router.yaml").write_text(doc["data"]["router.yaml"])
    assert (tmp / "router.yaml").is_file()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
            done = list(pool.map(lambda c: _run(c, tmp, port), CASES))
    return {o.case: o for o in done}


def test_every_command_is_covered() -> None:
    paths = {path for path, _ in COMMANDS}
    assert ("gpu", "status") in paths and ("cost", "estimate") in paths
    assert all((*p, "--help") in {c.args for c in CASES} for p in paths)
    leaves = {path for path, is_group in COMMANDS if not is_group}
    assert set(BARE) <= leaves, f"BARE names commands that no longer exist: {set(BARE) - leaves}"


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_no_traceback_and_the_documented_exit_code(
    case: Case, outcomes: dict[Case, Outcome]
) -> None:
    got = outcomes[case]
    assert "Traceback" not in got.output, got.output
    assert "llmctl hit a bug" not in got.output, got.output
    allowed = case.code if isinstance(case.code, tuple) else (case.code,)
    assert got.code in allowed, f"exit {got.code}, expected {case.code}:\n{got.output}"
    if case.says:
        assert case.says in " ".join(got.output.split()), got.output
    if case.absent:
        assert case.absent not in got.output, got.output
