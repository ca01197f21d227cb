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


LLAMA_VOCAB = 32000  # Llama's (and TinyLlama's) vocabulary: 3 special, 256 byte tokens, pieces


def _real(layers: int, embd: int, heads: int, kv_heads: int, ff: int, ctx: int) -> LlamaShape:
    """A real model's shape in its config.json's terms (num_hidden_layers, hidden_size,
    num_attention_heads, num_key_value_heads, intermediate_size, max_position_embeddings),
    with Llama's vocabulary."""
    return LlamaShape(layers, embd, heads, kv_heads, ff, ctx, extra_pieces=LLAMA_VOCAB - 259)


TINY = LlamaShape()
TINYLLAMA_1B = _real(22, 2048, 32, 4, 5632, 2048)
LLAMA2_7B = _real(32, 4096, 32, 32, 11008, 4096)


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


def llama_writer(
    path: Path, shape: LlamaShape, name: str, file_type: int, rms_eps: float | None = None
) -> gguf.GGUFWriter:
    """A GGUF writer for a llama model of this shape, its architecture keys written."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    if rms_eps is not None:
        writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("llama")
    return writer


def llama_tensors(shape: LlamaShape, n_vocab: int) -> list[tuple[str, int, int, int | None]]:
    """Every tensor of a llama model, in llama.cpp's order: its name, rows (1 for a norm vector),
    columns, and its block (None outside the blocks)."""
    embd, ff, kv = shape.n_embd, shape.n_ff, shape.head_dim * shape.n_kv_heads
    tensors: list[tuple[str, int, int, int | None]] = [
        ("token_embd.weight", n_vocab, embd, None),
        ("output_norm.weight", 1, embd, None),
        ("output.weight", n_vocab, embd, None),
    ]
    block = [
        ("attn_norm", 1, embd),
        ("attn_q", embd, embd),
        ("attn_k", kv, embd),
        ("attn_v", kv, embd),
        ("attn_output", embd, embd),
        ("ffn_norm", 1, embd),
        ("ffn_gate", ff, embd),
        ("ffn_up", ff, embd),
        ("ffn_down", embd, ff),
    ]
    for i in range(shape.n_layers):
        tensors += [(f"blk.{i}.{name}.weight", rows, cols, i) for name, rows, cols in block]
    return tensors


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
    writer = llama_writer(path, shape, name, gguf.LlamaFileType.MOSTLY_F16, rms_eps=1e-5)
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

    for tensor, rows, cols, _ in llama_tensors(shape, len(tokens)):
        # norms are float32 ones; matrices (numpy shape rows = out, cols = in) F16 random
        writer.add_tensor(
            tensor, np.ones(cols, dtype=np.float32) if rows == 1 else matrix(rows, cols)
        )

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
