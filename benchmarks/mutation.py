"""Mutation testing of the pure cores with mutmut: do their tests notice a one-token change?

Each core (the routing policy, the GPU memory model, the cost model, and the multi-cloud
routing choice where it exists) is mutated on its own, in a scratch copy of the project under
build/mutation/<core>/, and each mutant runs against that core's own test files only. mutmut
then narrows further: a mutant runs only the tests that call the mutated function.

    .venv/bin/python benchmarks/mutation.py                       # full run: every mutant
    .venv/bin/python benchmarks/mutation.py --sample 60 --seed 20261202 --fail-under 90
    .venv/bin/python benchmarks/mutation.py --core policy --core cost

Printed per core: mutants generated, tried, killed (a test failed), timed out (counted as
killed, as mutmut does), survived (tests still pass, or no test reaches the code) and the score
(killed + timed out) / tried. Each survivor, with its diff, is written to
build/mutation/survivors.txt, and the figures to build/mutation/summary.json.

Equivalent mutants (no test can tell them apart from the original) are marked in the source
with `# pragma: no mutate` and a one-line reason: mutmut then never generates them, so they are
left out of the score. A pragma covers its whole line, so every mutant of that line is left out:
the table prints how many (`excluded`) and summary.json names each one.

mutmut never mutates a decorated function, and so no `@property`. In the scratch copy each
property of a class is written as a plain method and wrapped after the class
(`Cls.name = property(Cls.name)`), which behaves the same, so its mutants are generated, run
and scored like any other.

--sample N picks N mutants per core at random with a fixed seed (the bounded run that
scripts/test.sh does); without it every mutant runs (the benchmark). --fail-under P exits 1
when a core scores under P %.

Needs mutmut 3.8.x (in the `test` extra): the sample is drawn from the mutant names that
mutmut's own generator gives for the file, so it matches what `mutmut run` creates.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Core:
    name: str
    source: str  # path from the repository root
    tests: tuple[str, ...]  # the core's own test files


CORES = (
    Core(
        "policy",
        "src/llmctl/router/policy.py",
        ("tests/router/test_policy.py", "tests/router/test_policy_edges.py"),
    ),
    Core(
        "vram",
        "src/llmctl/plan/vram.py",
        ("tests/plan/test_vram.py", "tests/plan/test_vram_edges.py"),
    ),
    Core(
        "cost",
        "src/llmctl/cost/model.py",
        (
            "tests/cost/test_model.py",
            "tests/cli/test_cost_cmd.py",
            "tests/cost/test_cost_edges.py",
        ),
    ),
    # The multi-cloud routing choice (issue 16), once it is on main.
    Core(
        "federation",
        "src/llmctl/router/federation.py",
        ("tests/router/test_federation.py", "tests/router/test_federation_edges.py"),
    ),
)

KILLED = {"killed", "caught by type check"}
TIMEOUT = {"timeout"}


class RunFailed(Exception):
    """mutmut did not give a verdict for every mutant (the clean test run failed, say)."""


@dataclass
class Result:
    core: str
    source: str
    generated: int
    excluded: list[str] = field(default_factory=list)  # by `# pragma: no mutate`
    tried: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return 100.0 * (self.killed + self.timeout) / self.tried if self.tried else 0.0


def mutmut_bin() -> Path:
    exe = Path(sys.executable).parent / "mutmut"
    if not exe.exists():
        sys.exit(f"mutmut is not installed next to {sys.executable}: pip install -e '.[test]'")
    return exe


def module_name(source: str) -> str:
    return source.removeprefix("src/").removesuffix(".py").replace("/", ".")


def with_properties_unwrapped(code: str) -> str:
    """The same module with each class's `@property` methods wrapped after the class instead.

    The decorator line becomes blank (so line numbers hold) and `Cls.name = property(Cls.name)`
    follows the class: the same attribute, but a method mutmut is willing to mutate.
    """
    lines = code.splitlines(keepends=True)
    after: dict[int, list[str]] = {}  # the class's last line -> the lines to add after it
    for node in ast.parse(code).body:
        if not isinstance(node, ast.ClassDef) or node.end_lineno is None:
            continue
        for item in node.body:
            if not isinstance(item, ast.FunctionDef):
                continue
            decorators = item.decorator_list
            if len(decorators) == 1 and isinstance(decorators[0], ast.Name):
                if decorators[0].id == "property":
                    lines[decorators[0].lineno - 1] = "\n"
                    after.setdefault(node.end_lineno, []).append(
                        f"{node.name}.{item.name} = property({node.name}.{item.name})\n"
                    )
    out: list[str] = []
    for number, line in enumerate(lines, 1):
        out.append(line)
        out.extend(after.get(number, []))
    return "".join(out)


def _names(core: Core, code: str) -> set[str]:
    from mutmut.mutation.file_mutation import mutate_file_contents

    local = mutate_file_contents(core.source, code).mutant_names
    return {f"{module_name(core.source)}.{name}" for name in local}


def mutant_names(core: Core) -> list[str]:
    """Every mutant mutmut generates for the core's file (properties unwrapped), by name."""
    return sorted(_names(core, with_properties_unwrapped((REPO / core.source).read_text())))


