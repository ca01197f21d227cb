"""Building llama-server and llama-quantize with CUDA from the pinned llama.cpp sources, or
reusing a build carried over with the working tree.

The sources are llama-cpp-python's PyPI sdist (vendor/llama.cpp), as scripts/build-llama-server.sh
fetches them. A GPU machine without network needs them at hand: `benchmarks/gpu/pack.sh` writes
a trimmed tarball of them (under 9 MB) into .carry/, and this module unpacks either that tarball or
the whole sdist.

A build is one folder per CUDA architecture, `<build root>/sm_<arch>/bin/`, holding llama-server,
llama-quantize and their shared libraries (BUILD_SHARED_LIBS=ON: the CUDA kernels sit once in
libggml-cuda.so instead of twice in two static binaries, so a build is small enough to carry).
A folder whose two binaries run `--version` is reused; `sm_<arch>.tar.xz` beside it is unpacked
first if the folder is missing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
TARGETS = ("llama-server", "llama-quantize")

# The flags of scripts/build-llama-server.sh, plus CUDA. LLAMA_USE_PREBUILT_UI defaults to ON and
# downloads: off, as every network access would fail there.
BASE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=OFF",
)


@dataclass
class Build:
    arch: str  # "90", "75"
    root: Path  # <build root>/sm_<arch>
    reused: bool = False
    seconds: float = 0.0
    skipped: str | None = None  # why there is no build
    commands: list[list[str]] = field(default_factory=list)

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def server(self) -> Path:
        return self.bin_dir / "llama-server"

    @property
    def quantize(self) -> Path:
        return self.bin_dir / "llama-quantize"

    def as_json(self) -> dict[str, object]:
        return {
            "arch": f"sm_{self.arch}",
            "dir": str(self.root),
            "reused": self.reused,
            "seconds": round(self.seconds, 1),
            "skipped": self.skipped,
            "commands": [" ".join(c) for c in self.commands],
        }


def find_nvcc() -> str | None:
    """nvcc on PATH, or in CUDA's usual install folders (a login shell's PATH may lack them)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in [
        Path("/usr/local/cuda/bin/nvcc"),
        *sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"), reverse=True),
    ]:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def arch_of(compute_cap: str) -> str:
    """nvidia-smi's compute_cap ("9.0") as CMake's architecture number ("90")."""
    major, _, minor = compute_cap.strip().partition(".")
    if not major.isdigit() or not (minor or "0").isdigit():
        raise ValueError(f"not a compute capability: {compute_cap!r}")
    return f"{int(major)}{int(minor or 0)}"


def library_env(bin_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a shared build runs in: its libraries sit beside the binaries, and a
    carried build's RPATH names the folder it was built in, not this one."""
    env = dict(os.environ if env is None else env)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(bin_dir), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def runs(binary: Path) -> bool:
    """Whether the binary starts: llama-server answers --version; llama-quantize has no such
    flag and prints its usage (exit code 1), which proves as much."""
    if not os.access(binary, os.X_OK):
        return False
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            timeout=60,
            env=library_env(binary.parent),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 or b"usage:" in done.stdout + done.stderr


def carried(root: Path) -> bool:
    """Whether `root` holds a usable build, unpacking `<root>.tar.xz` (or its parts,
    `<root>.tar.xz.00`, `.01`...) first if need be."""
    archive = root.with_name(root.name + ".tar.xz")
    parts = sorted(root.parent.glob(root.name + ".tar.xz.[0-9][0-9]"))
    if not (root / "bin").is_dir() and (archive.is_file() or parts):
        if parts:
            with archive.open("wb") as joined:
                for part in parts:
                    joined.write(part.read_bytes())
        with tarfile.open(archive) as tar:
            tar.extractall(root.parent, filter="data")
    return all(runs(root / "bin" / t) for t in TARGETS)


def source_dir(tarball: Path, work: Path) -> Path:
    """Unpack the sources (the sdist, or pack.sh's trimmed tarball) and find llama.cpp in them."""
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(work, filter="data")
    for candidate in sorted(work.glob("**/CMakeLists.txt"), key=lambda p: len(p.parts)):
        folder = candidate.parent
        if (folder / "ggml" / "CMakeLists.txt").is_file() and (folder / "tools").is_dir():
            return folder
    raise RuntimeError(f"{tarball} holds no llama.cpp source tree (CMakeLists.txt beside ggml/)")


def cmake_commands(src: Path, build_dir: Path, arch: str, jobs: int) -> list[list[str]]:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    return [
        [
            "cmake",
            "-S",
            str(src),
            "-B",
            str(build_dir),
            *generator,
            *BASE_FLAGS,
            "-DGGML_CUDA=ON",
            # SASS for this architecture only: one architecture keeps the build within minutes.
            f"-DCMAKE_CUDA_ARCHITECTURES={arch}-real",
        ],
        ["cmake", "--build", str(build_dir), "--target", *TARGETS, "-j", str(jobs)],
    ]


def build(
    src: Path, cmake_dir: Path, arch: str, jobs: int, log: Path, timeout: float
) -> subprocess.Popen[bytes]:
    """Start the configure-and-build in `cmake_dir`, in the background, in a process group of
    its own (its output goes to `log`); `finish` then copies the binaries and libraries."""
    script = " && ".join(
        " ".join(shlex.quote(a) for a in command)
        for command in cmake_commands(src, cmake_dir, arch, jobs)
    )
    env = dict(os.environ)
    nvcc = find_nvcc()
    if nvcc:  # CMake finds the CUDA toolkit from the compiler
        env["CUDACXX"] = nvcc
        env["PATH"] = os.pathsep.join([str(Path(nvcc).parent), env.get("PATH", "")])
    out = log.open("ab")
    proc = subprocess.Popen(
        ["timeout", str(int(timeout)), "bash", "-c", script],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    out.close()
    return proc


def finish(cmake_dir: Path, root: Path) -> None:
    """Copy the two binaries and the shared libraries (their versioned names stay links, so
    libggml-cuda.so is there once) from the build tree into root/bin."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    for item in (cmake_dir / "bin").iterdir():
        if item.name in TARGETS or ".so" in item.name:
            target = root / "bin" / item.name
            if target.is_symlink() or target.exists():
                target.unlink()
            shutil.copy2(item, target, follow_symlinks=False)


PART = 16 * 1024**2 - 4096  # a file brought back through $OUT is at most 16 MiB


def pack(root: Path, out_dir: Path, max_parts: int = 3, part_size: int = PART) -> list[Path]:
    """Write <out_dir>/sm_<arch>.tar.xz for the next run to carry, split into parts
    (`.tar.xz.00`, `.01`...) when it is over what one returned file may hold; [] when even
    `max_parts` parts would not hold it. Three parts (48 MiB) keep within the 64 MiB that
    $OUT brings back and that a call may carry beside the working tree and .carry's 14 MB."""
    archive = out_dir / (root.name + ".tar.xz")
    with tarfile.open(archive, "w:xz", preset=3) as tar:
        tar.add(root / "bin", arcname=f"{root.name}/bin")
    size = archive.stat().st_size
    if size <= part_size:
        return [archive]
    if size > part_size * max_parts:
        archive.unlink()
        return []
    data = archive.read_bytes()
    archive.unlink()
    parts = []
    for i in range(0, size, part_size):
        part = out_dir / f"{root.name}.tar.xz.{i // part_size:02d}"
        part.write_bytes(data[i : i + part_size])
        parts.append(part)
    return parts


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a build still running (the run is being cut short), compiler processes and all."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
