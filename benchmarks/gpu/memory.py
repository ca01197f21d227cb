"""`llmctl plan`'s GPU memory prediction beside what llama-server's log and nvidia-smi report.

llama-server logs each buffer it allocates, per device, at log verbosity 4 (LLAMA_ARG_LOG_VERBOSITY;
the default, 3, prints none of them):

    0.00.029.143 I load_tensors:        CUDA0 model buffer size =  3820.93 MiB
    0.00.034.951 I llama_kv_cache:        CUDA0 KV buffer size =  4096.00 MiB
    0.00.088.168 I sched_reserve:        CUDA0 compute buffer size =   312.01 MiB

On a GPU the device is CUDA0; on the CPU self-test it is CPU (CPU_Mapped for an mmap-ed model,
CPU_REPACK for weights repacked for the CPU's vector unit).
Lines printed more than once (llama.cpp's --fit dry run measures before it allocates) count once:
the last one wins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024**2

_BUFFER = re.compile(
    r"(?P<device>[A-Za-z_]+\d*)\s+(?P<kind>model|KV|compute) buffer size\s*=\s*"
    r"(?P<mib>[\d.]+) MiB"
)
_KV_SIZE = re.compile(r"llama_kv_cache: size =\s*(?P<mib>[\d.]+) MiB \(\s*(?P<cells>\d+) cells")
_KINDS = {"model": "weights", "KV": "kv_cache", "compute": "compute"}


def log_buffers(log: str, device: re.Pattern[str]) -> dict[str, int]:
    """Bytes per buffer kind (weights, kv_cache, compute) on the devices `device` matches."""
    last: dict[tuple[str, str], float] = {}
    for m in _BUFFER.finditer(log):
        last[(m.group("device"), _KINDS[m.group("kind")])] = float(m.group("mib"))
    out: dict[str, int] = {}
    for (dev, kind), mib in last.items():
        if device.fullmatch(dev):
            out[kind] = out.get(kind, 0) + round(mib * MIB)
    return out


def kv_cells(log: str) -> int | None:
    found = _KV_SIZE.findall(log)
    return int(found[-1][1]) if found else None


GPU_DEVICES = re.compile(r"CUDA\d+")
CPU_DEVICES = re.compile(r"CPU(_Mapped|_REPACK)?")


# --- nvidia-smi --------------------------------------------------------------------------------


def smi(*query: str) -> list[list[str]]:
    """Rows of `nvidia-smi --query-... --format=csv,noheader,nounits`; [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(
        ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        return []
    return [[c.strip() for c in line.split(",")] for line in done.stdout.splitlines() if line]


def gpus() -> list[dict[str, str]]:
    rows = smi("--query-gpu=index,name,compute_cap,memory.total,memory.used,driver_version")
    keys = ("index", "name", "compute_cap", "memory_total_mib", "memory_used_mib", "driver")
    return [dict(zip(keys, row, strict=False)) for row in rows]


def gpu_used_bytes(index: int = 0) -> int | None:
    rows = smi("--query-gpu=memory.used")
    if len(rows) <= index or not rows[index][0].isdigit():
        return None
    return int(rows[index][0]) * MIB


def process_bytes(pid: int) -> int | None:
    """What nvidia-smi says the process holds on the GPU (None if it does not list it)."""
    for row in smi("--query-compute-apps=pid,used_memory"):
        if len(row) >= 2 and row[0] == str(pid) and row[1].isdigit():
            return int(row[1]) * MIB
    return None


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    weights: int
    kv_cache: int
    compute: int
    cuda_overhead: int
    llama_buffers: int
    total: int
    layout: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def predict(model_path: Path, stack: Any, gpu_name: str) -> Prediction:
    """What `llmctl plan --model <file> --gpu <gpu>` predicts for the Stack's GPU tier."""
    from llmctl.plan.options import plans_for

    [(plan, _clouds)] = plans_for(stack, model=str(model_path), gpu=gpu_name)
    need = plan.need
    return Prediction(
        weights=need.weights,
        kv_cache=need.kv_cache,
        compute=need.compute,
        cuda_overhead=need.cuda_overhead,
        llama_buffers=need.llama_buffers,
        total=need.total,
        layout=plan.settings.layout,
    )


ROWS = ("weights", "kv_cache", "compute", "llama_buffers", "total")


def compare(
    predicted: Prediction,
    buffers: dict[str, int],
    process: int | None,
    process_by: str = "nvidia-smi: process memory",
) -> list[dict[str, Any]]:
    """One row per term: predicted and measured bytes and the relative error of the
    prediction ((predicted - measured) / measured); measured is None where nothing reports it."""
    measured: dict[str, int | None] = {
        "weights": buffers.get("weights"),
        "kv_cache": buffers.get("kv_cache"),
        "compute": buffers.get("compute"),
        "llama_buffers": sum(buffers.values()) if buffers else None,
        "total": process,
    }
    source = {
        "weights": "log: model buffer",
        "kv_cache": "log: KV buffer",
        "compute": "log: compute buffer",
        "llama_buffers": "log: sum of the three",
        "total": process_by,
    }
    rows = []
    for term in ROWS:
        want = int(getattr(predicted, term))
        got = measured[term]
        rows.append(
            {
                "term": term,
                "predicted_bytes": want,
                "measured_bytes": got,
                "measured_by": source[term],
                "relative_error": None if not got else round((want - got) / got, 4),
            }
        )
    return rows
