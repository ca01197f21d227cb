"""benchmarks/mutation.py's configuration: every core's files exist, and mutmut sees one core.

The mutation run itself is in scripts/test.sh (a 60-per-core sample); this checks, cheaply,
that a moved file or test does not silently drop a core from it.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation", REPO / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation"] = module
    spec.loader.exec_module(module)
    return module


def test_the_cores_and_their_tests_exist() -> None:
    cores = {c.name: c for c in driver().CORES}
    assert set(cores) == {"policy", "vram", "cost", "federation"}
    for name, core in cores.items():
        for path in (core.source, *core.tests):
            assert (REPO / path).is_file(), f"{name}: {path} is missing"


def test_mutmut_config_names_one_core_and_its_tests(tmp_path: Path) -> None:
    m = driver()
    core = next(c for c in m.CORES if c.name == "policy")
    (tmp_path / "docs").mkdir()
    config = tomllib.loads(m.pyproject_for(core, tmp_path))["tool"]["mutmut"]
    assert config["only_mutate"] == [core.source]
    assert config["pytest_add_cli_args_test_selection"] == list(core.tests)
    assert "docs" in config["also_copy"]
    assert "not e2e" in config["pytest_add_cli_args"]


def test_mutant_names_come_from_mutmut() -> None:
    m = driver()
    core = next(c for c in m.CORES if c.name == "policy")
    names = m.mutant_names(core)
    assert len(names) > 50
    assert all(n.startswith("llmctl.router.policy.x") and "__mutmut_" in n for n in names)
