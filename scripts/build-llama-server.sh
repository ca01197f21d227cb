#!/usr/bin/env bash
# Builds llama.cpp's C++ `llama-server` and `llama-quantize` (CPU) from the sources vendored in
# llama-cpp-python's PyPI sdist, the only route to llama.cpp sources from this project's
# registries. The binaries are cached under $LLMCTL_CACHE (default ~/.cache/llmctl), keyed by
# version, so CI builds them once per machine. llama-quantize (the GPU check's self-test quantizes
# its models with it, benchmarks/gpu/) shares every library with llama-server, so building both
# in one go costs one more small executable; a cache that has only llama-server gets llama-quantize
# added. Prints llama-server's path on stdout; llama-quantize lies beside it.
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${LLMCTL_CACHE:-$HOME/.cache/llmctl}/llama-server-${version}"
bin="$cache/bin/llama-server"
quantize="$cache/bin/llama-quantize"

# llama-server answers --version; llama-quantize has no such flag and prints its usage (exit 1).
# (No pipe here: under pipefail the usage's exit code 1 would fail it.)
works() {
  [ -x "$1" ] || return 1
  "$1" --version >/dev/null 2>&1 && return 0
  local out
  out="$("$1" --help 2>&1 || true)"
  [[ "$out" == usage:* ]]
}

targets=()
works "$bin" || targets+=(llama-server)
works "$quantize" || targets+=(llama-quantize)
if [ ${#targets[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi

command -v cmake >/dev/null || { echo "cmake is missing: apt-get install -y cmake" >&2; exit 1; }
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==${version}" >&2
tar -xzf "$work"/llama_cpp_python-"${version}".tar.gz -C "$work"
src="$work/llama_cpp_python-${version}/vendor/llama.cpp"

cmake -S "$src" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF >&2
cmake --build "$work/build" --target "${targets[@]}" -j "$(nproc)" >&2

mkdir -p "$cache/bin"
for target in "${targets[@]}"; do
  cp "$work/build/bin/$target" "$cache/bin/$target.tmp"
  mv "$cache/bin/$target.tmp" "$cache/bin/$target"
done
"$bin" --help > "$cache/llama-server-help.txt" 2>/dev/null || true
echo "$bin"
