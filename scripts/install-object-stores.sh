#!/usr/bin/env bash
# The object stores the model-cache tests and benchmark run on loopback (issue 30):
#   fake-gcs-server (Google Cloud Storage's JSON API), built from its Go module;
#   Azurite (Azure Blob Storage), from npm;
#   gofakes3 (S3), built from its Go module, for benchmarks/model_fetch.py only: moto's server,
#   which the tests use for S3 (it checks signatures), copies the whole object for every ranged
#   GET, so it cannot serve 16 ranges of a 1 GiB object at once. Each is installed once into
# $LLMCTL_CACHE (keyed by version) and reused. Prints KEY=PATH for each binary.
# --cached: install nothing, print the paths or say what is missing; one install at a time, each
# renamed into place from a unique temporary directory (scripts/lib/cache.sh).
set -euo pipefail
source "$(dirname "$0")/lib/cache.sh"
cache="$CACHE"
cache_lock
fake_gcs_version="v1.56.1"
azurite_version="3.37.0"
gofakes3_version="v1.2.0"

gcs_dir="$cache/fake-gcs-server/$fake_gcs_version"
if [ ! -x "$gcs_dir/fake-gcs-server" ] && cache_needs fake-gcs-server; then
  command -v go >/dev/null || { echo "Go >= 1.26 is needed to build fake-gcs-server" >&2; exit 1; }
  cache_tmpdir gobin "$(dirname "$gcs_dir")"
  GOBIN="$gobin" CGO_ENABLED=0 nice -n 10 \
    go install "github.com/fsouza/fake-gcs-server@$fake_gcs_version" >&2
  cache_put_dir "$gcs_dir" "$gobin"
fi

azurite_dir="$cache/azurite/$azurite_version"
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ] && cache_needs Azurite; then
  command -v npm >/dev/null || { echo "npm (Node.js >= 18) is needed to install Azurite" >&2; exit 1; }
  # npm's .bin links are relative and no installed file names the prefix, so the tree moves.
  cache_tmpdir prefix "$(dirname "$azurite_dir")"
  npm install --silent --no-audit --no-fund --prefix "$prefix" "azurite@$azurite_version" >&2
  cache_put_dir "$azurite_dir" "$prefix"
fi

s3_dir="$cache/gofakes3/$gofakes3_version"
if [ ! -x "$s3_dir/gofakes3" ] && cache_needs gofakes3; then
  cache_tmpdir gobin "$(dirname "$s3_dir")"
  GOBIN="$gobin" CGO_ENABLED=0 nice -n 10 \
    go install "github.com/johannesboyne/gofakes3/cmd/gofakes3@$gofakes3_version" >&2
  cache_put_dir "$s3_dir" "$gobin"
fi
cache_checked

echo "FAKE_GCS_SERVER_BIN=$gcs_dir/fake-gcs-server"
echo "AZURITE_BLOB_BIN=$azurite_dir/node_modules/.bin/azurite-blob"
echo "GOFAKES3_BIN=$s3_dir/gofakes3"
