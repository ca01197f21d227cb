"""The pod's parallel fetcher against one plain single-stream GET, from each local object store,
under a per-connection bandwidth cap that mirrors a cloud store's (issue 30).

A 1 GiB file is pushed (with llmctl's own push) into S3 (gofakes3), GCS (fake-gcs-server) and
Azure Blob (Azurite), each behind a small TCP proxy that paces every connection to the same
rate. Then, store by store and round by round, the same object is fetched twice to local disk,
sha256 included in both: once by `llmctl.modelstore.fetch` (16 connections, 16 MiB ranges, as
the pods run it) and once by a plain single-stream GET. Printed: median seconds and MB/s of
each, and the ratio.

Why a per-connection cap: a cloud store serves each connection at a bounded rate, and a client
gets more by opening more connections. AWS's guidance is "one concurrent request for each
85-90 MB/s of desired network throughput ... at the granularity of 8-16 MB" (Best Practices
Design Patterns: Optimizing Amazon S3 Performance, "Horizontal Scaling and Request
Parallelization for High Throughput"). Loopback has no such bound, so without a cap a single
stream is as fast as the disk. The default cap is an eighth of AWS's figure (11 MB/s): this
2-core machine, shared, carried only 70-100 MB/s in all through the pacing proxy, the stores and
the fetcher (at a 22 MB/s cap: 3.2x, 3.2x and 5.0x, the parallel side saturating the machine),
far from 16 x 88 MB/s; the ratio (what the fetcher buys) holds at any cap the machine can carry
16 times over.

    python benchmarks/model_fetch.py [--size-mib 1024] [--per-connection-mbps 11]
        [--connections 16] [--rounds 1] [--stores s3,gs,azure]

Needs: scripts/install-object-stores.sh (fake-gcs-server, Azurite, gofakes3). Everything
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.support.llama import free_port  # noqa: E402
from tests.support.object_stores import (  # noqa: E402
    REGION,
    StoreServer,
    _stop,
    azurite,
    fake_gcs,
    serving,
)

from llmctl.modelstore import access, fetch  # noqa: E402
from llmctl.modelstore.locations import StoreLocation, model_location  # noqa: E402
from llmctl.modelstore.push import PushRequest, push_model  # noqa: E402
from llmctl.modelstore.stores import GcsStore, S3Store, Store, open_store  # noqa: E402

MIB = 1024 * 1024
BUCKET = "llmctl-bench"
S3_DOC = (
    "AWS: one concurrent request per 85-90 MB/s, 8-16 MB ranges (S3 performance whitepaper, "
    "'Horizontal Scaling and Request Parallelization for High Throughput')"
)


# --- the per-connection pacing proxy (its own process) -------------------------------------


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float | None
) -> None:
    started, sent = time.monotonic(), 0
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
            if rate:
                sent += len(data)
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _proxy(listen: int, target: int, rate: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        # Requests go up unpaced; each connection's download is paced to `rate` bytes/s.
        await asyncio.gather(_pipe(client_r, server_w, None), _pipe(server_r, client_w, rate))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def pacing_proxy(target_port: int, rate_bytes: float) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--proxy", str(port), str(target_port), str(rate_bytes)]
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            time.sleep(0.05)
        yield port
    finally:
        _stop(process)


# --- S3: gofakes3 (moto's server copies the whole object for every ranged GET) --------------


@contextlib.contextmanager
def gofakes3(tmp: Path, binary: str) -> Iterator[StoreServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary, "-host", f"127.0.0.1:{port}", "-backend", "memory", "-autobucket"]
    with serving(argv, tmp / "gofakes3.log", url):
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        yield StoreServer("s3", url, push_env=dict(env), fetch_env=dict(env))


def installed() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-object-stores.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


# --- the two ways to fetch -----------------------------------------------------------------


def single_stream(source: access.ObjectSource, dest: Path) -> tuple[float, str]:
    """One plain GET of the whole object, written to disk as it comes, hashed as it comes."""
    started = time.monotonic()
    digest = hashlib.sha256()
    request = urllib.request.Request(source.url, headers=source.headers("GET", source.url, None))
    with urllib.request.urlopen(request, timeout=60) as response, dest.open("wb") as out:
        while block := response.read(MIB):
            out.write(block)
            digest.update(block)
        out.flush()
        os.fsync(out.fileno())
    return time.monotonic() - started, digest.hexdigest()


def parallel(
    source: access.ObjectSource, dest: Path, digest: str, settings: fetch.FetchSettings
) -> float:
    started = time.monotonic()
    fetch.fetch_to_file(source, dest, digest, settings, log=lambda _line: None)
    return time.monotonic() - started


def with_endpoint(server: StoreServer, proxy_port: int) -> dict[str, str]:
    """The fetch environment with the store's address swapped for its pacing proxy's."""
    proxied = f"http://127.0.0.1:{proxy_port}"
    env = dict(server.fetch_env)
    for key in ("AWS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST"):
        if key in env:
            env[key] = proxied
    if "AZURE_STORAGE_BLOB_ENDPOINT" in env:
        env["AZURE_STORAGE_BLOB_ENDPOINT"] = f"{proxied}/{server.account}"
    return env


def store_port(server: StoreServer) -> int:
    return int(server.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def bench_store(
    server: StoreServer,
    model: Path,
    digest: str,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, float]:
    account = server.account
    location = model_location(server.scheme, BUCKET, "bench", model.name, account=account)
    saved = {k: os.environ.get(k) for k in server.push_env}
    os.environ.update(server.push_env)

    def open_(loc: StoreLocation, region: str, project: str | None) -> Store:
        store = open_store(loc, region, project, os.environ)
        if isinstance(store, S3Store):
            # gofakes3 loses multipart uploads (NoSuchUpload on complete): one PUT instead.
            from boto3.s3.transfer import TransferConfig

            store.transfer = TransferConfig(multipart_threshold=5 * 1024**3)
        if isinstance(store, GcsStore):
            # fake-gcs-server hangs on a resumable upload of many chunks: one chunk instead.
            store.chunk_bytes = 2 * 1024**3
        return store

    try:
        push_model(
            PushRequest(
                location=location, region=REGION, project="llmctl-bench", file=model,
                create_bucket=True,
            ),
            env=os.environ,
            open_=open_,
        )  # fmt: skip
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    rate = args.per_connection_mbps * 1e6
    settings = fetch.FetchSettings(connections=args.connections, chunk_bytes=args.chunk_mib * MIB)
    singles: list[float] = []
    parallels: list[float] = []
    with pacing_proxy(store_port(server), rate) as proxy:
        source = access.object_source(location.uri, with_endpoint(server, proxy))
        dest = work / "fetched.gguf"
        for _ in range(args.rounds):
            seconds, got = single_stream(source, dest)
            if got != digest:
                raise SystemExit(f"{server.scheme}: the single-stream GET's sha256 differs")
            singles.append(seconds)
            dest.unlink()
            parallels.append(parallel(source, dest, digest, settings))
            dest.unlink()
    size = model.stat().st_size
    single, par = statistics.median(singles), statistics.median(parallels)
    return {
        "single_s": single,
        "single_mbps": size / 1e6 / single,
        "parallel_s": par,
        "parallel_mbps": size / 1e6 / par,
        "ratio": single / par,
    }


def make_model(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 64 * MIB))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--per-connection-mbps", type=float, default=11.0)
    parser.add_argument("--connections", type=int, default=fetch.DEFAULT_CONNECTIONS)
    parser.add_argument("--chunk-mib", type=int, default=fetch.DEFAULT_CHUNK_BYTES // MIB)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stores", default="s3,gs,azure")
    parser.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        listen, target, rate = args.proxy
        asyncio.run(_proxy(int(listen), int(target), float(rate)))
        return
    tools = installed()
    stores = args.stores.split(",")
    with tempfile.TemporaryDirectory(prefix="llmctl-fetch-bench-") as scratch:
        work = Path(scratch)
        model = work / "bench.gguf"
        digest = make_model(model, args.size_mib * MIB)
        results: dict[str, dict[str, float]] = {}
        for scheme in stores:
            tmp = work / scheme
            tmp.mkdir()
            starters = {
                "s3": lambda t=tmp: gofakes3(t, tools["GOFAKES3_BIN"]),
                "gs": lambda t=tmp: fake_gcs(t, tools["FAKE_GCS_SERVER_BIN"]),
                "azure": lambda t=tmp: azurite(t, tools["AZURITE_BLOB_BIN"]),
            }
            with starters[scheme]() as server:
                results[scheme] = bench_store(server, model, digest, args, tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{args.size_mib} MiB object, cap {args.per_connection_mbps:g} MB/s per connection "
        f"({S3_DOC}); parallel: {args.connections} connections x {args.chunk_mib} MiB ranges; "
        f"median of {args.rounds} round(s); both write to disk and check the sha256"
    )
    print(f"{'store':8} {'single s':>9} {'MB/s':>7} {'parallel s':>11} {'MB/s':>7} {'ratio':>6}")
    for scheme, r in results.items():
        print(
            f"{scheme:8} {r['single_s']:9.1f} {r['single_mbps']:7.1f} {r['parallel_s']:11.1f} "
            f"{r['parallel_mbps']:7.1f} {r['ratio']:5.1f}x"
        )


if __name__ == "__main__":
    main()
