"""The docs are tested: every `$ command` in README.md and docs/*.md is either run here, with
its output compared with what the page shows, or listed below with the reason it cannot run on
this machine (a cloud account, a cluster, a GPU, docker) and the test that covers it instead.

How a page is read, block by block (each fenced block runs in a fresh empty directory):
- `$ cmd` lines (a trailing `\\` continues a line) are run by bash, with llmctl on PATH, no cloud
  credentials, COLUMNS=100 and HOME in the temporary directory;
- the lines up to the next `$` are what the page shows: they must equal the command's stdout,
  its stderr, or the two one after the other (trailing spaces ignored). A line `...` on its own
  stands for any number of lines. A command the page shows no output for must exit 0;
- `$ cat FILE` followed by text writes FILE for the commands after it; `$ export X=Y` sets a
  variable for them; `$ echo $?` shows the exit code of the command before, and so does a
  last line `(exit N)` under an output.

Review 2026-12-06 compared these by hand and found 16 pages that had drifted; this makes the
drift a test failure.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cli import SRC
from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ELLIPSIS = "..."


@dataclass
class Step:
    line: int
    command: str
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: str
    line: int
    steps: list[Step]

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page that hold `$ ` command lines."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    inside, start, body = False, 0, []
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if inside:
                steps = _steps(body)
                if steps:
                    blocks.append(Block(str(page.relative_to(REPO)), start, steps))
                inside, body = False, []
            else:
                inside, start = True, number
            continue
        if inside:
            body.append((number, line))
    return blocks


def _steps(body: list[tuple[int, str]]) -> list[Step]:
    steps: list[Step] = []
    continuing = False
    for number, line in body:
        if continuing:
            steps[-1].command += " " + line.strip().removesuffix("\\").strip()
            continuing = line.rstrip().endswith("\\")
        elif line.startswith("$ "):
            command = line[2:]
            continuing = command.rstrip().endswith("\\")
            steps.append(Step(number, command.rstrip().removesuffix("\\").strip()))
        elif steps:
            steps[-1].shown.append(line)
    return steps


BLOCKS = [block for page in PAGES for block in _blocks(page)]


# The `values-gpu.yaml` that docs/helm.md shows and its `helm` examples read.
HELM_VALUES_EXAMPLE = re.findall(
    r"```yaml\n(.*?)```", (REPO / "docs" / "helm.md").read_text(encoding="utf-8"), re.S
)[0]


def _program(command: str) -> list[str]:
    """The words of a command without its leading VAR=value assignments and its comment."""
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words


# Commands that cannot run on this machine, by what they start with, and why; each names the
# test that runs the same code path against a real or stand-in service instead.
NOT_HERE: dict[str, str] = {
    "helm install": "needs a cluster: tests/cluster/test_helm.py installs the chart on the "
    "real control plane",
    "kubectl": "needs a cluster: tests/cluster/test_apply.py applies the overlays to the real "
    "control plane",
    "docker": "needs docker: tests/router/test_image.py checks the Dockerfile with hadolint",
    "bash scripts/build-image.sh": "builds two images as root, minutes cold: "
    "tests/image/test_router_image.py runs it and checks what it prints",
    "ctr": "needs a node's containerd (scripts/build-node.sh builds one): tests/image/ checks "
    "the archives carry the names containerd imports them under",
    "python benchmarks/": "a benchmark, minutes long; tests/benchmarks/ runs its parts",
    "llmctl gpu status": "needs a cloud account: tests/clouds/ runs it against moto and the fake "
    "GKE/AKS servers",
    "llmctl gpu disable": "needs a cloud account: tests/clouds/ runs it against moto and the fake "
    "GKE/AKS servers",
    "llmctl model push": "needs a cloud account (a dry run still reads the bucket): "
    "tests/modelstore/test_stores_e2e.py pushes to moto, fake-gcs-server and Azurite",
    "llmctl model fetch": "needs a bucket: tests/modelstore/test_stores_e2e.py fetches from moto, "
    "fake-gcs-server and Azurite",
    "llmctl cost keys --prometheus http://127.0.0.1:9090": "needs a Prometheus that scrapes "
    "routers: tests/router/test_key_policy_e2e.py runs it against a real Prometheus scraping two "
    "real routers",
    "llmctl router serve --config router.yaml": "needs llama.cpp backends at the config's "
    "addresses: tests/router/test_router_e2e.py serves real llama-servers",
    "llmctl test-inference --cloud": "needs a cluster with the router: tests/cli/"
    "test_inference_cmd.py runs it against the real control plane",
    "llmctl test-inference --url http://127.0.0.1:8080": "needs the router and llama.cpp at "
    "port 8080: tests/cli/test_inference_cmd.py runs each case against real llama-servers",
    "LLMCTL_API_KEY= llmctl test-inference": "needs the router at port 8080: "
    "tests/cli/test_inference_cmd.py runs it without a key against a real router",
    "llmctl test-inference --url http://127.0.0.1:8081": "needs port 8081 free on a shared "
    "machine: tests/cli/test_inference_cmd.py checks the connection-refused message on a free "
    "port",
}
# Commands of the shell that only set up the next ones.
SETUP = ("cat ", "export ", "echo $?")


def _not_here(command: str) -> str | None:
    bare = command.split("#", 1)[0].strip()
    for prefix, reason in NOT_HERE.items():
        if bare.startswith(prefix) or " ".join(_program(bare)).startswith(prefix):
            return reason
    if "| kubectl" in bare:
        return NOT_HERE["kubectl"]
    return None


def test_every_command_is_run_or_has_a_reason() -> None:
    unknown = []
    for block in BLOCKS:
        for step in block.steps:
            program = _program(step.command)
            if step.command.startswith(SETUP) or _not_here(step.command):
                continue
            if program[:1] not in (["llmctl"], ["helm"]):
                unknown.append(f"{block.page}:{step.line}: {step.command}")
    assert unknown == [], "add these to NOT_HERE with a reason, or teach this test to run them"


def _env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_", "KUBECONFIG", "GPU_", "MAX_GPU", "LLMCTL_")
        )
        and k not in ("OPENAI_API_KEY",)
    }
    tools = os.pathsep.join(str(Path(p).parent) for p in (sys.executable, require_tool("helm")))
    env.update(
        PATH=f"{tools}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        HOME=str(tmp / "home"),
        KUBECONFIG=str(tmp / "absent-kubeconfig"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "absent"),
        AWS_CONFIG_FILE=str(tmp / "absent"),
        NO_GCE_CHECK="true",
        GCE_METADATA_HOST="127.0.0.1:9",
        AZURE_CONFIG_DIR=str(tmp / "azure"),
        # DefaultAzureCredential without managed identity, which would ask 169.254.169.254
        # (`gpu enable --dry-run` reads the quota).
        AZURE_TOKEN_CREDENTIALS="dev",
        COLUMNS="100",
        NO_COLOR="1",
        TERM="dumb",
    )
    return env


def _clean(lines: list[str]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    while out and not out[0]:
        out.pop(0)
    return out


def _matches(shown: list[str], got: list[str]) -> bool:
    """`shown` equals `got`, where a `...` line in `shown` stands for any lines."""
    if not shown:
        return not got
    if shown[0].strip() == ELLIPSIS:
        return any(_matches(shown[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and shown[0] == got[0] and _matches(shown[1:], got[1:])


def _llmctl_on_path(tmp: Path) -> Path:
    """An `llmctl` command that runs this source tree (the test's interpreter, src/ first)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    script = bin_dir / "llmctl"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m llmctl "$@"\n')
    script.chmod(0o755)
    return bin_dir