def excluded_mutants(core: Core) -> list[str]:
    """The mutants that `# pragma: no mutate` lines keep mutmut from generating."""
    code = with_properties_unwrapped((REPO / core.source).read_text())
    bare = re.sub(r"#\s*pragma:\s*no mutate.*$", "", code, flags=re.MULTILINE)
    return sorted(_names(core, bare) - _names(core, code))


def pyproject_for(core: Core, work: Path) -> str:
    """The project's pyproject.toml with a [tool.mutmut] section for this core alone."""
    text = (REPO / "pyproject.toml").read_text()
    # the tests read docs/, templates/, charts/...: mutmut copies these into its mutants/ too
    tops = sorted(
        p.name
        for p in work.iterdir()
        if p.name not in {"src", "tests", "pyproject.toml"} and not p.name.startswith(".")
    )
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    tests = ", ".join(json.dumps(t) for t in core.tests)
    return text + (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = [{json.dumps(core.source)}]\n"
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        # e2e tests start a real llama-server: one per mutant would take hours, and the
        # by-hand tests pin the same formulas.
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not e2e"]\n'
        # the scratch copy is not a git checkout of its own
        "use_git_change_detection = false\n"
        f"also_copy = [{', '.join(json.dumps(t) for t in tops)}]\n"
    )


