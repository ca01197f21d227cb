"""One GPU run that measures what llmctl claims about CUDA (issue 17).

In one call on a GPU machine with no network (benchmarks/gpu/run.sh; docs/gpu-check.md):

1. builds llama-server and llama-quantize with CUDA from the pinned llama.cpp sources for the GPU
   it finds, reusing a build carried with the working tree; then, if the time left allows, for
   sm_75 (the T4's);
2. writes a 7B-shape and a 1.1B-shape llama GGUF with the test helpers and quantizes them to
   Q4_K_M with that build's llama-quantize;
3. for each model, runs llama-server with the flags `llmctl render` puts in the GPU overlay and
   - compares `plan`'s prediction (weights, KV cache, compute buffer, total) with llama-server's
     log and nvidia-smi, with the relative error;
   - measures aggregate tokens/s and time to first token at concurrency 1, 8 and 16, direct and
     through `llmctl router serve`, interleaved over 3 rounds, and the router/direct ratio;
4. starts llama-server as the overlay does with no usable GPU (CUDA_VISIBLE_DEVICES="") and checks
   that it fails loudly rather than serving on the CPU;
5. writes every figure to one JSON file (rewritten after each step, so a run cut short keeps
   what it measured) and prints a table.

`--cpu-selftest` runs the same path on the CPU with tiny models, the cached CPU llama-server and
llama-quantize, and a short budget; the CUDA build is skipped with a line that says so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _path in (str(REPO), str(REPO / "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmarks.gpu import build as builds  # noqa: E402
from benchmarks.gpu import load, memory  # noqa: E402

GPU_BUDGET_S = 540.0  # the call is at most 9 minutes
SELFTEST_BUDGET_S = 300.0
T4_ARCH = "75"


def say(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


# --- the models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    key: str  # "7b", "1.1b"
    alias: str
    shape: Any  # tests.support.gguf_models.LlamaShape
    parameters: int


def model_cases(selftest: bool) -> list[ModelCase]:
    from tests.support.gguf_models import LLAMA2_7B, TINYLLAMA_1B, LlamaShape

    if not selftest:
        return [
            ModelCase("1.1b", "gpu-check-1.1b", TINYLLAMA_1B, 1_100_048_384),
            ModelCase("7b", "gpu-check-7b", LLAMA2_7B, 6_738_415_616),
        ]
    # The same two kinds of shape (grouped-query attention, plain multi-head attention), small
    # enough for a loaded 2-core machine; widths are multiples of 256, so Q4_K_M applies to them.
    small_gqa = LlamaShape(n_layers=2, n_embd=256, n_heads=8, n_kv_heads=2, n_ff=512)
    small_mha = LlamaShape(n_layers=2, n_embd=256, n_heads=4, n_kv_heads=4, n_ff=768)
    return [
        ModelCase("1.1b", "gpu-check-1.1b", small_gqa, 1_100_048_384),
        ModelCase("7b", "gpu-check-7b", small_mha, 6_738_415_616),
    ]


def write_models(cases: list[ModelCase], work: Path) -> dict[str, Path]:
    from tests.support.gguf_models import write_llama_gguf

    out = {}
    for case in cases:
        path = work / f"{case.alias}-f16.gguf"
        t0 = time.monotonic()
        write_llama_gguf(path, case.shape, name=case.alias, tile=1_000_003)
        say(
            f"wrote {path.name}: {path.stat().st_size / 2**20:.1f} MiB "
            f"in {time.monotonic() - t0:.1f} s"
        )
        out[case.key] = path
    return out


def quantize(quantizer: Path, f16: Path, threads: int, timeout: float) -> tuple[Path, float]:
    q = f16.with_name(f16.name.replace("-f16", "-q4_k_m"))
    t0 = time.monotonic()
    done = subprocess.run(
        [str(quantizer), str(f16), str(q), "Q4_K_M", str(threads)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=builds.library_env(quantizer.parent),
    )
    if done.returncode != 0:
        raise RuntimeError(f"llama-quantize failed ({done.returncode}): {done.stderr[-2000:]}")
    f16.unlink()
    return q, time.monotonic() - t0


# --- the overlay's llama-server -----------------------------------------------------------------


def load_stack(config: Path | None) -> Any:
    from llmctl.config import Stack, load_stack

    if config is None:
        return Stack()
    return load_stack(config_file=config, env={}).stack


def overlay_container(stack: Any) -> dict[str, Any]:
    """The llama-server container of the GPU overlay, as `llmctl render` builds it."""
    from llmctl.catalog import CloudName
    from llmctl.manifests.build import built_objects

    for obj in built_objects(stack, CloudName.AWS, gpu=True):
        if obj["kind"] != "Deployment":
            continue
        spec = obj["spec"]["template"]["spec"]
        for container in spec["containers"]:
            image = container.get("image", "")
            if image == stack.images.llama_server_cuda:
                return dict(container)
    raise RuntimeError("the rendered GPU overlay has no container running the CUDA image")


OVERRIDES = {"--host": "host", "--port": "port", "--model": "model", "-m": "model"}


def server_command(
    container: dict[str, Any], binary: Path, model: Path, alias: str, port: int
) -> list[str]:
    """The container's command line with this machine's binary, model, address and alias."""
    values = {"host": "127.0.0.1", "port": str(port), "model": str(model)}
    command = [str(x) for x in container.get("command") or []]
    args = [str(x) for x in container.get("args") or []]
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in OVERRIDES and i + 1 < len(args):
            out += [arg, values[OVERRIDES[arg]]]
            i += 2
        elif arg == "--alias" and i + 1 < len(args):
            out += [arg, alias]
            i += 2
        else:
            out.append(arg)
            i += 1
    if not command:  # the image's entrypoint is llama-server
        return [str(binary), *out]
    # A command of its own (a wrapper): point its llama-server at this machine's binary.
    swapped = [
        str(binary)
        if Path(c).name == "llama-server"
        else c.replace("/app/llama-server", str(binary))
        for c in command
    ]
    return [*swapped, *out]


DEVICE_FLAGS = ("--device", "-dev")


def without_device(argv: list[str]) -> tuple[list[str], list[str]]:
    """The command line without its --device choice (the CPU self-test's servers: a CPU build has
    no CUDA0), and what was dropped."""
    out: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in DEVICE_FLAGS and i + 1 < len(argv):
            dropped += argv[i : i + 2]
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out, dropped


def container_env(container: dict[str, Any], work: Path | None = None) -> dict[str, str]:
    """The container's plain env values; a path for CUDA's JIT cache moves into `work`."""
    env = {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}
    if work is not None and "CUDA_CACHE_PATH" in env:
        env["CUDA_CACHE_PATH"] = str(work / "cuda-cache")
    return env


class Server:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.argv, self.env, self.log, self.port = argv, env, log, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        out.close()
        return self

    def wait(self, timeout: float, path: str = "/health") -> str:
        """ "healthy", "exited" or "timeout"."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return "exited"
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return "healthy"
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)
        return "timeout"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)