def _runs_here(block: Block) -> bool:
    return any(not s.command.startswith(SETUP) and not _not_here(s.command) for s in block.steps)


@pytest.mark.parametrize("block", [b for b in BLOCKS if _runs_here(b)], ids=lambda b: b.label)
def test_the_page_shows_what_the_commands_print(block: Block, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if any(_program(s.command)[:1] == ["helm"] for s in block.steps):
        # helm's examples run in a checkout, with the page's own values-gpu.yaml beside it.
        shutil.copytree(REPO / "charts", work / "charts", ignore=shutil.ignore_patterns("__py*"))
        (work / "values-gpu.yaml").write_text(HELM_VALUES_EXAMPLE)
    env = _env(tmp_path)
    env["PATH"] = f"{_llmctl_on_path(tmp_path)}{os.pathsep}{env['PATH']}"
    last_code = 0
    ran = 0
    for step in block.steps:
        where = f"{block.label}, line {step.line}: `{step.command}`"
        if _not_here(step.command):
            continue
        if step.command.startswith("cat "):
            (work / step.command.split()[1]).write_text("\n".join(step.shown) + "\n")
            continue
        if step.command.startswith("export "):
            name, _, value = step.command[len("export ") :].partition("=")
            env[name] = value
            continue
        if step.command.startswith("echo $?"):
            assert _clean(step.shown) == [str(last_code)], where
            continue
        command = step.command.replace(" /tmp/", f" {tmp_path}/")
        # An error box spans the terminal: the page's box says how wide it was captured.
        boxes = [line for line in step.shown if line.startswith("╭─ Error")]
        env["COLUMNS"] = str(len(boxes[0]) if boxes else 100)
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        ran += 1
        last_code = done.returncode
        shown = _clean(step.shown)
        code = re.fullmatch(r"\(exit (\d+)\)", shown[-1]) if shown else None
        if code:  # the page's note of the exit code, after the output
            assert done.returncode == int(code.group(1)), f"{where}: {done.stderr}"
            shown = _clean(shown[:-1])
        out, err = _clean(done.stdout.splitlines()), _clean(done.stderr.splitlines())
        if not shown:
            assert done.returncode == 0, f"{where} exited {done.returncode}: {done.stderr}"
            continue
        candidates = [out, err, _clean(out + err), _clean(err + out)]
        assert any(_matches(shown, got) for got in candidates), (
            f"{where}: the page shows\n"
            + "\n".join(shown)
            + "\n\nstdout:\n"
            + "\n".join(out)
            + "\n\nstderr:\n"
            + "\n".join(err)
        )
    assert ran > 0, f"{block.label}: nothing ran"
