"""How much GPU memory llama-server needs for a model, a context and a parallelism, and whether it
fits a GPU. Pure arithmetic: no I/O; the shapes come from a GGUF header or from the catalog.

The need is four terms, each modelled on what llama.cpp allocates (the names are its log lines):

- **weights** (`CUDA0 model buffer`): the bytes of every tensor on the GPU. The token embedding
  (`token_embd`) always stays in host memory: llama.cpp runs the input layer on the CPU. The
  output layer goes to the GPU only when every layer does (`-ngl` above the block count, or -1);
  a model without `output.weight` (tied embeddings) then gets a second copy of `token_embd` there.
  With `-ngl N` below the block count, the last N blocks are offloaded.
- **KV cache** (`llama_kv_cache: size`): offloaded layers x cells x (K row + V row), a row being
  KV heads x head size elements of the cache type (f16: 2 bytes; q8_0: 34 bytes per 32). The cells:
  without a unified cache each of the `parallel` slots gets `ctx_size / parallel` rounded up to a
  multiple of 256; with one, `ctx_size` rounded up to 256. Checked against llama-server's log.
- **compute buffer** (`CUDA0 compute buffer`): the graph's scratch memory for one micro-batch of
  `n_ubatch` (512) tokens. Fitted to llama-server's `compute buffer size` line for llama models of
  several shapes (tests/plan/test_vram.py::test_kv_and_compute_match_llama_server checks it):
  the attention mask (cells seen by one slot x n_ubatch, f16 with flash attention, f32 without),
  plus the larger of the feed-forward phase (f32 x n_ubatch x max(4 n_ff, 3 n_ff + 4 n_embd))
  and the attention
  phase ((5 x n_embd + 2 x KV width) x n_ubatch f32, plus without flash attention the f32 KQ
  scores: cells x n_ubatch x heads). The logits are not in it: llama-server keeps one output row
  per slot, in host memory.
- **CUDA overhead**: memory the process holds outside llama.cpp's buffers: the CUDA context, the
  cuBLAS handle and workspace, and ggml's CUDA pool for temporary conversions. Estimated at
  CUDA_OVERHEAD_BYTES; not yet measured on a GPU (docs/plan.md says how to).

The GPU's usable memory is what CUDA reports as total, lower than the nominal size: GDDR GPUs with
ECC on (the cloud default) lose 6.25% to ECC bits (a T4's 16 GiB shows as 15360 MiB in
nvidia-smi), and the driver keeps about 256 MiB more (CUDA's deviceQuery on a T4 reports
15110 MiB; PyTorch's "14.75 GiB total capacity" on T4s). USABLE_MIB lists these per GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from llmctl import catalog

if TYPE_CHECKING:
    from llmctl.config import Stack
    from llmctl.plan.gguf import GgufHeader

MIB = 1024**2
GIB = 1024**3

# nvidia-smi's total (ECC on, as the clouds run them) minus the ~256 MiB the driver keeps from
# CUDA (T4: 15360 MiB in nvidia-smi, 15110 MiB in deviceQuery). nvidia-smi totals: T4 15360,
# L4 23034, A10G 23028, A100-40GB 40960, H100-80GB 81559 MiB.
DRIVER_RESERVED_MIB = 256
USABLE_MIB: dict[str, int] = {
    "t4": 15360 - DRIVER_RESERVED_MIB,
    "l4": 23034 - DRIVER_RESERVED_MIB,
    "a10g": 23028 - DRIVER_RESERVED_MIB,
    "a100-40gb": 40960 - DRIVER_RESERVED_MIB,
    "h100": 81559 - DRIVER_RESERVED_MIB,
}
# A GPU llmctl has no figure for: nominal less the 6.25% of ECC and the driver's share.
ECC_FRACTION = 0.0625

CUDA_OVERHEAD_BYTES = 320 * MIB
N_UBATCH = 512
CTX_PAD = 256  # llama.cpp rounds each slot's context up to a multiple of this
WARN_HEADROOM = 0.10

# KV cache types llama-server accepts (-ctk/-ctv): elements per block, bytes per block.
KV_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q5_1": (32, 24),
    "q5_0": (32, 22),
    "q4_1": (32, 20),
    "q4_0": (32, 18),
    "iq4_nl": (32, 18),
}

_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """The numbers that size a llama-family model's memory in llama.cpp."""

    name: str
    source: str  # "GGUF header of <path or URL>" or "catalog"
    architecture: str
    quantization: str
    n_layers: int
    n_embd: int
    n_heads: int
    n_kv_heads: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    ctx_train: int
    layer_bytes: tuple[int, ...]  # per block, in block order
    input_bytes: int  # token_embd: stays in host memory
    output_bytes: int  # output head and final norm: on the GPU when every layer is
    # No output.weight: llama.cpp loads token_embd a second time as the output head, so
    # output_bytes holds a copy of input_bytes that is not in the file.
    tied_embedding: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def weight_bytes(self) -> int:
        """The tensors' bytes as in the file: a tied embedding counts once."""
        total = sum(self.layer_bytes) + self.input_bytes + self.output_bytes
        return total - (self.input_bytes if self.tied_embedding else 0)

    @classmethod
    def from_header(cls, header: GgufHeader, name: str | None = None) -> ModelShape:
        md = header.metadata
        arch = header.architecture

        def number(key: str, default: int | None = None) -> int:
            value: Any = md.get(f"{arch}.{key}", default)
            if isinstance(value, list) and value:  # per-layer values (e.g. head_count_kv)
                value = max(value)
            if not isinstance(value, int) or isinstance(value, bool):
                from llmctl.plan.gguf import GgufFormatError

                raise GgufFormatError(
                    f"{header.source}: GGUF metadata has no usable {arch}.{key}",
                    hint="llmctl plans llama-family models whose header names their shape",
                )
            return value

        n_layers = number("block_count")
        n_embd = number("embedding_length")
        n_heads = number("attention.head_count")
        layer_bytes = [0] * n_layers
        input_bytes = output_bytes = 0
        n_vocab = 0
        for t in header.tensors:
            block = _BLOCK.match(t.name)
            if block and int(block.group(1)) < n_layers:
                layer_bytes[int(block.group(1))] += t.n_bytes
            elif t.name == "token_embd.weight":
                input_bytes = t.n_bytes  # a GGUF has one token_embd.weight
                n_vocab = t.shape[1] if len(t.shape) > 1 else n_vocab
            else:
                output_bytes += t.n_bytes
        has_output = any(t.name == "output.weight" for t in header.tensors)
        if not has_output:
            # Tied embeddings: llama.cpp loads token_embd a second time as the output head.
            output_bytes += input_bytes
        vocab_meta = md.get(f"{arch}.vocab_size")
        tokens = md.get("tokenizer.ggml.tokens")
        if isinstance(vocab_meta, int):
            n_vocab = vocab_meta
        elif not n_vocab and tokens is not None:
            n_vocab = len(tokens) if isinstance(tokens, list) else getattr(tokens, "length", 0)
        file_type = md.get("general.file_type")
        return cls(
            # The file's name says which file it is; general.name is often a training-run label.
            name=name or header.source.rpartition("/")[2].split("?")[0].removesuffix(".gguf"),
            source=f"GGUF header of {header.source}",
            architecture=arch,
            quantization=_file_type_name(file_type),
            n_layers=n_layers,
            n_embd=n_embd,
            n_heads=n_heads,
            # Read where they are used, as n_ff and ctx_train are: nothing above needs them.
            n_kv_heads=number("attention.head_count_kv", n_heads),
            head_dim_k=number("attention.key_length", n_embd // n_heads),
            head_dim_v=number("attention.value_length", n_embd // n_heads),
            n_ff=number("feed_forward_length", 4 * n_embd),
            n_vocab=n_vocab,
            ctx_train=number("context_length", 0),
            layer_bytes=tuple(layer_bytes),
            input_bytes=input_bytes,
            output_bytes=output_bytes,
            tied_embedding=not has_output,
            warnings=(
                (
                    f"{header.source} is {header.missing_bytes:,} bytes shorter than the tensor "
                    "data its header describes: a cut-short download, which llama-server will "
                    "not load",
                )
                if header.missing_bytes
                else ()
            ),
        )

    @classmethod
    def from_catalog(cls, info: catalog.ModelInfo) -> ModelShape:
        """A catalog entry, without its file: the file's bytes split by parameter counts.

        The embedding and the output head each hold n_vocab x n_embd parameters; at the file's
        average bytes per parameter that is within a few MiB of the real tensors (Llama-2-7B
        Q4_K_M: 79 MB estimated for token_embd, 74 MB real).
        """
        per_param = info.file_bytes / info.parameters
        edge = round(info.n_vocab * info.n_embd * per_param)
        per_layer = (info.file_bytes - 2 * edge) // info.n_layers
        return cls(
            name=info.name,
            source="catalog",
            architecture="llama",
            quantization=info.quantization,
            n_layers=info.n_layers,
            n_embd=info.n_embd,
            n_heads=info.n_heads,
            n_kv_heads=info.n_kv_heads,
            head_dim_k=info.head_dim,
            head_dim_v=info.head_dim,
            n_ff=info.n_ff or 4 * info.n_embd,
            n_vocab=info.n_vocab,
            ctx_train=info.ctx_train,
            layer_bytes=(per_layer,) * info.n_layers,
            input_bytes=edge,
            output_bytes=info.file_bytes - edge - per_layer * info.n_layers,
        )


def _file_type_name(file_type: Any) -> str:
    if not isinstance(file_type, int):
        return "unknown"
    try:
        from gguf import LlamaFileType
    except ImportError:  # pragma: no cover - the `plan` extra is part of the test install
        return f"file type {file_type}"
    try:
        return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file type {file_type}"


@dataclass(frozen=True)
class ServeSettings:
    """The llama-server flags that size memory."""

    ctx_per_request: int
    parallel: int
    kv_type: str = "f16"
    flash_attn: bool = True
    ngl: int = -1  # -1: all layers
    kv_unified: bool = False
    ctx_size: int | None = None  # llama-server's -c; default ctx_per_request x parallel
    n_ubatch: int = N_UBATCH

    def __post_init__(self) -> None:
        if self.kv_type not in KV_TYPES:
            raise ValueError(f"unknown KV cache type {self.kv_type!r}")
        if self.parallel < 1 or self.ctx_per_request < 1:
            raise ValueError("parallel and ctx_per_request must be positive")

    @property
    def requested_ctx(self) -> int:
        return self.ctx_size if self.ctx_size is not None else self.ctx_per_request * self.parallel

    @property
    def cells_per_stream(self) -> int:
        """KV cells one slot's attention sees: llama.cpp pads each slot to a multiple of 256."""
        if self.kv_unified:
            return _pad(self.requested_ctx)
        return _pad(self.requested_ctx // self.parallel)

    @property
    def kv_cells(self) -> int:
        streams = 1 if self.kv_unified else self.parallel
        return self.cells_per_stream * streams

    @property
    def ctx_per_slot(self) -> int:
        """The longest prompt plus answer one request can have."""
        return self.cells_per_stream

    @property
    def layout(self) -> str:
        if self.kv_unified:
            return f"{self.parallel} slots sharing {self.ctx_per_slot} tokens"
        return f"{self.parallel} x {self.ctx_per_slot} tokens"


def _pad(n: int) -> int:
    return max(CTX_PAD, -(-n // CTX_PAD) * CTX_PAD)


def kv_row_bytes(elements: int, kv_type: str) -> int:
    block, size = KV_TYPES[kv_type]
    return -(-elements // block) * size


@dataclass(frozen=True)
class VramNeed:
    weights: int
    kv_cache: int
    compute: int
    cuda_overhead: int
    gpu_layers: int
    output_on_gpu: bool

    @property
    def llama_buffers(self) -> int:
        """What llama.cpp itself reports allocating on the GPU (model + KV + compute)."""
        return self.weights + self.kv_cache + self.compute

    @property
    def total(self) -> int:
        return self.llama_buffers + self.cuda_overhead


def offload(model: ModelShape, ngl: int) -> tuple[int, bool]:
    """(blocks on the GPU, output head on the GPU) for llama.cpp's -ngl."""
    if ngl < 0 or ngl > model.n_layers:
        return model.n_layers, True
    return ngl, False


def kv_cache_bytes(model: ModelShape, settings: ServeSettings, layers: int | None = None) -> int:
    layers = model.n_layers if layers is None else layers
    k = kv_row_bytes(model.n_kv_heads * model.head_dim_k, settings.kv_type)
    v = kv_row_bytes(model.n_kv_heads * model.head_dim_v, settings.kv_type)
    return layers * settings.kv_cells * (k + v)


def compute_buffer_bytes(model: ModelShape, settings: ServeSettings) -> int:
    n_ub = min(settings.n_ubatch, settings.kv_cells)
    cells = settings.cells_per_stream
    f32 = 4
    mask = cells * n_ub * (2 if settings.flash_attn else f32)
    # Peak of the feed-forward phase: gate, up and their product (n_ff wide each), the input, its
    # norm and the residuals (n_embd wide); llama.cpp's allocator reuses a freed n_ff tensor
    # when n_ff is large. An upper bound that matches llama-server's figure where it binds.
    ffn = max(4 * model.n_ff, 3 * model.n_ff + 4 * model.n_embd) * n_ub * f32
    kv_width = model.n_kv_heads * model.head_dim_k
    attention = (5 * model.n_embd + 2 * kv_width) * n_ub * f32
    if not settings.flash_attn:
        attention += cells * n_ub * model.n_heads * f32
    return mask + max(ffn, attention)


def estimate(model: ModelShape, settings: ServeSettings) -> VramNeed:
    layers, output = offload(model, settings.ngl)
    offloaded = model.layer_bytes[model.n_layers - layers :]  # no layers: [n_layers:] is empty
    weights = sum(offloaded) + (model.output_bytes if output else 0)
    return VramNeed(
        weights=weights,
        kv_cache=kv_cache_bytes(model, settings, layers),
        compute=compute_buffer_bytes(model, settings) if layers else 0,
        cuda_overhead=CUDA_OVERHEAD_BYTES,
        gpu_layers=layers,
        output_on_gpu=output,
    )


def usable_bytes(gpu: catalog.GpuInfo) -> int:
    if gpu.name in USABLE_MIB:
        return USABLE_MIB[gpu.name] * MIB
    return int(gpu.memory_bytes * (1 - ECC_FRACTION)) - DRIVER_RESERVED_MIB * MIB


@dataclass(frozen=True)
class Plan:
    model: ModelShape
    gpu: catalog.GpuInfo
    settings: ServeSettings
    need: VramNeed
    usable: int
    max_parallel: int  # at this ctx per request; 0 when not even one fits
    max_ctx_per_request: int  # at this parallelism, multiple of 256; 0 when none fits

    @property
    def fits(self) -> bool:
        return self.need.total <= self.usable

    @property
    def headroom(self) -> int:
        return self.usable - self.need.total

    @property
    def headroom_fraction(self) -> float:
        return self.headroom / self.usable


MAX_PARALLEL = 256
MAX_CTX = 1_048_576


def _fits(model: ModelShape, gpu_bytes: int, settings: ServeSettings) -> bool:
    return estimate(model, settings).total <= gpu_bytes


def _largest(lo: int, hi: int, ok: Any) -> int:
    """The largest n in [lo, hi] with ok(n), for ok true up to some point; lo - 1 if none."""
    if not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2  # pragma: no mutate: any mid in (lo, hi] finds the same n
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan(model: ModelShape, gpu: catalog.GpuInfo, settings: ServeSettings) -> Plan:
    usable = usable_bytes(gpu)
    per_request = settings.ctx_per_slot
    # Both searches keep llama.cpp's default split: -c = ctx per request x parallel.
    max_parallel = _largest(
        1,
        MAX_PARALLEL,
        lambda n: _fits(
            model, usable, replace(settings, parallel=n, ctx_per_request=per_request, ctx_size=None)
        ),
    )
    max_ctx = CTX_PAD * _largest(
        1,
        MAX_CTX // CTX_PAD,
        lambda n: _fits(
            model, usable, replace(settings, ctx_per_request=n * CTX_PAD, ctx_size=None)
        ),
    )
    return Plan(
        model=model,
        gpu=gpu,
        settings=settings,
        need=estimate(model, settings),
        usable=usable,
        max_parallel=max(max_parallel, 0),
        max_ctx_per_request=max(max_ctx, 0),
    )


# ---------------------------------------------------------------------------------------------
# The check `llmctl render` runs on the GPU tier.


class FitLevel(StrEnum):
    OK = "ok"
    WARN = "warn"  # fits with less than WARN_HEADROOM to spare
    REFUSE = "refuse"  # does not fit
    UNKNOWN = "unknown"  # model not in the catalog: not checked


@dataclass(frozen=True)
class FitReport:
    level: FitLevel
    message: str
    plan: Plan | None = None


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def fit_report(p: Plan, ctx_name: str = "ctx_per_request", par_name: str = "parallel") -> FitReport:
    s = p.settings
    what = (
        f"{p.model.name} ({p.model.quantization}) with {s.layout} "
        f"({s.kv_type} KV{', unified' if s.kv_unified else ''}) on a {p.gpu.name}"
    )
    if not p.fits:
        fixes = []
        if p.max_parallel >= 1:
            fixes.append(f"lower {par_name} to {p.max_parallel}")
        if p.max_ctx_per_request >= CTX_PAD:
            fixes.append(f"lower {ctx_name} to {p.max_ctx_per_request}")
        if s.kv_type == "f16":
            fixes.append("use a q8_0 KV cache")
        fixes.append("or choose a bigger GPU or a smaller model")
        return FitReport(
            FitLevel.REFUSE,
            f"{what} needs {gib(p.need.total)}, more than the {gib(p.usable)} usable: "
            + ", ".join(fixes)
            + ".",
            p,
        )
    spare = f"{gib(p.headroom)} ({p.headroom_fraction:.0%})"
    if p.headroom_fraction < WARN_HEADROOM:
        return FitReport(
            FitLevel.WARN,
            f"{what} needs {gib(p.need.total)} of {gib(p.usable)} usable, leaving only {spare}: "
            f"lower {par_name} or {ctx_name} to keep a margin for allocation spikes.",
            p,
        )
    return FitReport(
        FitLevel.OK,
        f"{what} needs {gib(p.need.total)} of {gib(p.usable)} usable, {spare} to spare.",
        p,
    )


def check_gpu_fit(stack: Stack, cloud: catalog.CloudName) -> FitReport:
    """Whether the Stack's GPU model, context and parallelism fit that cloud's GPU."""
    model = stack.gpu.model
    info = catalog.MODELS.get(model.name)
    if info is None:
        info = next((m for m in catalog.MODELS.values() if model.name in m.aliases), None)
    if info is None:
        return FitReport(
            FitLevel.UNKNOWN,
            f"model {model.name!r} is not in llmctl's catalog, so its GPU memory was not "
            f"checked: run `llmctl plan --model {model.uri}` to read its GGUF header. The "
            f"router sizes it by gpu.model.parameters, now {model.parameters:,} (inherited from "
            "the default model unless you set it): set it to the model's own count.",
        )
    llama = stack.gpu.llamacpp
    settings = ServeSettings(
        ctx_per_request=llama.ctx_per_request,
        parallel=llama.parallel,
        flash_attn=llama.flash_attn,
        ngl=llama.ngl,
        kv_unified=llama.unified,
        ctx_size=llama.ctx_size,
    )
    gpu = stack.gpu.gpu_of(cloud)
    report = fit_report(
        plan(ModelShape.from_catalog(info), gpu, settings),
        ctx_name="gpu.llamacpp.ctx_per_request",
        par_name="gpu.llamacpp.parallel",
    )
    return replace(report, message=f"{cloud.value}: {report.message}")
