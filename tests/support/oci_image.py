"""Images as scripts/build-image.sh writes them (OCI archives), read and run without a daemon:
the image's config and layers straight from the archive, its root filesystem unpacked layer by
layer (OCI whiteouts applied), and a process started in it by runc (Debian's, the runtime the
real node's containerd uses) with the image's user, environment and working directory, the
pods' read-only root and no capabilities."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class OciArchive:
    """One image in an `oci-archive` (an OCI image layout in a tar file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = self._json("index.json")
        (entry,) = self.index["manifests"]
        self.ref_name: str = entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
        self.manifest = self._blob(entry["digest"])
        self.image_config = self._blob(self.manifest["config"]["digest"])
        self.config: dict[str, Any] = self.image_config.get("config", {})

    def _member(self, name: str) -> bytes:
        with tarfile.open(self.path) as archive:
            member = archive.extractfile(name)
            assert member is not None, f"{name} is not a file in {self.path}"
            return member.read()

    def _json(self, name: str) -> Any:
        return json.loads(self._member(name))

    def _blob(self, digest: str) -> Any:
        algorithm, hexdigest = digest.split(":", 1)
        data = self._member(f"blobs/{algorithm}/{hexdigest}")
        assert hashlib.new(algorithm, data).hexdigest() == hexdigest, f"{digest} is corrupt"
        return json.loads(data)

    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))

    def unpack(self, rootfs: Path) -> Path:
        """The image's root filesystem in `rootfs`: each layer in order, its whiteouts deleting
        what lower layers put there (OCI image-spec, "Representing Changes")."""
        rootfs.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.path) as archive:
            for layer in self.manifest["layers"]:
                algorithm, hexdigest = layer["digest"].split(":", 1)
                blob = archive.extractfile(f"blobs/{algorithm}/{hexdigest}")
                assert blob is not None
                layer_path = rootfs.parent / f"layer-{hexdigest[:12]}.tar.gz"
                layer_path.write_bytes(blob.read())
                self._apply_whiteouts(layer_path, rootfs)
                # GNU tar keeps owners, modes and device nodes as root; whiteouts are markers.
                subprocess.run(
                    [
                        "tar",
                        "-xzf",
                        str(layer_path),
                        "-C",
                        str(rootfs),
                        "--numeric-owner",
                        f"--exclude={WHITEOUT}*",
                    ],
                    check=True,
                    timeout=600,
                )
                layer_path.unlink()
        return rootfs

    @staticmethod
    def _apply_whiteouts(layer: Path, rootfs: Path) -> None:
        with tarfile.open(layer) as tar:
            for name in tar.getnames():
                path = Path(name.removeprefix("./"))
                if path.name == OPAQUE:
                    target = rootfs / path.parent
                    for child in target.iterdir() if target.is_dir() else ():
                        _remove(child)
                elif path.name.startswith(WHITEOUT):
                    _remove(rootfs / path.parent / path.name.removeprefix(WHITEOUT))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass
class Bind:
    source: Path
    destination: str
    read_only: bool = True


@dataclass
class RuncProcess:
    """A process in an unpacked image, run by runc as the image (and the pods) would run it:
    the image's entrypoint, user, Env and WorkingDir; a read-only root, /tmp as tmpfs, every
    capability dropped, no new privileges. It shares the host's network namespace, so a server
    in it is reached on 127.0.0.1."""

    image: OciArchive
    rootfs: Path
    workdir: Path
    args: list[str] | None = None  # after the entrypoint; None: the image's Cmd
    env: dict[str, str] = field(default_factory=dict)
    binds: list[Bind] = field(default_factory=list)
    user: str | None = None  # "uid:gid"; None: the image's User
    name: str = field(default_factory=lambda: f"llmctl-test-{uuid.uuid4().hex[:12]}")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def state_dir(self) -> Path:
        return self.workdir / "runc-state"

    def _spec(self) -> dict[str, Any]:
        config = self.image.config
        argv = [
            *config.get("Entrypoint", []),
            *(self.args if self.args is not None else config.get("Cmd", [])),
        ]
        uid, gid = (self.user or config.get("User") or "0:0").split(":")
        env = {**self.image.env(), **self.env}
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
        ]
        for bind in self.binds:
            options = ["rbind", "ro" if bind.read_only else "rw"]
            mounts.append(
                {
                    "destination": bind.destination,
                    "type": "bind",
                    "source": str(bind.source),
                    "options": options,
                }
            )
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": int(uid), "gid": int(gid)},
                "args": argv,
                "env": [f"{key}={value}" for key, value in env.items()],
                "cwd": config.get("WorkingDir") or "/",
                "capabilities": {
                    key: []
                    for key in ("bounding", "effective", "permitted", "inheritable", "ambient")
                },
                "noNewPrivileges": True,
            },
            "root": {"path": str(self.rootfs), "readonly": True},
            "hostname": "image-test",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
            },
        }

    def _bundle(self) -> Path:
        bundle = self.workdir / self.name
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(self._spec(), indent=1))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return bundle

    def _command(self) -> list[str]:
        runc = shutil.which("runc")
        assert runc, "runc is missing: apt-get install runc (scripts/test.sh installs it)"
        return [
            runc,
            "--root",
            str(self.state_dir),
            "run",
            "--bundle",
            str(self._bundle()),
            self.name,
        ]

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs to completion; stdout and stderr as text."""
        return subprocess.run(self._command(), capture_output=True, text=True, timeout=timeout)

    def start(self, log: Path) -> RuncProcess:
        """Starts in the background, output to `log`."""
        with log.open("ab") as out:
            self.proc = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT)
        return self

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to the container's init (as the kubelet sends it), then its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            subprocess.run(
                ["runc", "--root", str(self.state_dir), "kill", self.name, "TERM"],
                capture_output=True,
                timeout=30,
            )
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                subprocess.run(
                    ["runc", "--root", str(self.state_dir), "kill", self.name, "KILL"],
                    capture_output=True,
                    timeout=30,
                )
                self.proc.wait(timeout=30)
        subprocess.run(
            ["runc", "--root", str(self.state_dir), "delete", "--force", self.name],
            capture_output=True,
            timeout=30,
        )
        return self.proc.returncode


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def in_rootfs(rootfs: Path, path: str) -> Path:
    """`path` as the image sees it (absolute symlinks resolved inside `rootfs`)."""
    current = rootfs
    for part in Path(path).relative_to("/").parts:
        current = current / part
        hops = 0
        while current.is_symlink():
            hops += 1
            assert hops < 40, f"symlink loop at {current}"
            target = os.readlink(current)
            current = (
                rootfs / target.lstrip("/") if target.startswith("/") else current.parent / target
            )
    return current
