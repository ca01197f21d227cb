"""GGUF files that hold only a header and a tensor table, with the tensor types of a real
quantization, for sizing tests: a Llama-2-7B Q4_K_M header is ~700 KB where the model is 4 GB."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.support.gguf_models import LlamaShape


def _more_bits(i: int, n: int) -> bool:
    # llama.cpp's Q4_K_M recipe gives attn_v and ffn_down Q6_K in these layers, Q4_K elsewhere.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def write_q4_k_m_header(path: Path, shape: LlamaShape, n_vocab: int = 32000) -> Path:
    """A llama GGUF header whose tensor table matches a Q4_K_M file of this shape (no data)."""
    q4, q6, f32 = (
        gguf.GGMLQuantizationType.Q4_K,
        gguf.GGMLQuantizationType.Q6_K,
        gguf.GGMLQuantizationType.F32,
    )
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("header-only")
    writer.add_context_length(shape.ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])

    def info(name: str, rows: int, cols: int, qtype: gguf.GGMLQuantizationType) -> None:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        shape_ = (rows, cols) if rows > 1 else (cols,)
        writer.add_tensor_info(
            name, shape_, np.dtype(np.float32), rows * cols // block * size, raw_dtype=qtype
        )

    kv = shape.head_dim * shape.n_kv_heads
    info("token_embd.weight", n_vocab, shape.n_embd, q4)
    info("output_norm.weight", 1, shape.n_embd, f32)
    info("output.weight", n_vocab, shape.n_embd, q6)
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        big = q6 if _more_bits(i, shape.n_layers) else q4
        info(p + "attn_norm.weight", 1, shape.n_embd, f32)
        info(p + "attn_q.weight", shape.n_embd, shape.n_embd, q4)
        info(p + "attn_k.weight", kv, shape.n_embd, q4)
        info(p + "attn_v.weight", kv, shape.n_embd, big)
        info(p + "attn_output.weight", shape.n_embd, shape.n_embd, q4)
        info(p + "ffn_norm.weight", 1, shape.n_embd, f32)
        info(p + "ffn_gate.weight", shape.n_ff, shape.n_embd, q4)
        info(p + "ffn_up.weight", shape.n_ff, shape.n_embd, q4)
        info(p + "ffn_down.weight", shape.n_embd, shape.n_ff, big)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path
