"""GGUF header parsing: on files the tests write, the real SmolLM2 file, and over HTTP Range."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import gguf
import pytest

from llmctl.errors import ConfigError, LlmctlError
from llmctl.plan.gguf import (
    FIRST_CHUNK,
    GgufFormatError,
    SkippedArray,
    read_gguf_header,
)
from tests.support.gguf_models import TINY, LlamaShape, write_llama_gguf
from tests.support.range_server import range_server

SMOLLM2 = Path(
    os.environ.get("SMOLLM2_GGUF")
    or Path.home() / ".cache/llmctl/models/SmolLM2-135M-Instruct.Q4_1.gguf"
)

# 2 layers, but a 20k-token vocabulary: ~57 MB of tensors behind a ~300 KB header.
WIDE = LlamaShape(n_layers=2, n_embd=512, n_heads=8, n_kv_heads=8, n_ff=2048, extra_pieces=20000)
# A 150k-token vocabulary makes the header itself ~3 MB: more than the first 1 MiB request.
BIG_VOCAB = LlamaShape(
    n_layers=1, n_embd=64, n_heads=4, n_kv_heads=4, n_ff=128, extra_pieces=150_000
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf")
    return {
        "tiny.gguf": write_llama_gguf(d / "tiny.gguf", TINY),
        "wide.gguf": write_llama_gguf(d / "wide.gguf", WIDE),
        "bigvocab.gguf": write_llama_gguf(d / "bigvocab.gguf", BIG_VOCAB),
    }


def assert_same_as_gguf_reader(path: Path) -> None:
    """Compare with the gguf package's own reader, which reads the whole file."""
    header = read_gguf_header(path)
    reader = gguf.GGUFReader(path)
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert ours.shape == tuple(int(d) for d in theirs.shape), ours.name
        assert ours.ggml_type == int(theirs.tensor_type), ours.name
        assert ours.n_bytes == int(theirs.n_bytes), ours.name
    assert header.data_offset == reader.data_offset
    # Tensor data runs from the aligned end of the header to the end of the file.
    assert header.data_offset + header.tensor_bytes == path.stat().st_size