# --- the router ---------------------------------------------------------------------------------


def overlay_router_config(stack: Any) -> dict[str, Any]:
    """The router.yaml of the GPU overlay, as rendered."""
    import yaml

    from llmctl.catalog import CloudName
    from llmctl.manifests.build import built_objects

    for obj in built_objects(stack, CloudName.AWS, gpu=True):
        if obj["kind"] == "ConfigMap" and "router.yaml" in obj.get("data", {}):
            config = yaml.safe_load(obj["data"]["router.yaml"])
            assert isinstance(config, dict)
            return config
    raise RuntimeError("the rendered GPU overlay has no router.yaml")


def router_config(
    rendered: dict[str, Any], case: ModelCase, backend_url: str, slots: int
) -> dict[str, Any]:
    """The rendered config with one GPU backend: this machine's llama-server."""
    config = dict(rendered)
    config["models"] = [{"name": case.alias, "parameters": case.parameters}]
    config["backends"] = [
        {
            "name": "local/gpu",
            "url": backend_url,
            "tier": "gpu",
            "cloud": rendered.get("cloud", "aws"),
            "model": case.alias,
            "slots": slots,
        }
    ]
    config["policy"] = dict(rendered.get("policy") or {}, fallbackModel=case.alias)
    return config


def start_router(config: dict[str, Any], work: Path, python: str) -> Server:
    port = free_port()
    path = work / f"router-{port}.yaml"
    path.write_text(json.dumps(config, indent=1))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    argv = [
        python,
        "-m",
        "llmctl",
        "router",
        "serve",
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return Server(argv, env, work / f"router-{port}.log", port).start()


def wait_routed(router: Server, alias: str, timeout: float) -> None:
    """Until the router has seen its backend healthy and serves a request through it."""
    deadline = time.monotonic() + timeout
    body = json.dumps(
        {"model": alias, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    ).encode()
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            router.url + "/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json", "x-llm-require-tier": "gpu"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(
        f"the router served nothing within {timeout} s: {last}; log: {router.tail()}"
    )


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    deadline: Deadline
    out: Path
    work: Path
    report: dict[str, Any] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    builds: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pending_models: dict[str, Path] | None = None  # F16 files written during the build

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.deadline.elapsed(), 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=_json) + "\n")
        tmp.replace(self.out)

    def skip(self, what: str, why: str) -> None:
        say(f"SKIPPED {what}: {why}")
        self.report.setdefault("skipped", []).append({"step": what, "why": why})

    def cleanup(self) -> None:
        for proc in self.builds:
            builds.stop(proc)
        for server in self.servers:
            server.stop()


