"""GGUF files that hold only a header and a tensor table, with the tensor types of a real
quantization, for sizing tests: a Llama-2-7B Q4_K_M header is ~700 KB where the model is 4 GB."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.support.gguf_models import LlamaShape, llama_tensors, llama_writer


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
    writer = llama_writer(path, shape, "header-only", gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])
    for name, rows, cols, layer in llama_tensors(shape, n_vocab):
        if rows == 1:
            qtype = f32
        elif name == "output.weight":
            qtype = q6
        elif layer is not None and name.endswith(("attn_v.weight", "ffn_down.weight")):
            qtype = q6 if _more_bits(layer, shape.n_layers) else q4
        else:
            qtype = q4
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor_info(
            name,
            (rows, cols) if rows > 1 else (cols,),
            np.dtype(np.float32),
            rows * cols // block * size,
            raw_dtype=qtype,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path
