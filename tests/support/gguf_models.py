"""Llama-architecture GGUF files with random weights, written by the tests themselves.

llama.cpp loads and generates from them, so a real llama-server can serve one in the end-to-end
tests without downloading anything. Throughput and memory depend only on the shapes, so the same
writer with TinyLlama or Llama-2-7B shapes gives realistic speed and memory figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np


@dataclass(frozen=True)
class LlamaShape:
    n_layers: int = 2
    n_embd: int = 64
    n_heads: int = 4
    n_kv_heads: int = 4
    n_ff: int = 128
    ctx_train: int = 4096
    extra_pieces: int = 256  # normal tokens after the byte tokens: vocab = 3 + 256 + this

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_heads


TINY = LlamaShape()
TINYLLAMA_1B = LlamaShape(
    n_layers=22,
    n_embd=2048,
    n_heads=32,
    n_kv_heads=4,
    n_ff=5632,
    ctx_train=2048,
    extra_pieces=31741,
)
LLAMA2_7B = LlamaShape(
    n_layers=32,
    n_embd=4096,
    n_heads=32,
    n_kv_heads=32,
    n_ff=11008,
    ctx_train=4096,
    extra_pieces=31741,
)


def _vocab(extra: int) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    # Sentencepiece-style pieces ("▁" marks a word start) so generated text is readable bytes.
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces: list[str] = []
    for i in range(extra):
        word = ""
        n = i
        while True:
            word += letters[n % 26]
            n //= 26
            if n == 0:
                break
        pieces.append(("\u2581" + word) if i % 2 == 0 else word)
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def write_llama_gguf(
    path: Path,
    shape: LlamaShape = TINY,
    seed: int = 0,
    name: str = "test-llama",
    tile: int | None = None,
) -> Path:
    """Write a llama GGUF (F16 matrices, F32 norms) with random weights to `path`.

    With `tile`, every matrix repeats one block of `tile` random values instead of drawing all
    of its own: the speed and memory figures are the same, and a 7B shape is written in seconds
    instead of minutes (drawing 6.7e9 normal values is the slow part).
    """
    rng = np.random.default_rng(seed)
    block = (rng.standard_normal(tile) * 0.02).astype(np.float16) if tile else None
    tokens, scores, types = _vocab(shape.extra_pieces)
    n_vocab = len(tokens)
    kv_dim = shape.head_dim * shape.n_kv_heads

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def matrix(rows: int, cols: int) -> np.ndarray:
        if block is not None:
            return np.resize(block, (rows, cols))
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    writer.add_tensor("token_embd.weight", matrix(n_vocab, shape.n_embd))
    writer.add_tensor("output_norm.weight", norm(shape.n_embd))
    writer.add_tensor("output.weight", matrix(n_vocab, shape.n_embd))
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(shape.n_embd))
        writer.add_tensor(p + "attn_q.weight", matrix(shape.n_embd, shape.n_embd))
        writer.add_tensor(p + "attn_k.weight", matrix(kv_dim, shape.n_embd))
        writer.add_tensor(p + "attn_v.weight", matrix(kv_dim, shape.n_embd))
        writer.add_tensor(p + "attn_output.weight", matrix(shape.n_embd, shape.n_embd))
        writer.add_tensor(p + "ffn_norm.weight", norm(shape.n_embd))
        writer.add_tensor(p + "ffn_gate.weight", matrix(shape.n_ff, shape.n_embd))
        writer.add_tensor(p + "ffn_up.weight", matrix(shape.n_ff, shape.n_embd))
        writer.add_tensor(p + "ffn_down.weight", matrix(shape.n_embd, shape.n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