def _json(obj: object) -> object:
    return obj.as_json() if isinstance(obj, builds.Build) else str(obj)


SCRATCH_NEED = 24 * 1024**3  # the 7B F16 file, its Q4_K_M and the 1.1B pair, with room


def scratch_root() -> str | None:
    """/dev/shm when it has room for the models (memory is faster than the disk), else the
    default temporary folder. A VM's tmpfs may be sized from a small starting memory."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize >= SCRATCH_NEED else None


def detect_gpu() -> dict[str, Any] | None:
    found = memory.gpus()
    return found[0] if found else None


def catalog_gpu(name: str) -> str:
    """The catalog GPU nearest nvidia-smi's name; plan's need does not depend on it."""
    lowered = name.lower()
    for key, gpu in (("t4", "t4"), ("l4", "l4"), ("a10g", "a10g"), ("a100", "a100-40gb")):
        if key in lowered:
            return gpu
    return "h100"


def step_build(run: Run, gpu: dict[str, Any] | None) -> tuple[Path, Path]:
    """The llama-server and llama-quantize this run uses."""
    args = run.args
    report: dict[str, Any] = {}
    run.report["build"] = report
    nvcc = builds.find_nvcc()
    if args.llama_server:
        server = Path(args.llama_server)
        quantizer = Path(args.llama_quantize or server.with_name("llama-quantize"))
        report["given"] = {"llama_server": str(server), "llama_quantize": str(quantizer)}
        if not args.cpu_selftest:
            return server, quantizer
    if args.cpu_selftest:
        if nvcc is None:
            would = builds.cmake_commands(
                Path("<sources>"), Path("<build>"), "90", os.cpu_count() or 1
            )
            run.skip(
                "CUDA build",
                "no nvcc on PATH (--cpu-selftest uses the CPU llama-server "
                f"{server} and llama-quantize {quantizer}); a GPU run would run: "
                + " ; ".join(" ".join(c) for c in would),
            )
        return server, quantizer
    if gpu is None:
        raise RuntimeError(
            "nvidia-smi finds no GPU: run with --cpu-selftest on a machine without one"
        )
    arch = builds.arch_of(gpu["compute_cap"])
    root = Path(args.build_root) / f"sm_{arch}"
    found = builds.Build(arch, root)
    report["gpu_arch"] = found
    if builds.carried(root):
        found.reused = True
        say(f"reusing the carried build {root}")
        return found.server, found.quantize
    if nvcc is None:
        raise RuntimeError("no carried build and no nvcc on PATH: cannot build llama-server")
    sources = find_sources(args)
    src = builds.source_dir(sources, run.work / "src")
    cmake_dir = run.work / f"cmake-sm_{arch}"
    jobs = os.cpu_count() or 16
    found.commands = builds.cmake_commands(src, cmake_dir, arch, jobs)
    say(f"building llama-server and llama-quantize for sm_{arch} from {sources}")
    t0 = time.monotonic()
    proc = builds.build(
        src,
        cmake_dir,
        arch,
        jobs,
        run.work / f"build-sm_{arch}.log",
        timeout=max(60.0, run.deadline.left() - 120),
    )
    run.builds.append(proc)
    # The F16 models are written while the compiler runs: it leaves a core or so idle.
    run.pending_models = write_models(model_cases(args.small_models), run.work)
    rc = proc.wait()
    found.seconds = time.monotonic() - t0
    if rc != 0:
        log = (run.work / f"build-sm_{arch}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the CUDA build failed ({rc}):\n{log}")
    builds.finish(cmake_dir, root)
    say(f"built sm_{arch} in {found.seconds:.0f} s")
    return found.server, found.quantize


def find_sources(args: argparse.Namespace) -> Path:
    if args.sources:
        return Path(args.sources)
    carry = Path(args.carry)
    for pattern in ("llama.cpp-*.tar.gz", "llama_cpp_python-*.tar.gz"):
        found = sorted(carry.glob(pattern))
        if found:
            return found[-1]
    raise RuntimeError(
        f"no llama.cpp sources in {carry}: run benchmarks/gpu/pack.sh on a machine with network "
        "and carry .carry (docs/gpu-check.md)"
    )


def step_model(
    run: Run,
    case: ModelCase,
    path: Path,
    server_bin: Path,
    container: dict[str, Any],
    stack: Any,
    gpu_name: str,
    rendered_router: dict[str, Any],
) -> dict[str, Any]:
    args = run.args
    result: dict[str, Any] = {
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "shape": case.shape.__dict__,
    }
    port = free_port()
    argv = server_command(container, server_bin, path, case.alias, port)
    if args.cpu_selftest:
        argv, dropped = without_device(argv)
        if dropped:
            result["selftest_dropped_flags"] = dropped
            say(
                f"self-test: {' '.join(dropped)} left out of the measured servers (a CPU build "
                "has no such device); the no-GPU check keeps it"
            )
    env = builds.library_env(
        server_bin.parent, dict(os.environ, **container_env(container, run.work))
    )
    # The buffer sizes are logged at verbosity 4; the command line stays the overlay's.
    env.setdefault("LLAMA_ARG_LOG_VERBOSITY", "4")
    result["command"] = argv
    result["extra_env"] = {"LLAMA_ARG_LOG_VERBOSITY": env["LLAMA_ARG_LOG_VERBOSITY"]}
    prediction = memory.predict(path, stack, gpu_name)
    result["prediction"] = prediction.as_json()

    used_before = memory.gpu_used_bytes()
    server = Server(argv, env, run.work / f"llama-{case.key}.log", port)
    run.servers.append(server)
    t0 = time.monotonic()
    state = server.start().wait(args.load_timeout)
    result["load_s"] = round(time.monotonic() - t0, 2)
    if state != "healthy":
        raise RuntimeError(f"llama-server for {case.key} is {state}: {server.tail()}")
    assert server.proc is not None
    log = server.text()
    devices = memory.CPU_DEVICES if args.cpu_selftest else memory.GPU_DEVICES
    buffers = memory.log_buffers(log, devices)
    result["log_buffers"] = buffers
    result["log_kv_cells"] = memory.kv_cells(log)
    result["log_buffers_all_devices"] = memory.log_buffers(log, re.compile(r".+"))
    after_load = memory.process_bytes(server.proc.pid)
    used_loaded = memory.gpu_used_bytes()
    say(
        f"{case.key}: llama-server ready in {result['load_s']} s; log buffers "
        + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in buffers.items())
    )

    router = start_router(
        router_config(rendered_router, case, server.url, slots=int(flag(argv, "--parallel") or 1)),
        run.work,
        args.python,
    )
    run.servers.append(router)
    if router.wait(30, "/healthz") != "healthy":
        raise RuntimeError(f"the router did not start: {router.tail()}")
    wait_routed(router, case.alias, 60)
    targets = [
        load.Target("direct", server.url, {}),
        load.Target("router", router.url, {"x-llm-require-tier": "gpu"}),
    ]
    say(f"{case.key}: measuring at concurrency {args.levels}, {args.rounds} rounds")
    result["throughput"] = asyncio.run(
        load.measure(
            targets,
            case.alias,
            args.levels,
            args.rounds,
            args.per_client,
            args.max_tokens,
            request_timeout=args.request_timeout,
            time_left=run.deadline.left,
            prompt=load.SHORT_PROMPT if args.cpu_selftest else load.PROMPT,
        )
    )
    after_bench = memory.process_bytes(server.proc.pid)
    used_bench = memory.gpu_used_bytes()
    result["nvidia_smi"] = {
        "process_after_load_bytes": after_load,
        "process_after_benchmark_bytes": after_bench,
        "gpu_used_before_bytes": used_before,
        "gpu_used_after_load_bytes": used_loaded,
        "gpu_used_after_benchmark_bytes": used_bench,
    }
    measured_total = max((x for x in (after_load, after_bench) if x is not None), default=None)
    total_by = "nvidia-smi: process memory"
    if measured_total is None and used_before is not None:
        # nvidia-smi does not list the process (some sandboxes hide it): the device's growth.
        grown = [u - used_before for u in (used_loaded, used_bench) if u is not None]
        measured_total = max(grown, default=None)
        total_by = "nvidia-smi: device memory.used growth"
    if measured_total is None:
        result["nvidia_smi"]["note"] = "no nvidia-smi figure: no GPU here"
    result["memory_table"] = memory.compare(prediction, buffers, measured_total, total_by)
    router.stop()
    server.stop()
    return result


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def step_fail_loudly(
    run: Run, server_bin: Path, container: dict[str, Any], model: Path
) -> dict[str, Any]:
    """llama-server as the overlay starts it, with no usable GPU."""
    port = free_port()
    argv = server_command(container, server_bin, model, "no-gpu", port)
    env = builds.library_env(
        server_bin.parent, dict(os.environ, **container_env(container, run.work))
    )
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("LLAMA_ARG_LOG_VERBOSITY", "4")
    server = Server(argv, env, run.work / "llama-no-gpu.log", port)
    run.servers.append(server)
    t0 = time.monotonic()
    state = server.start().wait(run.args.load_timeout)
    result: dict[str, Any] = {
        "command": argv,
        "env": {"CUDA_VISIBLE_DEVICES": ""},
        "state": state,
        "seconds": round(time.monotonic() - t0, 2),
    }
    if state == "exited":
        assert server.proc is not None
        result["exit_code"] = server.proc.returncode
    if state == "healthy":
        # It came up: does it answer, on the CPU?
        body = json.dumps(
            {"model": "no-gpu", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        request = urllib.request.Request(
            server.url + "/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                usage = json.load(response).get("usage", {})
                result["served_tokens"] = usage.get("completion_tokens")
        except (urllib.error.URLError, OSError) as exc:
            result["served_error"] = str(exc)
    result["log_tail"] = server.tail(12)
    result["log_says_no_gpu"] = bool(
        re.search(
            r"no usable GPU|no CUDA devices|ggml_cuda_init: "
            r"failed|invalid device",
            server.text(),
        )
    )
    result["fails_loudly"] = state == "exited" and result.get("exit_code") != 0
    result["reason"] = None
    for word in ("error", "invalid device", "failed", "no usable GPU"):  # the cause first
        said = re.search(rf"^.*{word}.*$", server.text(), re.MULTILINE | re.IGNORECASE)
        if said:
            result["reason"] = said.group(0).strip()
            break
    server.stop()
    return result


def step_t4_build(run: Run, gpu_arch: str, sources_ok: bool) -> None:
    args = run.args
    root = Path(args.build_root) / f"sm_{T4_ARCH}"
    t4 = builds.Build(T4_ARCH, root)
    run.report["build"]["t4"] = t4
    if gpu_arch == T4_ARCH:
        t4.skipped = "the GPU found is a T4: its build above is the sm_75 one"
        return
    if builds.carried(root):
        t4.reused = True
    else:
        spent = run.report["build"]["gpu_arch"].seconds or 300.0
        if builds.find_nvcc() is None or not sources_ok:
            t4.skipped = "no nvcc or no sources"
            run.skip("sm_75 build", t4.skipped)
            return
        if run.deadline.left() < spent * 1.1 + 20:
            t4.skipped = (
                f"{run.deadline.left():.0f} s left, the {gpu_arch} build took "
                f"{spent:.0f} s: carry the build (docs/gpu-check.md) or run again"
            )
            run.skip("sm_75 build", t4.skipped)
            return
        src = run.work / "src"
        src = builds.source_dir(find_sources(args), src)
        cmake_dir = run.work / f"cmake-sm_{T4_ARCH}"
        jobs = os.cpu_count() or 16
        t4.commands = builds.cmake_commands(src, cmake_dir, T4_ARCH, jobs)
        t0 = time.monotonic()
        proc = builds.build(
            src,
            cmake_dir,
            T4_ARCH,
            jobs,
            run.work / f"build-sm_{T4_ARCH}.log",
            timeout=max(30.0, run.deadline.left() - 15),
        )
        run.builds.append(proc)
        rc = proc.wait()
        t4.seconds = time.monotonic() - t0
        if rc != 0:
            t4.skipped = f"build failed or timed out ({rc}); log in the work folder"
            run.skip("sm_75 build", t4.skipped)
            return
        builds.finish(cmake_dir, root)
    # Which machine code the T4 build carries: SASS for sm_75, nothing the H100 could run.
    lib = next(iter(sorted(root.glob("bin/libggml-cuda.so*"))), None)
    if lib is not None and shutil.which("cuobjdump"):
        done = subprocess.run(
            ["cuobjdump", "--list-elf", str(lib)], capture_output=True, text=True, timeout=60
        )
        archs = sorted(set(re.findall(r"sm_\d+", done.stdout)))
        run.report["build"]["t4_elf_archs"] = archs


def pack_builds(run: Run) -> None:
    out_dir = os.environ.get("OUT")
    if not out_dir or run.args.cpu_selftest:
        return
    for key in ("gpu_arch", "t4"):
        b = run.report["build"].get(key)
        if isinstance(b, builds.Build) and not b.reused and b.server.exists():
            if run.deadline.left() < 20:
                run.skip(f"packing {b.root.name}", "no time left")
                continue
            parts = builds.pack(b.root, Path(out_dir))
            names = [p.name for p in parts]
            run.report["build"].setdefault("packed", {})[b.root.name] = names
            say(
                f"{b.root.name}: "
                + (
                    f"packed to $OUT/{', '.join(names)}: copy into .carry/cuda/ for the next run"
                    if parts
                    else "too large to bring back through $OUT"
                )
            )


def save_logs(run: Run) -> None:
    """The servers', router's and build's logs, into $OUT/gpu-check-logs.tar.gz (a GPU run's
    only other way back is the output's last 12,000 characters)."""
    out_dir = os.environ.get("OUT")
    if not out_dir or run.args.cpu_selftest:
        return
    import tarfile

    archive = Path(out_dir) / "gpu-check-logs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(run.work.glob("*.log")) + sorted(run.work.glob("router-*.yaml")):
            if path.stat().st_size < 64 * 1024**2:
                tar.add(path, arcname=path.name)
    run.report["logs"] = str(archive)