def prepare(core: Core, work: Path) -> None:
    """A scratch copy of the project's files (tracked, or new and not ignored)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listing.returncode == 0:
        files = listing.stdout.split("\0")
    else:  # not a git checkout (an unpacked archive): everything but build output
        skip = {".git", ".venv", "build", "mutants", "__pycache__", ".mypy_cache", ".ruff_cache"}
        files = [
            str(p.relative_to(REPO))
            for p in REPO.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)
        ]
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    (work / "pyproject.toml").write_text(pyproject_for(core, work))
    source = work / core.source
    source.write_text(with_properties_unwrapped(source.read_text()))


def source_line(core: Core, diff: str) -> str:
    """Line numbers in the original file of the line the mutant changed, from its diff."""
    removed = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    if not removed:
        return "L?"
    lines = (REPO / core.source).read_text().splitlines()
    hits = [str(i) for i, text in enumerate(lines, 1) if text.strip() == removed[0]]
    return "L" + ",".join(hits) if hits else "L?"


_DIFFS = """
import json, sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({n: get_diff_for_mutant(n, path=find_mutant(n).path) for n in names}))
"""


def survivor_diffs(work: Path, names: list[str], env: dict[str, str]) -> dict[str, str]:
    """Each mutant's diff, as `mutmut show` prints it, in one process rather than one each."""
    if not names:
        return {}
    out = subprocess.run(
        [sys.executable, "-c", _DIFFS],
        cwd=work,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    diffs: dict[str, str] = json.loads(out)
    return diffs


def run_core(
    core: Core, work: Path, sample: int | None, seed: int, children: int, log: Path
) -> Result:
    names = mutant_names(core)
    result = Result(core.name, core.source, generated=len(names), excluded=excluded_mutants(core))
    chosen = names
    if sample is not None and sample < len(names):
        chosen = sorted(random.Random(seed).sample(names, sample))
    prepare(core, work)
    exe = mutmut_bin()
    started = time.monotonic()
    args = [str(exe), "run", "--max-children", str(children)]
    if chosen is not names:
        args += chosen
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        proc = subprocess.run(args, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env)
    result.seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RunFailed(f"mutmut run failed for {core.name} (exit {proc.returncode}):\n{tail}")

    listing = subprocess.run(
        [str(exe), "results", "--all", "true"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    status = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\s*(\S+__mutmut_\d+): (.+)$", listing, re.MULTILINE)
    }
    missing = [n for n in chosen if n not in status]
    if missing:
        raise RunFailed(f"{core.name}: no verdict for {len(missing)} mutants, e.g. {missing[0]}")
    for name in chosen:
        verdict = status[name]
        if verdict == "skipped":
            continue
        if verdict == "not checked":
            raise RunFailed(f"{core.name}: {name} was not run")
        result.tried += 1
        result.statuses[verdict] = result.statuses.get(verdict, 0) + 1
        if verdict in KILLED:
            result.killed += 1
        elif verdict in TIMEOUT:
            result.timeout += 1
        else:
            result.survived += 1
            result.survivors.append(name)
    diffs = survivor_diffs(work, result.survivors, env)
    result.survivors = [
        f"## {name} ({status[name]}) {core.source} {source_line(core, diffs[name])}\n"
        f"{diffs[name].strip()}\n"
        for name in result.survivors
    ]
    return result


def write_reports(out: Path, mode: str, results: list[Result]) -> None:
    (out / "survivors.txt").write_text(
        f"# surviving mutants, {mode}\n\n" + "\n".join(s for r in results for s in r.survivors)
    )
    summary = {
        "mode": mode,
        "date": date.today().isoformat(),
        "mutmut": version("mutmut"),
        "results": [
            {**{k: v for k, v in asdict(r).items() if k != "survivors"}, "score": r.score}
            for r in results
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--core",
        action="append",
        choices=[c.name for c in CORES],
        help="core(s) to mutate (default: every core present)",
    )
    p.add_argument("--sample", type=int, help="mutants per core, drawn at random (default: all)")
    p.add_argument("--seed", type=int, default=20261202)
    p.add_argument("--fail-under", type=float, help="exit 1 if a core scores under this %%")
    p.add_argument("--max-children", type=int, default=1, help="parallel mutant runs")
    p.add_argument("--out", type=Path, default=REPO / "build" / "mutation")
    p.add_argument("--nice", type=int, default=10, help="niceness to run at (shared machine)")
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)

    cores = [c for c in CORES if args.core is None or c.name in args.core]
    results: list[Result] = []
    failed: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)
    mode = f"sample of {args.sample}, seed {args.seed}" if args.sample else "full run"
    for core in cores:
        missing = [f for f in (core.source, *core.tests) if not (REPO / f).exists()]
        if missing:
            if args.core:
                sys.exit(f"{core.name}: missing {', '.join(missing)}")
            print(f"{core.name}: skipped, not in this checkout ({', '.join(missing)})")
            continue
        print(f"{core.name}: mutating {core.source} ...", flush=True)
        try:
            results.append(
                run_core(
                    core,
                    args.out / core.name,
                    args.sample,
                    args.seed,
                    args.max_children,
                    args.out / f"{core.name}.log",
                )
            )
        except RunFailed as e:
            print(e, file=sys.stderr)
            failed.append(core.name)
        write_reports(args.out, mode, results)

    print(f"\nmutmut {version('mutmut')}, {mode}, {date.today().isoformat()}")
    print(
        f"{'core':<28} {'generated':>9} {'excluded':>8} {'tried':>6} {'killed':>6} "
        f"{'timeout':>7} {'survived':>8} {'score':>7} {'time':>6}"
    )
    for r in results:
        print(
            f"{r.source.removeprefix('src/llmctl/'):<28} {r.generated:>9} {len(r.excluded):>8} "
            f"{r.tried:>6} {r.killed:>6} {r.timeout:>7} {r.survived:>8} {r.score:>6.1f}% "
            f"{r.seconds:>5.0f}s"
        )
    print(f"survivors: {args.out / 'survivors.txt'}")
    if failed:
        print(f"FAIL: no verdict for {', '.join(failed)}")
        return 1

    if args.fail_under is not None:
        low = [r for r in results if r.score < args.fail_under]
        for r in low:
            print(f"FAIL: {r.core} scores {r.score:.1f}% < {args.fail_under:g}%")
        if low:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
