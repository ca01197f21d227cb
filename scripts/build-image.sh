#!/usr/bin/env bash
# Builds the router image from the repository's unchanged Dockerfile, with no registry:
#
#   1. a stand-in for the official base `ghcr.io/ggml-org/llama.cpp:server-<release>` (the
#      release is the Dockerfile's LLAMA_CPP_RELEASE), which cannot be pulled here: Debian 12
#      (mmdebstrap) with what the official server image installs that the Dockerfile, the
#      entrypoint and the rendered manifests use (libgomp1, curl, ca-certificates), and
#      llama-server at /app/llama-server, built from that same llama.cpp release
#      (scripts/build-llama-server.sh: the same binary the tests run). WORKDIR /app,
#      ENTRYPOINT /app/llama-server, LLAMA_ARG_HOST=0.0.0.0, as in llama.cpp's
#      .devops/cpu.Dockerfile. README "The router image" lists every difference.
#   2. the router image: `buildah bud` of the Dockerfile on that base, pulling nothing.
#
# Each is written as an OCI archive named with its full reference (containerd's
# `ctr -n k8s.io images import FILE` keeps that name). The model download runs in the router
# image (config.py Images.model_fetcher unset), so no third image is needed.
#
# Cached under $LLMCTL_CACHE/images (default ~/.cache/llmctl), keyed by a hash of the inputs:
# the base by this script, the release and the llama-server binary; the router image by the
# base and every file the Dockerfile copies. A warm run prints the cached paths at once.
#
# Prints one line per image, router first: `REFERENCE ARCHIVE`.
# Needs root, buildah and mmdebstrap (Debian packages; scripts/test.sh installs them).
# --cached: build nothing, print the archives or say what is missing; one build at a time
# (scripts/lib/cache.sh), each archive renamed into place from the build's unique directory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cache.sh "$@"

die() { echo "build-image: $*" >&2; exit 1; }

if [ "$CACHE_ONLY" = 0 ]; then
  for tool in buildah mmdebstrap sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y $tool"
  done
  [ "$(id -u)" = 0 ] || die "mmdebstrap and buildah's chroot isolation need root here"
fi

release="$(sed -n 's/^ARG LLAMA_CPP_RELEASE=//p' Dockerfile)"
variant="$(sed -n 's/^ARG LLAMA_VARIANT=//p' Dockerfile)"
[ -n "$release" ] && [ -n "$variant" ] || die "the Dockerfile has no ARG LLAMA_CPP_RELEASE / LLAMA_VARIANT"
[ "$variant" = server ] || die "only the CPU variant can be built here (Dockerfile says $variant)"
base_ref="ghcr.io/ggml-org/llama.cpp:${variant}-${release}"

# llama-server from the release the Dockerfile pins, and nothing else.
cached_flag=()
[ "$CACHE_ONLY" = 1 ] && cached_flag=(--cached)
llama_server="${LLAMA_SERVER_BIN:-$(bash scripts/build-llama-server.sh "${cached_flag[@]}")}"
release_file="$(dirname "$llama_server")/../llama-cpp-release"
[ -s "$release_file" ] || die "$release_file is missing: run scripts/build-llama-server.sh"
read -r built_release built_commit < "$release_file"
[ "$built_release" = "$release" ] \
  || die "llama-server is llama.cpp $built_release ($built_commit) but the Dockerfile pins $release: make them one release"

cache="$CACHE/images"
# The base's key takes this script's recipe for it (between the two "base recipe" lines), not the
# whole script: a change to the cache plumbing around it must not rebuild a Debian root filesystem.
script_hash="$(sed -n '/^# base recipe: begin/,/^# base recipe: end/p' "$0" | sha256sum | cut -c1-64)"
binary_hash="$(sha256sum "$llama_server" | cut -c1-64)"
base_key="$(printf '%s\n' "$script_hash" "$release" "$built_commit" "$binary_hash" | sha256sum | cut -c1-16)"
base_dir="$cache/base-$release-$base_key"
base_archive="$base_dir/llama-cpp-$variant-$release.oci.tar"

# Every file the Dockerfile copies, by path, mode and content (.dockerignore leaves out only
# caches, and so does this).
context_hash() {
  .venv/bin/python - Dockerfile pyproject.toml README.md docker src templates charts <<'PY'
import hashlib, os, sys
skip = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
files = []
for top in sys.argv[1:]:
    if os.path.isfile(top):
        files.append(top)
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if d not in skip]
        files += [os.path.join(root, name) for name in names]
digest = hashlib.sha256()
for path in sorted(files):
    with open(path, "rb") as handle:
        content = hashlib.sha256(handle.read()).hexdigest()
    digest.update(f"{os.stat(path).st_mode & 0o777:o} {path} {content}\n".encode())