# --- the table ----------------------------------------------------------------------------------


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def table(report: dict[str, Any]) -> str:
    lines = [
        f"llmctl GPU check ({report['mode']}), {report['started_utc']}, "
        f"GPU: {report['host'].get('gpu') or 'none'}"
    ]
    for key, m in report.get("models", {}).items():
        if "error" in m:
            lines.append(f"\n{key}: ERROR {m['error']}")
            continue
        lines.append(
            f"\nmodel {key} ({m['file']}, {m['file_bytes'] / 2**20:.1f} MiB), "
            f"{m['prediction']['layout']}"
        )
        lines.append(f"  {'memory (MiB)':16} {'plan':>9} {'measured':>9} {'error':>8}  source")
        for row in m["memory_table"]:
            err = row["relative_error"]
            lines.append(
                f"  {row['term']:16} {mib(row['predicted_bytes']):>9} "
                f"{mib(row['measured_bytes']):>9} "
                f"{'-' if err is None else f'{err:+.1%}':>8}  {row['measured_by']}"
            )
        lines.append(
            f"  {'conc':>4} {'direct tok/s':>12} {'router tok/s':>12} {'ratio':>6} "
            f"{'TTFT p50 ms direct':>18} {'router':>8} {'errors':>6}"
        )
        for level, row in m["throughput"].items():
            if "direct" not in row:
                lines.append(f"  {level:>4} cut short: no time left")
                continue
            d, r = row["direct"], row["router"]
            lines.append(
                f"  {level:>4} {d['aggregate_tok_s'] or 0:>12.1f} "
                f"{r['aggregate_tok_s'] or 0:>12.1f} "
                f"{row.get('router_over_direct_tok_s') or 0:>6.3f} "
                f"{d['ttft_p50_ms'] or 0:>18.1f} {r['ttft_p50_ms'] or 0:>8.1f} "
                f"{d['errors'] + r['errors']:>6}"
            )
    fl = report.get("fail_loudly")
    if fl:
        verdict = (
            f"fails loudly: exit code {fl.get('exit_code')} after {fl['seconds']} s, "
            f"{fl.get('reason')}"
            if fl["fails_loudly"]
            else f"DOES NOT fail loudly: {fl['state']}"
            + (f", served {fl.get('served_tokens')} tokens" if "served_tokens" in fl else "")
        )
        lines.append(f"\nno usable GPU (CUDA_VISIBLE_DEVICES=''): {verdict}")
    for s in report.get("skipped", []):
        lines.append(f"skipped {s['step']}: {s['why']}")
    for f in report.get("findings", []):
        lines.append(f"FINDING: {f}")
    return "\n".join(lines)


