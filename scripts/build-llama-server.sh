#!/usr/bin/env bash
# Builds llama.cpp's C++ `llama-server` and `llama-quantize` (CPU) from the sources vendored in
# llama-cpp-python's PyPI sdist, the only route to llama.cpp sources from this project's
# registries. The binaries are cached under $LLMCTL_CACHE (default ~/.cache/llmctl), keyed by
# version, so CI builds them once per machine. llama-quantize (the GPU check's self-test quantizes
# its models with it, benchmarks/gpu/) shares every library with llama-server, so building both
# in one go costs one more small executable; a cache that has only llama-server gets llama-quantize
# added. Prints llama-server's path on stdout; llama-quantize lies beside it.
#
# The llama.cpp release those sources are: llama-cpp-python's CHANGELOG names the commit it
# vendors ("update llama.cpp to ggml-org/llama.cpp@0c1e57098" for 0.3.36), and llama.cpp's
# release b11312 is that commit. The Dockerfile and config/schema.py's Images pin the same release
# (tests/router/test_image.py); a cold build checks the CHANGELOG still says so. The cache
# records it in llama-cpp-release ("RELEASE COMMIT"), which scripts/build-image.sh reads.
# (The sdist's llama.cpp is a one-commit git checkout: `llama-server --version` names the commit,
# with a build count of 1 where the release counts 11312.)
# --cached: build nothing, print the path or say what is missing; one build at a time, each
# binary renamed into place from a unique temporary path (scripts/lib/cache.sh).
set -euo pipefail
source "$(dirname "$0")/lib/cache.sh"

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
release="${LLAMA_CPP_RELEASE:-b11312}"
commit="${LLAMA_CPP_COMMIT:-0c1e57098}"
cache="$CACHE/llama-server-${version}"
bin="$cache/bin/llama-server"
quantize="$cache/bin/llama-quantize"
release_file="$cache/llama-cpp-release"

# llama-server answers --version; llama-quantize has no such flag and prints its usage (exit 1).
# (No pipe here: under pipefail the usage's exit code 1 would fail it.)
works() {
  [ -x "$1" ] || return 1
  "$1" --version >/dev/null 2>&1 && return 0
  local out
  out="$("$1" --help 2>&1 || true)"
  [[ "$out" == usage:* ]]
}

cache_lock
targets=()
works "$bin" || ! cache_needs llama-server || targets+=(llama-server)
works "$quantize" || ! cache_needs llama-quantize || targets+=(llama-quantize)
cache_checked
if [ ${#targets[@]} -eq 0 ]; then
  [ -s "$release_file" ] || [ "$CACHE_ONLY" = 1 ] || echo "$release $commit" > "$release_file"
  echo "$bin"
  exit 0
fi

command -v cmake >/dev/null || { echo "cmake is missing: apt-get install -y cmake" >&2; exit 1; }
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

cache_tmpdir work "$cache"
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==${version}" >&2
tar -xzf "$work"/llama_cpp_python-"${version}".tar.gz -C "$work"
src="$work/llama_cpp_python-${version}/vendor/llama.cpp"
changelog="$work/llama_cpp_python-${version}/CHANGELOG.md"
# The first llama.cpp update under this version's heading is the commit it vendors.
vendored="$(awk -v v="## [${version}]" '$0 == v {on = 1; next} on && /^## / {exit}
  on && match($0, /llama\.cpp@[0-9a-f]+/) {print substr($0, RSTART + 10, RLENGTH - 10); exit}' "$changelog")"
if [ "$vendored" != "$commit" ]; then
  echo "llama-cpp-python ${version} vendors llama.cpp@${vendored:-?}, not ${commit} (${release}):" \
    "set LLAMA_CPP_RELEASE and LLAMA_CPP_COMMIT to the release it vendors" >&2
  exit 1
fi

cmake -S "$src" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF >&2
cmake --build "$work/build" --target "${targets[@]}" -j "$(nproc)" >&2

for target in "${targets[@]}"; do
  cache_tmp tmp "$cache/bin/$target"
  cp "$work/build/bin/$target" "$tmp"
  chmod 0755 "$tmp"
  mv "$tmp" "$cache/bin/$target"
done
cache_tmp tmp "$cache/llama-server-help.txt"
"$bin" --help > "$tmp" 2>/dev/null || true
mv "$tmp" "$cache/llama-server-help.txt"
cache_tmp tmp "$release_file"
echo "$release $commit" > "$tmp"
mv "$tmp" "$release_file"
echo "$bin"
