#!/usr/bin/env bash
# The GPU check of issue 17: see docs/gpu-check.md. On a GPU machine with no network:
#   bash benchmarks/gpu/run.sh            (figures in $OUT/gpu-check.json, or benchmarks/gpu/out/)
# Here, on the CPU (CI runs this through tests/benchmarks/test_gpu_check.py):
#   bash benchmarks/gpu/run.sh --cpu-selftest
set -euo pipefail
cd "$(dirname "$0")/../.."

python="${GPU_CHECK_PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

carry="${GPU_CHECK_CARRY:-.carry}"

# What llmctl needs beyond the GPU machine's image: pydantic, gguf, httptools, typer 0.29. When
# this Python lacks one, the wheels carried in .carry/wheels (benchmarks/gpu/pack.sh) go into a
# temporary folder on PYTHONPATH.
has_deps() {
  "$python" - <<'PY' 2>/dev/null
import importlib.metadata as m
import gguf, httptools, httpx, jinja2, numpy, pydantic, yaml  # noqa: F401
assert m.version("typer").startswith("0.29."), m.version("typer")
PY
}
if ! has_deps; then
  if ! compgen -G "$carry/wheels/*.whl" >/dev/null; then
    echo "gpu-check: $python lacks llmctl's packages and $carry/wheels is empty:" \
      "run benchmarks/gpu/pack.sh where PyPI answers and carry $carry (docs/gpu-check.md)" >&2
    exit 2
  fi
  site="${TMPDIR:-/tmp}/llmctl-gpu-check-site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$carry"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  has_deps || { echo "gpu-check: the carried wheels do not satisfy $python" >&2; exit 2; }
fi

export PYTHONUNBUFFERED=1
exec "$python" benchmarks/gpu/run.py --python "$python" "$@"
