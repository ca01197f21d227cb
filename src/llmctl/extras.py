"""The optional extras, and the one pip command that adds a missing one to *this* installation.

`llmctl` on PyPI is somebody else's project, so a hint must never say `pip install 'llmctl[...]'`.
llmctl's distribution is `llmctl-k8s`. When it was installed from a checkout or a wheel file
(pip records that in `direct_url.json`, PEP 610), the hint names that path instead, so following
it adds the extra to the very copy that is running, with the very pip of its environment.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from llmctl.errors import LlmctlError

DISTRIBUTION = "llmctl-k8s"

# What each extra brings, said the way an error message needs it.
EXTRAS: dict[str, str] = {
    "cloud": "the cloud SDKs and the Kubernetes client",
    "router": "the router's HTTP server",
    "plan": "GGUF header reading",
}

# Top-level import names that only an extra installs -> that extra.
EXTRA_OF_MODULE: dict[str, str] = {
    "boto3": "cloud",
    "botocore": "cloud",
    "google": "cloud",
    "azure": "cloud",
    "kubernetes": "cloud",
    "httptools": "router",
    "uvicorn": "router",
    "uvloop": "router",
    "gguf": "plan",
    "numpy": "plan",
}

_CHECKOUT = Path(__file__).resolve().parents[2]


def extra_for_module(module: str | None) -> str | None:
    """The extra that installs `module` (a dotted import name), or None."""
    if not module:
        return None
    return EXTRA_OF_MODULE.get(module.split(".", 1)[0])


def _installed_from() -> tuple[str, bool] | None:
    """(path, editable) of the checkout or wheel this copy was installed from, if pip said so."""
    from importlib import metadata

    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file":
        return None
    path = unquote(url.path)
    editable = bool(info.get("dir_info", {}).get("editable"))
    return (path, editable) if Path(path).exists() else None


def install_target(extra: str) -> str:
    """What to hand pip for `llmctl[extra]`: a checkout or wheel path, else the PyPI name."""
    found = _installed_from()
    if found is not None:
        path, editable = found
        return ("-e " if editable else "") + shlex.quote(f"{path}[{extra}]")
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "src" / "llmctl").is_dir():
        # Run from a source tree that pip does not know about (PYTHONPATH=src).
        return shlex.quote(f"{_CHECKOUT}[{extra}]")
    return shlex.quote(f"{DISTRIBUTION}[{extra}]")


def install_command(extra: str) -> str:
    """The full command, with this environment's own Python, so it lands in the right venv."""
    return f"{shlex.quote(sys.executable)} -m pip install {install_target(extra)}"


def install_hint(extra: str) -> str:
    return f"install llmctl's {extra} extra: {install_command(extra)}"


def missing_extra(extra: str, module: str, what: str | None = None) -> LlmctlError:
    """The error for a missing optional package: what needs it, and the command that adds it."""
    needs = what or EXTRAS.get(extra, f"the {extra} extra")
    return LlmctlError(
        f"{needs} need the {module} package, which is not installed", hint=install_hint(extra)
    )
