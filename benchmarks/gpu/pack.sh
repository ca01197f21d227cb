#!/usr/bin/env bash
# Prepares .carry/ for a GPU machine that has no network (docs/gpu-check.md): run it here, where
# PyPI answers, then carry `.carry` with the working tree (`run` tool: carry [".carry"]).
#   .carry/llama.cpp-<version>.tar.gz  llama.cpp's sources from llama-cpp-python's sdist, without
#                                      models/ and docs/ (under 9 MB)
#   .carry/wheels/*.whl                the Python packages llmctl needs that the GPU machine's
#                                      image (Python 3.12) lacks, at the versions this venv has
#   .carry/cuda/sm_<arch>.tar.xz       builds brought back by an earlier run ($OUT), if you copy
#                                      them here: the next run reuses them instead of compiling
# The whole working tree plus .carry must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
carry=.carry
mkdir -p "$carry/wheels" "$carry/cuda"

tarball="$carry/llama.cpp-$version.tar.gz"
if [ ! -s "$tarball" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  sdist="${LLAMA_CPP_PYTHON_SDIST:-}"
  if [ -z "$sdist" ]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
    sdist="$work/llama_cpp_python-$version.tar.gz"
  fi
  tar -xzf "$sdist" -C "$work"
  tar -C "$work/llama_cpp_python-$version/vendor" --exclude=llama.cpp/models \
    --exclude=llama.cpp/docs --exclude=llama.cpp/media --exclude=llama.cpp/.git \
    --exclude=llama.cpp/tests --exclude=llama.cpp/examples --exclude=llama.cpp/pocs \
    --exclude=llama.cpp/benches --exclude=llama.cpp/gguf-py --exclude=llama.cpp/.github \
    -czf "$tarball" llama.cpp
fi
echo "sources: $tarball ($(du -h "$tarball" | cut -f1))"

# The GPU image has numpy, PyYAML, Jinja2, httpx, uvloop and rich; it lacks pydantic (and its
# parts), gguf and httptools, and its typer/click may not be the ones llmctl's CLI pins.
py=".venv/bin/python"
[ -x "$py" ] || py=python3
pins="$("$py" -m pip freeze | grep -i -E '^(pydantic|pydantic[-_]core|annotated[-_]types|annotated[-_]doc|typing[-_]inspection|typing[-_]extensions|gguf|httptools|typer|click|shellingham)==' || true)"
rm -f "$carry"/wheels/*.whl
for pin in $pins; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$carry/wheels" "$pin"
done
ls "$carry/wheels"
du -sh "$carry"
