"""benchmarks/mutation.py's configuration: every core's files exist, and mutmut sees one core.

The mutation run itself is in scripts/test.sh (every mutant); this checks, cheaply,
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


PROPERTY_CLASS = """\
class Workload:
    tail: float = 1.0

    @property
    def idle_tail_s(self) -> float:
        return self.tail + 600

    @staticmethod
    def unit() -> str:
        return "s"


x = 1  # pragma: no mutate: kept
"""


def test_properties_become_methods_mutmut_mutates_and_behave_the_same() -> None:
    """mutmut skips decorated functions, so the scratch copy wraps each property after its
    class: the same attribute, and mutants are generated for its body."""
    m = driver()
    code = m.with_properties_unwrapped(PROPERTY_CLASS)
    assert "@property" not in code and "@staticmethod" in code  # only properties move
    assert "Workload.idle_tail_s = property(Workload.idle_tail_s)" in code
    assert len(code.splitlines()) == len(PROPERTY_CLASS.splitlines()) + 1  # lines keep places
    space: dict[str, object] = {}
    exec(compile(code, "core.py", "exec"), space)
    workload = space["Workload"]
    assert workload().idle_tail_s == 601.0  # type: ignore[operator]
    core = m.Core("demo", "src/demo.py", ())
    from mutmut.mutation.file_mutation import mutate_file_contents

    before = mutate_file_contents(core.source, PROPERTY_CLASS).mutant_names
    after = mutate_file_contents(core.source, code).mutant_names
    assert not any("idle_tail_s" in n for n in before)
    assert any("idle_tail_s" in n for n in after)


def test_the_pragma_lines_exclusions_are_counted_and_named() -> None:
    """The one remaining pragma (vram's binary search midpoint) excludes every mutant of its
    line, and the driver names them, so the README can say what the score leaves out."""
    m = driver()
    cores = {c.name: c for c in m.CORES}
    excluded = m.excluded_mutants(cores["vram"])
    assert excluded and all("_largest" in name for name in excluded)
    assert m.excluded_mutants(cores["cost"]) == []