def findings(report: dict[str, Any]) -> list[str]:
    out = []
    for key, m in report.get("models", {}).items():
        if "error" in m:
            out.append(f"model {key}: {m['error']}")
            continue
        ratio = m["throughput"].get("8", {}).get("router_over_direct_tok_s")
        if ratio is not None and ratio < 0.98:
            out.append(
                f"model {key}: the router gives {ratio:.3f}x direct tokens/s at "
                "concurrency 8 (target 0.98x)"
            )
        total = next(r for r in m["memory_table"] if r["term"] == "total")
        if total["relative_error"] is not None and abs(total["relative_error"]) > 0.10:
            out.append(
                f"model {key}: plan's total is off by {total['relative_error']:+.1%} "
                "(target within 10%)"
            )
    fl = report.get("fail_loudly")
    if fl and not fl["fails_loudly"]:
        out.append(
            "with no usable GPU, llama-server started with the overlay's flags "
            f"{fl['state']} instead of failing"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-selftest",
        action="store_true",
        help="the whole path on the CPU with tiny models (CI runs this)",
    )
    parser.add_argument(
        "--out",
        help="the JSON file (default: $OUT/gpu-check.json, else "
        "benchmarks/gpu/out/gpu-check[-selftest].json)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds for the whole run "
        f"(default {GPU_BUDGET_S:.0f}; self-test {SELFTEST_BUDGET_S:.0f})",
    )
    parser.add_argument(
        "--carry",
        default=str(REPO / ".carry"),
        help="the carried folder: sources tarball, wheels, builds",
    )
    parser.add_argument("--sources", help="llama.cpp sources tarball (default: in --carry)")
    parser.add_argument(
        "--build-root", help="one sm_<arch> folder per build (default: <carry>/cuda)"
    )
    parser.add_argument(
        "--llama-server",
        default=None,
        help="use this llama-server (self-test default: $LLAMA_SERVER_BIN)",
    )
    parser.add_argument(
        "--llama-quantize",
        default=None,
        help="use this llama-quantize (default: beside --llama-server)",
    )
    parser.add_argument("--config", type=Path, help="an llmctl.yaml (default: llmctl's defaults)")
    parser.add_argument("--work", help="scratch folder for models and logs")
    parser.add_argument("--levels", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-client", type=int, help="requests per client per burst")
    parser.add_argument("--max-tokens", type=int, help="tokens per request")
    parser.add_argument("--python", default=sys.executable, help="the router's Python")
    parser.add_argument(
        "--small-models",
        action="store_true",
        help="the self-test's small models in a GPU run (a rehearsal of the GPU "
        "path: with a stand-in nvidia-smi and a carried CPU build, on a CPU)",
    )
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in str(args.levels).split(",")]
    st = args.cpu_selftest
    args.budget = args.budget or (SELFTEST_BUDGET_S if st else GPU_BUDGET_S)
    args.per_client = args.per_client or (1 if st else 2)
    args.max_tokens = args.max_tokens or (4 if st else 128)
    args.build_root = args.build_root or str(Path(args.carry) / "cuda")
    args.load_timeout = 60.0 if st else 120.0
    args.request_timeout = 60.0 if st else 120.0
    if st and not args.llama_server:
        args.llama_server = os.environ.get("LLAMA_SERVER_BIN")
        if not args.llama_server:
            parser.error(
                "--cpu-selftest needs --llama-server or $LLAMA_SERVER_BIN "
                "(bash scripts/build-llama-server.sh prints it)"
            )
        args.llama_quantize = args.llama_quantize or os.environ.get("LLAMA_QUANTIZE_BIN")
    default_out = (
        Path(os.environ["OUT"]) / "gpu-check.json"
        if os.environ.get("OUT")
        else REPO
        / "benchmarks"
        / "gpu"
        / "out"
        / ("gpu-check-selftest.json" if st else "gpu-check.json")
    )
    out = Path(args.out) if args.out else default_out
    work = (
        Path(args.work)
        if args.work
        else Path(tempfile.mkdtemp(prefix="llmctl-gpu-check-", dir=None if st else scratch_root()))
    )
    work.mkdir(parents=True, exist_ok=True)

    run = Run(args, Deadline(args.budget), out, work)
    gpu = detect_gpu()
    run.report = {
        "schema": 1,
        "mode": "cpu-selftest" if st else "gpu",
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "budget_s": args.budget,
        "host": {
            "gpu": gpu["name"] if gpu else None,
            "gpus": memory.gpus(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "settings": {
            "levels": args.levels,
            "rounds": args.rounds,
            "per_client": args.per_client,
            "max_tokens": args.max_tokens,
        },
        "work": str(work),
        "models": {},
    }

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    status = 0
    try:
        status = execute(run, gpu)
    except KeyboardInterrupt as exc:
        run.report["interrupted"] = str(exc) or "interrupted"
        status = 130
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, then the run fails
        run.report["error"] = f"{type(exc).__name__}: {exc}"
        say(f"ERROR: {run.report['error']}")
        status = 1
    finally:
        run.cleanup()
        save_logs(run)
        run.report["findings"] = findings(run.report)
        run.save()
        run.report = json.loads(out.read_text())
        print(table(run.report), flush=True)
        say(f"figures written to {out} ({run.deadline.elapsed():.0f} s)")
    return status


def execute(run: Run, gpu: dict[str, Any] | None) -> int:
    args = run.args
    stack = load_stack(args.config)
    container = overlay_container(stack)
    rendered_router = overlay_router_config(stack)
    run.report["overlay"] = {
        "command": container.get("command"),
        "args": container.get("args"),
        "env": container_env(container),
    }
    say("overlay flags: " + " ".join(str(a) for a in container.get("args") or []))

    server_bin, quantizer = step_build(run, gpu)
    run.save()
    cases = model_cases(args.cpu_selftest or args.small_models)
    f16 = run.pending_models or write_models(cases, run.work)
    threads = os.cpu_count() or 1
    paths: dict[str, Path] = {}
    for case in cases:
        q, seconds = quantize(
            quantizer, f16[case.key], threads, timeout=max(30.0, run.deadline.left())
        )
        paths[case.key] = q
        # Milliseconds: the self-test's 1.2 MiB models quantize in under 0.05 s on an idle machine,
        # which one decimal wrote as 0.0 (a CI run failed on it).
        run.report["models"][case.key] = {"quantize_s": round(seconds, 3)}
        say(f"quantized {q.name} to Q4_K_M in {seconds:.1f} s ({q.stat().st_size / 2**20:.1f} MiB)")
    run.save()

    gpu_name = catalog_gpu(gpu["name"] if gpu else "")
    for case in cases:
        need = 25.0 if args.cpu_selftest else 60.0
        if run.deadline.left() < need:
            run.skip(
                f"model {case.key}", f"{run.deadline.left():.0f} s left, about {need:.0f} needed"
            )
            continue
        try:
            result = step_model(
                run, case, paths[case.key], server_bin, container, stack, gpu_name, rendered_router
            )
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            say(f"model {case.key} FAILED: {result['error']}")
        finally:
            for server in run.servers:
                server.stop()
        run.report["models"][case.key].update(result)
        run.save()

    smallest = paths[cases[0].key]
    run.report["fail_loudly"] = step_fail_loudly(run, server_bin, container, smallest)
    run.save()

    if not args.cpu_selftest and gpu is not None:
        step_t4_build(
            run,
            builds.arch_of(gpu["compute_cap"]),
            sources_ok=bool(args.sources) or any(Path(args.carry).glob("*.tar.gz")),
        )
        pack_builds(run)
    errors = [k for k, m in run.report["models"].items() if "error" in m]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
