"""The house's import rules (shared/DESIGN.md, section 1), checked on every import in src/llmctl.

Function-level imports count too: a lazy import of a cloud SDK inside `manifests/` would still
make the renderer depend on it. A broken rule fails with the file, the line and the import.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "llmctl"

# Third-party clients that talk to a network or a cluster: only adapters may import them.
NETWORK_CLIENTS = (
    "boto3",
    "botocore",
    "google",
    "azure",
    "kubernetes",
    "httpx",
    "aiohttp",
    "requests",
)


@dataclass(frozen=True)
class Rule:
    """Which llmctl modules and third-party clients a part of the package may import."""

    part: str
    may_import: tuple[str, ...]
    no_network_clients: bool
    why: str
    adapters: tuple[str, ...] = ()  # modules of the part that may use network clients


# llmctl.extras: which extra brings a module, and the pip command that installs it here.
LEAVES = ("llmctl.config", "llmctl.catalog", "llmctl.errors", "llmctl.assets", "llmctl.extras")

RULES = (
    Rule(
        "llmctl.router",
        ("llmctl.router", "llmctl.config", "llmctl.catalog", "llmctl.errors"),
        True,
        "the router image carries no cloud SDK, Kubernetes client or CLI",
    ),
    Rule(
        "llmctl.manifests",
        (
            *LEAVES,
            "llmctl.manifests",
            "llmctl.router.table",
            "llmctl.router.peer_config",  # router.yaml's federation section: pure data too
            "llmctl.plan",
            "llmctl.cost.prices",
            "llmctl.modelstore.locations",  # store URIs: pure, standard library only
        ),
        True,
        "rendering is pure: config in, files out",
    ),
    Rule(
        "llmctl.plan",
        (*LEAVES, "llmctl.plan"),
        True,
        "the GPU memory model is pure (the GGUF reader uses only the standard library)",
    ),
    Rule(
        "llmctl.cost",
        (*LEAVES, "llmctl.cost"),
        True,
        "the cost model is pure; only its live-price adapter talks to the price APIs",
        adapters=("llmctl.cost.live",),
    ),
    Rule(
        "llmctl.modelstore",
        (*LEAVES, "llmctl.modelstore"),
        True,
        "the pod's model fetcher runs in the router image, which has no cloud SDK: only the "
        "push side's store adapters use the SDKs",
        adapters=("llmctl.modelstore.stores",),
    ),
    Rule(
        "llmctl.kube",
        (*LEAVES, "llmctl.kube"),
        True,
        "the Kubernetes adapter: only its client module talks to the API; the kind table, the "
        "preflight policy and the scale-up diagnosis go through it",
        adapters=("llmctl.kube.client",),
    ),
    Rule(
        "llmctl.config",
        ("llmctl.config", "llmctl.catalog", "llmctl.errors"),
        True,
        "config is a leaf",
    ),
    Rule("llmctl.catalog", ("llmctl.errors",), True, "the catalog is a leaf"),
    Rule("llmctl.errors", (), True, "errors is a leaf"),
    Rule(
        "llmctl.assets",
        ("llmctl.extras",),
        True,
        "assets is a leaf; it knows a checkout by the distribution name extras holds",
    ),
    Rule("llmctl.extras", ("llmctl.errors",), True, "extras is a leaf"),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. llmctl.manifests.render
    target: str  # the imported module, absolute
    where: str  # path:line


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    """Every import in the file at `path` (or in `source`, read as if it lived there)."""
    text = path.read_text(encoding="utf-8") if source is None else source
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(text, str(path))):
        where = f"{path.relative_to(SRC.parents[1])}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from llmctl import catalog` imports the module llmctl.catalog.
            names = (
                [f"{target}.{alias.name}" for alias in node.names]
                if target == "llmctl"
                else [target]
            )
            found += [Import(module, name, where) for name in names]
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(all_imports: list[Import]) -> list[str]:
    broken = []
    for imp in all_imports:
        entry_point = imp.module == "llmctl.__main__"
        if within(imp.target, "llmctl.cli") and not (
            within(imp.module, "llmctl.cli") or entry_point
        ):
            broken.append(f"{imp.where}: {imp.module} imports {imp.target}: nothing imports cli/")
        for rule in RULES:
            if not within(imp.module, rule.part):
                continue
            if within(imp.target, "llmctl") and imp.target != "llmctl":
                if not any(within(imp.target, allowed) for allowed in rule.may_import):
                    allowed = ", ".join(rule.may_import) or "nothing of llmctl"
                    broken.append(
                        f"{imp.where}: {imp.module} imports {imp.target}, but {rule.part} "
                        f"may import only {allowed} ({rule.why})"
                    )
            elif (
                rule.no_network_clients
                and imp.target.split(".")[0] in NETWORK_CLIENTS
                and imp.module not in rule.adapters
            ):
                broken.append(f"{imp.where}: {imp.module} imports {imp.target}: {rule.why}")
    return broken


def all_imports() -> list[Import]:
    return [imp for path in sorted(SRC.rglob("*.py")) for imp in imports_of(path)]


def test_the_package_keeps_the_import_rules() -> None:
    broken = violations(all_imports())
    assert not broken, "import rules broken:\n" + "\n".join(broken)


def test_the_top_of_the_package_holds_only_packages_and_leaves() -> None:
    modules = sorted(p.name for p in SRC.glob("*.py"))
    assert modules == [
        "__init__.py",
        "__main__.py",
        "assets.py",
        "catalog.py",
        "errors.py",
        "extras.py",
    ]


def test_config_and_kube_are_packages_with_one_job_per_module() -> None:
    """Issue 29: the schema apart from its loader, the API calls apart from the policy; the
    router settings the Stack shares with router.yaml apart from both (session 34)."""
    assert sorted(p.name for p in (SRC / "config").glob("*.py")) == [
        "__init__.py",
        "router_settings.py",
        "schema.py",
        "sources.py",
    ]
    assert sorted(p.name for p in (SRC / "kube").glob("*.py")) == [
        "__init__.py",
        "client.py",
        "kinds.py",
        "preflight.py",
        "scaleup.py",
    ]


@pytest.mark.parametrize(
    ("module", "source", "named"),
    [
        ("llmctl/router/app.py", "from llmctl.clouds import aws\n", "llmctl.clouds"),
        ("llmctl/manifests/render.py", "def f():\n    from llmctl import kube\n", "llmctl.kube"),
        ("llmctl/cost/model.py", "import boto3\n", "boto3"),
        ("llmctl/cost/report.py", "from google.cloud import billing\n", "google.cloud"),
        ("llmctl/catalog.py", "from llmctl.config import Stack\n", "llmctl.config"),
        ("llmctl/plan/vram.py", "from ..probe import client\n", "llmctl.probe"),
        ("llmctl/clouds/base.py", "from llmctl.cli import main\n", "imports llmctl.cli:"),
        ("llmctl/kube/preflight.py", "import kubernetes\n", "kubernetes"),
        ("llmctl/kube/kinds.py", "from llmctl.clouds import base\n", "llmctl.clouds"),
        ("llmctl/config/schema.py", "from llmctl import kube\n", "llmctl.kube"),
        ("llmctl/config/sources.py", "import httpx\n", "httpx"),
    ],
)
def test_a_bad_import_is_named(module: str, source: str, named: str) -> None:
    """The checker itself: each rule catches a deliberate bad import and names it."""
    broken = violations(imports_of(SRC.parent / module, source))
    assert len(broken) == 1 and named in broken[0], broken


@pytest.mark.parametrize("package", ["config", "kube"])
def test_the_packages_re_export_every_public_name(package: str) -> None:
    """`from llmctl import kube; kube.X` and `from llmctl.config import X` keep working for
    every public name of the package's modules, including ones added after the split."""
    exported = set(importlib.import_module(f"llmctl.{package}").__all__)
    missing = []
    for path in sorted((SRC / package).glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names: list[str] = []
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            missing += [f"{path.name}: {n}" for n in names if not n.startswith("_")]
            missing = [m for m in missing if m.split(": ")[1] not in exported]
    assert not missing, f"add to llmctl/{package}/__init__.py: {missing}"
