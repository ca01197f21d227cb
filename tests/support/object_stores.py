"""The three real object stores on loopback, for the model cache (issue 30).

- S3: moto's server (`moto_server`), with its IAM authentication switched on after set-up, so
  every request after that must carry a valid Signature Version 4 from a known identity.
- GCS: fake-gcs-server, built from its Go module by scripts/install-object-stores.sh.
- Azure Blob: Azurite, from npm (same script); it checks Shared Key signatures itself.

Each is a context manager that starts the process on a free port, waits until it answers, and
stops exactly the process it started. `push_env` is what `llmctl model push` (the SDKs) needs;
`fetch_env` what the pod's fetcher needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.llama import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60.0
REGION = "eu-west-1"
# Azurite's documented development account (its README; the same in every copy of Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def installed_stores() -> dict[str, str]:
    """FAKE_GCS_SERVER_BIN and AZURITE_BLOB_BIN from the environment, or the cached paths from
    the install script's --cached mode, which installs nothing (a test never builds): when they
    are missing, the test fails with the command that installs them."""
    keys = ("FAKE_GCS_SERVER_BIN", "AZURITE_BLOB_BIN")
    if all(os.environ.get(k) for k in keys):
        return {k: os.environ[k] for k in keys}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-object-stores.sh"), "--cached"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(done.stderr.strip() or f"install-object-stores.sh --cached: {done.returncode}")
    found = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
    for key in keys:
        if not os.access(found.get(key, ""), os.X_OK):
            pytest.fail(f"{key} is not built: run bash scripts/install-object-stores.sh")
    return found


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers, even if with an error for this path
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {STARTUP_SECONDS:.0f} s:\n{log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serving(argv: list[str], log: Path, ready_url: str) -> Iterator[None]:
    """Run `argv` (output to `log`) until the block ends, from the moment `ready_url` answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(ready_url, process, log)
        yield
    finally:
        _stop(process)


@dataclass
class StoreServer:
    scheme: str  # s3, gs, azure
    url: str
    push_env: dict[str, str]
    fetch_env: dict[str, str]
    account: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@contextmanager
def moto_s3(tmp: Path) -> Iterator[StoreServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with serving(argv, tmp / "moto.log", f"{url}/moto-api/"):
        base = {
            "AWS_ENDPOINT_URL": url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        yield StoreServer("s3", url, push_env=dict(base), fetch_env=dict(base))


def moto_require_auth(url: str) -> None:
    """From now on moto checks every request's signature and the caller's IAM policy."""
    # moto reads the count from a text/plain body (a form body makes it fail with 500).
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=b"0",
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


@contextmanager
def fake_gcs(tmp: Path, binary: str) -> Iterator[StoreServer]:
    port = free_port()
    root = tmp / "gcs-data"
    root.mkdir()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-public-host", f"127.0.0.1:{port}",
        "-external-url", url,
        "-backend", "filesystem",
        "-filesystem-root", str(root),
        "-log-level", "warn",
    ]  # fmt: skip
    with serving(argv, tmp / "fake-gcs.log", f"{url}/storage/v1/b"):
        env = {"STORAGE_EMULATOR_HOST": url, "GOOGLE_CLOUD_PROJECT": "llmctl-test"}
        yield StoreServer("gs", url, push_env=dict(env), fetch_env=dict(env))


@contextmanager
def azurite(tmp: Path, binary: str) -> Iterator[StoreServer]:
    port = free_port()
    data = tmp / "azurite-data"
    data.mkdir()
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    argv = [
        binary,
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--location", str(data),
        "--skipApiVersionCheck",
        "--silent",
    ]  # fmt: skip
    with serving(argv, tmp / "azurite.log", f"{url}?comp=list"):
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={url};"
        )
        yield StoreServer(
            "azure",
            url,
            push_env={"AZURE_STORAGE_CONNECTION_STRING": connection},
            fetch_env={"AZURE_STORAGE_BLOB_ENDPOINT": url, "AZURE_STORAGE_KEY": AZURITE_KEY},
            account=AZURITE_ACCOUNT,
        )
