"""llama-server command lines, written for the llama.cpp release that the image tag pins.

That release's `--help` is kept in tests/data/llama-server-help.txt and a test checks every flag
rendered here against it: llama.cpp renames and retypes flags between releases (`--flash-attn`
now takes on|off|auto; a bare `--flash-attn` followed by another flag makes the server exit).
"""

from __future__ import annotations

from llmctl.config import LlamaCpp, ModelSpec

LLAMA_PORT = 8080


def gpu_layers(ngl: int) -> str:
    # -1 in the config means every layer; this release spells that `all`.
    return "all" if ngl < 0 else str(ngl)


def server_args(model: ModelSpec, settings: LlamaCpp) -> list[str]:
    args = [
        "--host",
        "0.0.0.0",
        "--port",
        str(LLAMA_PORT),
        "--model",
        model.path,
        "--alias",
        model.name,
        # Context is sized per request, then multiplied by the slots (see config.LlamaCpp).
        "--ctx-size",
        str(settings.effective_ctx_size),
        "--parallel",
        str(settings.parallel),
        "--n-gpu-layers",
        gpu_layers(settings.ngl),
        "--flash-attn",
        "on" if settings.flash_attn else "off",
        "--metrics",
        # Nothing but the router talks to llama-server: no Web UI, and no /slots, which shows
        # the prompts in flight to anyone who can reach the pod.
        "--no-webui",
        "--no-slots",
    ]
    if settings.device is not None:
        args += ["--device", settings.device]
    if settings.threads is not None:
        args += ["--threads", str(settings.threads)]
    if settings.unified:
        # Slots share one KV pool, so a request may use more than ctx_size / parallel.
        args.append("--kv-unified")
    return args
