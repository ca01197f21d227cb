"""Read a GGUF file's header, metadata and tensor table without reading its tensor data.

The `gguf` package's `GGUFReader` memory-maps the whole file, so it cannot work from the first
few megabytes of a remote model. This module parses the GGUF v2/v3 layout itself (little-endian):

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x (key: string, value_type u32, value)
    tensor_count x (name: string, n_dims u32, dims u64 x n_dims, ggml_type u32, offset u64)
    (padding to general.alignment, then the tensor data, which is never read)

A string is a u64 length and UTF-8 bytes; an array is an item type u32, a count u64 and the items.
Bytes come from a `ByteSource`: a local file, or HTTP(S) Range requests that grow geometrically
(1 MiB, 2 MiB, 4 MiB...) until the tensor table is complete. A server that ignores Range answers
200 with the whole file: the body is then read only as far as needed and the connection closed.
"""

from __future__ import annotations

import re
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from llmctl.errors import ConfigError, LlmctlError
from llmctl.extras import install_hint

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
FIRST_CHUNK = 1 << 20
# A header past this is not a model header: Llama 3's 128k-token vocabulary with its merges is
# about 10 MB, the largest seen in practice.
MAX_HEADER_BYTES = 64 << 20
# Arrays longer than this (token lists, merges, scores) are skipped, only their length is kept.
MAX_KEPT_ARRAY = 64
HTTP_TIMEOUT_S = 30.0

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),  # UINT8
    1: ("<b", 1),  # INT8
    2: ("<H", 2),  # UINT16
    3: ("<h", 2),  # INT16
    4: ("<I", 4),  # UINT32
    5: ("<i", 4),  # INT32
    6: ("<f", 4),  # FLOAT32
    7: ("<?", 1),  # BOOL
    10: ("<Q", 8),  # UINT64
    11: ("<q", 8),  # INT64
    12: ("<d", 8),  # FLOAT64
}
_STRING = 8
_ARRAY = 9


class GgufFormatError(ConfigError):
    """The bytes are not a GGUF file this parser understands (exit 2: the input is wrong)."""


@dataclass(frozen=True)
class SkippedArray:
    """A long metadata array, kept only as its length (e.g. tokenizer.ggml.tokens)."""

    item_type: int
    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne[0] (the row length) first
    ggml_type: int
    type_name: str
    n_bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GgufHeader:
    source: str
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int  # where tensor data starts: the header's size, aligned
    bytes_fetched: int  # bytes read from the source to parse it
    file_size: int | None = None  # when the source said (Content-Range, stat)

    @property
    def missing_bytes(self) -> int:
        """How far the file falls short of the tensor data its header describes (0: whole, or
        its size unknown). A cut-short download: llama.cpp would refuse to load it."""
        if self.file_size is None:
            return 0
        needed = self.data_offset + sum(t.n_bytes for t in self.tensors)
        return max(0, needed - self.file_size)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GgufFormatError(f"{self.source}: GGUF metadata has no general.architecture")
        return arch

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


# ---------------------------------------------------------------------------------------------
# Byte sources


class ByteSource(Protocol):
    name: str
    bytes_fetched: int
    size: int | None

    def read_more(self, want: int) -> bytes:
        """The next bytes after those already returned: at least 1 and about `want`, or b"" at
        the end of the source."""

    def close(self) -> None: ...