print(digest.hexdigest()[:16])
PY
}
router_key="$(printf '%s\n' "$base_key" "$(context_hash)" | sha256sum | cut -c1-16)"
router_ref="localhost/llmctl/llm-router:$router_key"
router_dir="$cache/router-$router_key"
router_archive="$router_dir/llm-router.oci.tar"

cache_lock
if [ -s "$router_archive" ] && [ -s "$base_archive" ]; then
  printf '%s %s\n' "$router_ref" "$router_archive" "$base_ref" "$base_archive"
  exit 0
fi
[ -s "$base_archive" ] || cache_needs "the stand-in base image $base_ref" || true
cache_needs "the router image for this source tree ($router_ref)" || cache_checked

mkdir -p "$cache"
work="$(mktemp -d "$cache/.work.XXXXXX")"
cleanup() {
  # vfs layers hold root-owned copies; buildah removes its own storage first.
  buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true
  rm -rf "$work"
  cache_cleanup
}
trap cleanup EXIT
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"
bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }

# Runs a noisy step with its output in a log, shown only when it fails.
quietly() {
  local log="$work/step.log"
  "$@" >"$log" 2>&1 || { cat "$log" >&2; die "failed: $1"; }
}
started=$SECONDS
stage() { echo "==> $* (at ${SECONDS}s)" >&2; }

# base recipe: begin
if [ ! -s "$base_archive" ]; then
  stage "stand-in base $base_ref: Debian 12 + llama-server $release ($built_commit)"
  # Ubuntu's container image (the official base's base) cleans apt's caches after every
  # install and leaves out man pages, docs and translations; so does this one.
  cat > "$work/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  # Merged /usr by mmdebstrap's hook, not the usrmerge package (which would pull in perl).
  # PATH: mmdebstrap runs its helpers (mmtarfilter) with `env python3`; Debian's starts fast,
  # a pyenv shim first on PATH costs seconds per package on a loaded machine.
  quietly env PATH=/usr/sbin:/usr/bin:/sbin:/bin mmdebstrap --variant=minbase --include=libgomp1,curl,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="copy-in '$work/docker-clean' /etc/apt/apt.conf.d" \
    --customize-hook='mkdir -p "$1/app"' \
    --customize-hook="copy-in '$llama_server' /app" \
    --customize-hook='chmod 0755 "$1/app/llama-server"' \
    bookworm "$work/rootfs.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  stage "base image from the root filesystem"
  ctr="$(bah from --pull=never scratch)"
  quietly bah add "$ctr" "$work/rootfs.tar" /
  rm -f "$work/rootfs.tar"
  quietly bah config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LLAMA_ARG_HOST=0.0.0.0 \
    --workingdir /app \
    --entrypoint '["/app/llama-server"]' --cmd '' \
    --label org.opencontainers.image.title=llama.cpp \
    --label "org.opencontainers.image.description=llmctl's stand-in for $base_ref: Debian 12, llama-server from the same release" \
    --label "org.opencontainers.image.version=$release" \
    --label "org.opencontainers.image.revision=$built_commit" \
    --label org.opencontainers.image.source=https://github.com/ggml-org/llama.cpp \
    "$ctr"
  quietly bah commit --format oci "$ctr" "$base_ref"
  quietly bah push "$base_ref" "oci-archive:$work/base.tar:$base_ref"
  mkdir -p "$base_dir"
  mv "$work/base.tar" "$base_archive"
else
  quietly bah pull "oci-archive:$base_archive"
fi
# base recipe: end
bah inspect --type image "$base_ref" >/dev/null 2>&1 || die "$base_ref is not in the build storage"

stage "$router_ref from the Dockerfile (buildah bud, chroot isolation, vfs)"
# The build reaches Debian's archive (apt-get in the Dockerfile) and PyPI (pip). pip trusts the
# CA bundle at /etc/ssl/certs/ca-certificates.crt (Debian's pip is patched to), so the host's
# bundle is bind-mounted over the base's for the RUN steps: where the host reaches PyPI through a
# TLS-inspecting proxy, its CA is in that bundle. A mount over an existing file leaves the
# image's own bundle untouched (tests/image/ checks it).
mounts=()
host_ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$host_ca" ] && mounts+=(-v "$host_ca:$host_ca:ro")
quietly bah bud --isolation chroot --pull=never --layers=false "${mounts[@]}" \
  -f Dockerfile -t "$router_ref" .
quietly bah push "$router_ref" "oci-archive:$work/router.tar:$router_ref"
mkdir -p "$router_dir"
mv "$work/router.tar" "$router_archive"
stage "done in $((SECONDS - started))s"

printf '%s %s\n' "$router_ref" "$router_archive" "$base_ref" "$base_archive"