def test_tiny_model_header(models: dict[str, Path]) -> None:
    path = models["tiny.gguf"]
    h = read_gguf_header(path)
    assert h.version == 3
    assert h.architecture == "llama"
    md = h.metadata
    assert md["llama.block_count"] == TINY.n_layers
    assert md["llama.embedding_length"] == TINY.n_embd
    assert md["llama.attention.head_count"] == TINY.n_heads
    assert md["llama.attention.head_count_kv"] == TINY.n_kv_heads
    assert md["llama.context_length"] == TINY.ctx_train
    assert md["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    # The token list is skipped, only its length kept.
    assert md["tokenizer.ggml.tokens"] == SkippedArray(8, 3 + 256 + TINY.extra_pieces)
    embd = h.tensors[0]
    assert embd.name == "token_embd.weight"
    assert embd.shape == (TINY.n_embd, 3 + 256 + TINY.extra_pieces)
    assert embd.type_name == "F16" and embd.n_bytes == embd.n_elements * 2
    assert_same_as_gguf_reader(path)


def test_real_smollm2_header() -> None:
    assert SMOLLM2.is_file(), f"{SMOLLM2} missing: run scripts/fetch-smollm2.sh"
    h = read_gguf_header(SMOLLM2)
    md = h.metadata
    assert (h.architecture, md["llama.block_count"], md["llama.embedding_length"]) == (
        "llama",
        30,
        576,
    )
    assert (md["llama.attention.head_count"], md["llama.attention.head_count_kv"]) == (9, 3)
    assert md["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q4_1)
    assert {t.type_name for t in h.tensors} == {"F32", "Q4_1", "Q8_0"}
    # It read the ~1.8 MB header, not the 98 MB file.
    assert h.bytes_fetched < 4 * FIRST_CHUNK < SMOLLM2.stat().st_size // 20
    assert_same_as_gguf_reader(SMOLLM2)


def test_header_larger_than_first_chunk(models: dict[str, Path]) -> None:
    path = models["bigvocab.gguf"]
    h = read_gguf_header(path)
    assert h.data_offset > 2 * FIRST_CHUNK
    n_vocab = 3 + 256 + BIG_VOCAB.extra_pieces
    assert h.metadata["tokenizer.ggml.tokens"] == SkippedArray(8, n_vocab)
    assert h.tensors[0].shape == (BIG_VOCAB.n_embd, n_vocab)
    # (gguf.GGUFReader takes seconds on a 150k vocabulary: the sizes check the layout instead.)
    assert h.data_offset + h.tensor_bytes == path.stat().st_size


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file" + bytes(100))
    with pytest.raises(GgufFormatError, match="is not a GGUF file") as err:
        read_gguf_header(path)
    assert err.value.exit_code == 2


def test_truncated_header(models: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(models["tiny.gguf"].read_bytes()[:5000])
    with pytest.raises(GgufFormatError, match="ends inside the GGUF header"):
        read_gguf_header(path)


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v9.gguf"
    path.write_bytes(b"GGUF" + (9).to_bytes(4, "little") + bytes(16))
    with pytest.raises(GgufFormatError, match="version 9 is not supported"):
        read_gguf_header(path)


def test_missing_file_and_other_schemes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        read_gguf_header(tmp_path / "nope.gguf")
    assert err.value.exit_code == 2
    with pytest.raises(ConfigError, match="s3://"):
        read_gguf_header("s3://bucket/model.gguf")


# ---------------------------------------------------------------------------------------------
# Over HTTP


def test_http_range_reads_only_the_header(models: dict[str, Path]) -> None:
    path = models["wide.gguf"]
    size = path.stat().st_size
    assert size > 50 * 1024 * 1024
    with range_server({"wide.gguf": path}) as srv:
        h = read_gguf_header(f"{srv.base_url}/wide.gguf")
    assert h.file_size == size
    assert h.bytes_fetched == FIRST_CHUNK  # one request covered the ~300 KB header
    assert h.bytes_fetched < size // 50
    assert srv.requests == [("/wide.gguf", f"bytes=0-{FIRST_CHUNK - 1}")]
    assert srv.body_bytes_sent == FIRST_CHUNK
    assert [t.n_bytes for t in h.tensors] == [t.n_bytes for t in read_gguf_header(path).tensors]


def test_http_range_grows_for_a_large_header(models: dict[str, Path]) -> None:
    path = models["bigvocab.gguf"]
    with range_server({"m.gguf": path}) as srv:
        h = read_gguf_header(f"{srv.base_url}/m.gguf")
    ranges = [r for _, r in srv.requests]
    # 1 MiB, then 2 MiB, then 4 MiB: each request continues where the last one ended.
    assert ranges[:3] == [
        f"bytes=0-{FIRST_CHUNK - 1}",
        f"bytes={FIRST_CHUNK}-{3 * FIRST_CHUNK - 1}",
        f"bytes={3 * FIRST_CHUNK}-{7 * FIRST_CHUNK - 1}",
    ]
    assert h.data_offset < h.bytes_fetched < path.stat().st_size // 4
    assert h.tensors == read_gguf_header(path).tensors


def test_http_follows_redirects_keeping_range(models: dict[str, Path]) -> None:
    with range_server({"wide.gguf": models["wide.gguf"]}) as srv:
        h = read_gguf_header(f"{srv.base_url}/redirect/wide.gguf")
    assert srv.requests[0][0] == "/redirect/wide.gguf"
    assert srv.requests[1] == ("/wide.gguf", f"bytes=0-{FIRST_CHUNK - 1}")
    assert h.bytes_fetched == FIRST_CHUNK


def test_http_server_ignoring_range_is_cut_short(models: dict[str, Path]) -> None:
    path = models["wide.gguf"]
    size = path.stat().st_size
    with range_server({"wide.gguf": path}, honour_range=False) as srv:
        h = read_gguf_header(f"{srv.base_url}/wide.gguf")
        assert h.file_size == size  # from Content-Length of the 200 answer
        assert h.bytes_fetched == FIRST_CHUNK
        # The server stops once the client hangs up (socket buffers hold a few MB at most).
        deadline = time.monotonic() + 10
        last = -1
        while time.monotonic() < deadline and srv.body_bytes_sent != last:
            last = srv.body_bytes_sent
            time.sleep(0.2)
        assert srv.body_bytes_sent < size // 2
    assert len(srv.requests) == 1
    assert h.tensors == read_gguf_header(path).tensors


def test_http_404_is_a_clear_failure(models: dict[str, Path]) -> None:
    with range_server({}) as srv, pytest.raises(LlmctlError, match="HTTP 404") as err:
        read_gguf_header(f"{srv.base_url}/missing.gguf")
    assert err.value.exit_code == 1
    assert "check the model URL" in err.value.format_message()


def test_http_not_a_gguf(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text("<html>not a model</html>")
    with (
        range_server({"model.gguf": page}) as srv,
        pytest.raises(GgufFormatError, match="is not a GGUF file"),
    ):
        read_gguf_header(f"{srv.base_url}/model.gguf")


def test_unreachable_url() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LlmctlError, match="cannot reach") as err:
        read_gguf_header(f"http://127.0.0.1:{port}/model.gguf")
    assert err.value.exit_code == 1


def test_header_size_is_bounded(models: dict[str, Path]) -> None:
    with pytest.raises(GgufFormatError, match="larger than 1 MiB"):
        read_gguf_header(models["bigvocab.gguf"], max_bytes=FIRST_CHUNK)