class FileSource:
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self._file: IO[bytes] = path.open("rb")
            self.size: int | None = path.stat().st_size
        except FileNotFoundError:
            raise ConfigError(
                f"model file {path} does not exist",
                hint="pass a GGUF path, an http(s) URL or a catalog model name",
            ) from None
        except IsADirectoryError:
            raise ConfigError(f"model path {path} is a directory, not a GGUF file") from None
        except OSError as exc:
            raise LlmctlError(f"cannot read model file {path}: {exc.strerror or exc}") from None
        self.bytes_fetched = 0

    def read_more(self, want: int) -> bytes:
        data = self._file.read(want)
        self.bytes_fetched += len(data)
        return data

    def close(self) -> None:
        self._file.close()


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class HttpRangeSource:
    """Successive `Range: bytes=a-b` requests; a 200 answer is streamed and cut short instead.

    urllib follows redirects (Hugging Face sends /resolve/ URLs to its CDN with a 302) and keeps
    the Range header on the redirected request.
    """

    def __init__(
        self,
        url: str,
        opener: Callable[[urllib.request.Request], Any] | None = None,
    ) -> None:
        self.name = url
        self.url = url
        self.bytes_fetched = 0
        self.size: int | None = None
        self._offset = 0
        self._stream: Any = None  # an open 200 response, when the server ignored Range
        self._eof = False
        self._open = opener or (lambda req: urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S))

    def _request(self, start: int, end: int) -> Any:
        req = urllib.request.Request(
            self.url,
            headers={"Range": f"bytes={start}-{end}", "User-Agent": "llmctl-plan"},
        )
        try:
            return self._open(req)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416:  # range starts past the end
                return None
            raise LlmctlError(
                f"{self.url}: HTTP {exc.code} {exc.reason}",
                hint="check the model URL (and that the file is public)"
                if exc.code in (401, 403, 404)
                else None,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LlmctlError(
                f"cannot reach {self.url}: {reason}",
                hint="check the URL and the network, or download the file and pass its path",
            ) from None

    def read_more(self, want: int) -> bytes:
        if self._eof:
            return b""
        if self._stream is not None:
            return self._read_stream(want)
        resp = self._request(self._offset, self._offset + want - 1)
        if resp is None:
            self._eof = True
            return b""
        status = getattr(resp, "status", 200)
        if status == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if match and match.group(3) != "*":
                self.size = int(match.group(3))
            with resp:
                data: bytes = resp.read(want)
            self.bytes_fetched += len(data)
            self._offset += len(data)
            if not data or (self.size is not None and self._offset >= self.size):
                self._eof = True
            return data
        # 200: the server ignored Range and sends the whole file from byte 0.
        length = resp.headers.get("Content-Length")
        self.size = int(length) if length and length.isdigit() else None
        self._stream = resp
        if self._offset:
            self._skip(self._offset)
        return self._read_stream(want)

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self._stream.read(min(n, 1 << 20))
            if not chunk:
                break
            self.bytes_fetched += len(chunk)
            n -= len(chunk)

    def _read_stream(self, want: int) -> bytes:
        data: bytes = self._stream.read(want)
        self.bytes_fetched += len(data)
        self._offset += len(data)
        if not data:
            self._eof = True
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def open_source(location: str | Path) -> ByteSource:
    text = str(location)
    if text.startswith(("http://", "https://")):
        _check_url(text)
        return HttpRangeSource(text)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        scheme = text.split("://", 1)[0]
        raise ConfigError(
            f"cannot read a GGUF header over {scheme}://: {text}",
            hint="pass an http(s) URL or a local path (download the file first)",
        )
    return FileSource(Path(text).expanduser())


def _check_url(url: str) -> None:
    """A malformed URL is the user's typo (exit 2), not a network failure or a bug."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed lazily: raises for a port out of range or not a number
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ConfigError(
            f"--model {url!r} is not a valid URL: {exc}",
            hint="pass the model's http(s) URL, e.g. a Hugging Face .../resolve/main/x.gguf",
        ) from None
    if not parts.hostname:
        raise ConfigError(
            f"--model {url!r} has no host",
            hint="pass the model's http(s) URL, e.g. a Hugging Face .../resolve/main/x.gguf",
        )


# ---------------------------------------------------------------------------------------------
# The parser


class _Cursor:
    """Reads forward through a growing buffer, asking the source for more as it runs out."""

    def __init__(self, source: ByteSource, max_bytes: int) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.pos = 0
        self._chunk = FIRST_CHUNK

    def need(self, n: int) -> None:
        while len(self.buf) < self.pos + n:
            if len(self.buf) >= self.max_bytes:
                raise GgufFormatError(
                    f"{self.source.name}: the GGUF header is larger than "
                    f"{self.max_bytes // (1 << 20)} MiB; this is not a model header llmctl "
                    "can read"
                )
            want = max(self._chunk, self.pos + n - len(self.buf))
            want = min(want, self.max_bytes - len(self.buf))
            data = self.source.read_more(want)
            if not data:
                raise GgufFormatError(
                    f"{self.source.name}: the file ends inside the GGUF header "
                    f"(at byte {len(self.buf)})",
                    hint="the file is truncated or not a GGUF model",
                )
            self.buf += data
            self._chunk = min(self._chunk * 2, 16 << 20)

    def take(self, n: int) -> bytes:
        self.need(n)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def scalar(self, fmt: str, size: int) -> Any:
        self.need(size)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self) -> int:
        value: int = self.scalar("<I", 4)
        return value

    def u64(self) -> int:
        value: int = self.scalar("<Q", 8)
        return value

    def string(self) -> str:
        n = self.u64()
        if n > self.max_bytes:
            raise GgufFormatError(f"{self.source.name}: corrupt GGUF string length {n}")
        return self.take(n).decode("utf-8", errors="replace")


@dataclass
class _Parsed:
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[tuple[str, tuple[int, ...], int]] = field(default_factory=list)
    data_offset: int = 0


def _read_value(cur: _Cursor, vtype: int, key: str) -> Any:
    if vtype in _SCALARS:
        return cur.scalar(*_SCALARS[vtype])
    if vtype == _STRING:
        return cur.string()
    if vtype == _ARRAY:
        item_type = cur.u32()
        count = cur.u64()
        if item_type in _SCALARS:
            fmt, size = _SCALARS[item_type]
            if count > MAX_KEPT_ARRAY:
                cur.skip(size * count)
                return SkippedArray(item_type, count)
            return [cur.scalar(fmt, size) for _ in range(count)]
        if item_type == _STRING:
            if count > MAX_KEPT_ARRAY:
                for _ in range(count):
                    cur.skip(cur.u64())
                return SkippedArray(item_type, count)
            return [cur.string() for _ in range(count)]
        if item_type == _ARRAY:
            return [_read_value(cur, _ARRAY, key) for _ in range(count)]
        raise GgufFormatError(
            f"{cur.source.name}: unknown GGUF array item type {item_type} in {key}"
        )
    raise GgufFormatError(f"{cur.source.name}: unknown GGUF value type {vtype} for key {key}")


def _parse(cur: _Cursor) -> _Parsed:
    name = cur.source.name
    try:
        magic = cur.take(4)
    except GgufFormatError:
        raise GgufFormatError(
            f"{name} is not a GGUF file (it is shorter than the 4-byte 'GGUF' magic)",
            hint="pass a .gguf model file, an http(s) URL or a catalog model name",
        ) from None
    if magic != GGUF_MAGIC:
        raise GgufFormatError(
            f"{name} is not a GGUF file (it starts with {magic!r}, not b'GGUF')",
            hint="llama.cpp serves .gguf files; convert the model with llama.cpp's "
            "convert_hf_to_gguf.py",
        )
    out = _Parsed(version=cur.u32())
    if out.version not in SUPPORTED_VERSIONS:
        if out.version & 0xFFFF == 0 and (out.version >> 24) in SUPPORTED_VERSIONS:
            raise GgufFormatError(f"{name} is a big-endian GGUF file; llmctl reads little-endian")
        raise GgufFormatError(
            f"{name}: GGUF version {out.version} is not supported (llmctl reads v2 and v3)"
        )
    n_tensors = cur.u64()
    n_kv = cur.u64()
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise GgufFormatError(f"{name}: corrupt GGUF header ({n_tensors} tensors, {n_kv} keys)")
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.u32()
        out.metadata[key] = _read_value(cur, vtype, key)
    for _ in range(n_tensors):
        tname = cur.string()
        n_dims = cur.u32()
        if n_dims > 8:
            raise GgufFormatError(f"{name}: tensor {tname} has {n_dims} dimensions")
        shape = tuple(cur.u64() for _ in range(n_dims))
        ggml_type = cur.u32()
        cur.u64()  # offset into the data section: not needed for sizes
        out.tensors.append((tname, shape, ggml_type))
    align = out.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    align = align if isinstance(align, int) and align > 0 else DEFAULT_ALIGNMENT
    out.data_offset = (cur.pos + align - 1) // align * align
    return out


def ggml_type_bytes(ggml_type: int, n_elements: int, tensor: str = "") -> tuple[str, int]:
    """The type's name and the bytes `n_elements` of it take (blocks x bytes per block)."""
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:  # pragma: no cover - the `plan` extra is part of the test install
        raise LlmctlError(
            "reading GGUF tensor types needs the gguf package",
            hint=install_hint("plan"),
        ) from None
    try:
        qtype = GGMLQuantizationType(ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise GgufFormatError(
            f"tensor {tensor or '?'} has ggml type {ggml_type}, which this gguf package does "
            "not know",
            hint="upgrade the gguf package (pip install -U gguf)",
        ) from None
    if n_elements % block:
        raise GgufFormatError(
            f"tensor {tensor} has {n_elements} elements, not a multiple of {qtype.name}'s "
            f"block of {block}"
        )
    return qtype.name, n_elements // block * type_size


def read_gguf_header(location: str | Path, max_bytes: int = MAX_HEADER_BYTES) -> GgufHeader:
    """Parse the header of a local GGUF file or an http(s) URL, fetching only the header."""
    source = open_source(location)
    try:
        parsed = _parse(_Cursor(source, max_bytes))
    finally:
        source.close()
    tensors = []
    for tname, shape, ggml_type in parsed.tensors:
        n = 1
        for d in shape:
            n *= d
        type_name, n_bytes = ggml_type_bytes(ggml_type, n, tname)
        tensors.append(TensorInfo(tname, shape, ggml_type, type_name, n_bytes))
    return GgufHeader(
        source=source.name,
        version=parsed.version,
        metadata=parsed.metadata,
        tensors=tuple(tensors),
        data_offset=parsed.data_offset,
        bytes_fetched=source.bytes_fetched,
        file_size=source.size,
    )
