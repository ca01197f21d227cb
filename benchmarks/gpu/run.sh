#!/usr/bin/env bash
# The GPU check of issue 17: see docs/gpu-check.md. On a GPU machine with no network:
#   bash benchmarks/gpu/run.sh            (figures in $OUT/gpu-check.json, or benchmarks/gpu/out/)
# Here, on the CPU (CI runs this through tests/benchmarks/test_gpu_check.py):
#   bash benchmarks/gpu/run.sh --cpu-selftest
set -euo pipefail
cd "$(dirname "$0")/../.."

# Python packages the GPU machine's image lacks travel as wheels in .carry/wheels (pack.sh).
if [ -d .carry/wheels ] && compgen -G ".carry/wheels/*.whl" >/dev/null; then
  site="${TMPDIR:-/tmp}/llmctl-gpu-check-site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .carry/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

python="${GPU_CHECK_PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONUNBUFFERED=1
exec "$python" benchmarks/gpu/run.py --python "$python" "$@"
