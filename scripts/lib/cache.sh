# shellcheck shell=bash
# Sourced by every script that fills the tool cache, $LLMCTL_CACHE (default ~/.cache/llmctl):
#
#   --cached   build nothing: print the cached paths, or fail (exit 3) naming what is missing and
#              the command that builds it. The test fixtures run this (they never build: a build
#              inside a test outlives the test's timeout); scripts/test.sh builds everything first.
#   lock       one build per script at a time: `cache_lock` holds an flock on
#              $LLMCTL_CACHE/.<script>.lock until the script exits, so a second run waits and
#              then finds the first one's result instead of building it again.
#   temp paths `cache_tmp VAR TARGET` / `cache_tmpdir VAR DIR` set VAR to a unique path (mktemp) in the target's
#              own directory, so a rename puts a result in place at once; whatever is left of them
#              when the script exits (a failed build) is removed.
#
# Usage: source scripts/lib/cache.sh "$@"   (then CACHE is the cache directory)

CACHE="${LLMCTL_CACHE:-$HOME/.cache/llmctl}"
CACHE_SCRIPT="$(basename "$0")"
CACHE_ONLY=0
CACHE_MISSING=()
CACHE_TEMPS=()
for cache_arg in "$@"; do
  case "$cache_arg" in
    --cached) CACHE_ONLY=1 ;;
    *) echo "$CACHE_SCRIPT: unknown argument $cache_arg (the only one is --cached)" >&2; exit 2 ;;
  esac
done

cache_cleanup() {
  local path
  for path in "${CACHE_TEMPS[@]}"; do rm -rf -- "$path"; done
}
trap cache_cleanup EXIT

# cache_lock: wait for, then hold until exit, this script's build lock (not in --cached mode,
# which only reads: every result is renamed into place whole).
cache_lock() {
  [ "$CACHE_ONLY" = 1 ] && return 0
  mkdir -p "$CACHE"
  exec {CACHE_LOCK_FD}>"$CACHE/.$CACHE_SCRIPT.lock"
  if ! flock --nonblock "$CACHE_LOCK_FD"; then
    echo "$CACHE_SCRIPT: another run is building into $CACHE; waiting for it" >&2
    flock "$CACHE_LOCK_FD"
  fi
}

# cache_needs NAME: true when NAME (missing from the cache) is to be built now; in --cached
# mode it records NAME as missing and is false.
cache_needs() {
  if [ "$CACHE_ONLY" = 1 ]; then
    CACHE_MISSING+=("$1")
    return 1
  fi
  return 0
}

# cache_tmp VAR TARGET: VAR := a new unique file beside TARGET (removed at exit unless renamed
# away). Not `$(cache_tmp ...)`: a subshell could not record it for the clean-up. The local is
# named so no caller's VAR can be it: bash's `printf -v tmp` would set a local `tmp`, not the
# caller's, and the caller would go on with an unset variable.
cache_tmp() {
  mkdir -p "$(dirname "$2")"
  local cache_new_path
  cache_new_path="$(mktemp "$2.tmp.XXXXXX")"
  CACHE_TEMPS+=("$cache_new_path")
  printf -v "$1" '%s' "$cache_new_path"
}

# cache_tmpdir VAR DIR: VAR := a new unique directory inside DIR (removed at exit).
cache_tmpdir() {
  mkdir -p "$2"
  local cache_new_path
  cache_new_path="$(mktemp -d "$2/.tmp.XXXXXX")"
  CACHE_TEMPS+=("$cache_new_path")
  printf -v "$1" '%s' "$cache_new_path"
}

# cache_checked: in --cached mode, fail when anything was missing.
cache_checked() {
  [ ${#CACHE_MISSING[@]} -eq 0 ] && return 0
  local missing
  printf -v missing '%s, ' "${CACHE_MISSING[@]}"
  echo "$CACHE_SCRIPT: not built in $CACHE: ${missing%, }." \
    "Run \`bash scripts/$CACHE_SCRIPT\` (or \`bash scripts/test.sh\`, which builds every tool before the tests)." >&2
  exit 3
}

# cache_put_dir DIR TMP: DIR becomes the filled directory TMP (from cache_tmpdir) in one rename.
cache_put_dir() {
  rm -rf -- "$1"
  mkdir -p "$(dirname "$1")"
  mv -T -- "$2" "$1"
}
