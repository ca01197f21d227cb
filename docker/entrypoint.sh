#!/bin/sh
# The image runs one of two things:
#   router [flags...]        llmctl router serve (config: $LLMCTL_ROUTER_CONFIG, port: $PORT or 8080)
#   llama-server [flags...]  llama.cpp's server, as the official image runs it
# Anything else is executed as given (e.g. `sh` for debugging).
set -eu

command="${1:-router}"
[ "$#" -gt 0 ] && shift

case "$command" in
  router)
    exec llmctl router serve --config "${LLMCTL_ROUTER_CONFIG:-/etc/llmctl/router.yaml}" \
      --host "${HOST:-0.0.0.0}" --port "${PORT:-8080}" "$@"
    ;;
  llama-server)
    exec /app/llama-server "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac
