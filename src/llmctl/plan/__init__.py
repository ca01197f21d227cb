"""GPU memory planning for `llmctl plan`: the GGUF header reader and the VRAM arithmetic."""
