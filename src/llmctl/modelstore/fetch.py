"""The pod's model fetcher: parallel ranged GETs straight to local disk, the sha256 checked.

It is what the clouds' own fast-copy tools do for one large object (s5cmd, `gcloud storage`'s
sliced downloads, AzCopy): split it into fixed ranges (AWS suggests 8-16 MB, one connection per
85-90 MB/s wanted) and GET them on several connections at once, each written at its offset in a
preallocated file. The sha256 is computed while the download runs, over the finished prefix of
the file (read back from the page cache), so the check costs almost nothing at the end. Only a
complete file with the right digest is renamed into place; anything else is deleted and the
error says why. Standard library only: it runs in the router image.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmctl.modelstore.access import ObjectSource

MIB = 1024 * 1024
DEFAULT_CONNECTIONS = 16
DEFAULT_CHUNK_BYTES = 16 * MIB
CONNECT_TIMEOUT_SECONDS = 10.0
# A read that brings no byte for this long is a stalled transfer: the connection is dropped and
# the rest of its range asked for again.
STALL_TIMEOUT_SECONDS = 30.0
RETRIES = 5
READ_BYTES = MIB
MAX_REDIRECTS = 5

Log = Callable[[str], None]


class FetchError(RuntimeError):
    """The model could not be fetched; the message says what failed and where."""


class IntegrityError(FetchError):
    """The fetched bytes are not the model that was pinned: its sha256 differs."""


@dataclass(frozen=True)
class FetchSettings:
    connections: int = DEFAULT_CONNECTIONS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    stall_timeout: float = STALL_TIMEOUT_SECONDS
    retries: int = RETRIES


@dataclass(frozen=True)
class FetchResult:
    bytes: int
    seconds: float
    sha256: str
    connections: int
    store: str

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _Connection:
    """One keep-alive HTTP connection, reopened after an error."""

    def __init__(self, url: str, settings: FetchSettings) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.settings = settings
        self.conn: http.client.HTTPConnection | None = None

    def request(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.settings.connect_timeout)
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.settings.stall_timeout)
            self.conn = conn
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.request("GET", target, headers=headers)
        return self.conn.getresponse()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _http_error(response: http.client.HTTPResponse, label: str) -> FetchError:
    # The stores explain refusals in XML or JSON; anything else (a 200 body) is not shown.
    kind = response.getheader("Content-Type") or ""
    readable = kind.startswith(("text/", "application/xml", "application/json"))
    body = response.read(600).decode("utf-8", "replace").strip().replace("\n", " ")
    body = body if readable else ""
    hints = {
        401: "the pod's credentials were refused: check its workload identity",
        403: "the pod's identity may not read this object: grant it read access",
        404: "no such object: push the model first (llmctl model push) or fix the URI",
    }
    hint = hints.get(response.status, "")
    return FetchError(
        f"GET {label} answered HTTP {response.status} {response.reason}"
        + (f": {hint}" if hint else "")
        + (f" ({body[:300]})" if body else "")
    )


@dataclass(frozen=True)
class _Probe:
    url: str  # after redirects
    size: int
    ranges: bool  # whether the server answered the range with 206


def probe(source: ObjectSource, settings: FetchSettings) -> _Probe:
    """The object's size and final URL, from a one-byte ranged GET (every store signs a GET;
    not every one signs a HEAD the same way), following the Hub's redirects to its CDN."""
    url = source.url
    for _ in range(MAX_REDIRECTS + 1):
        connection = _Connection(url, settings)
        try:
            response = connection.request(url, source.headers("GET", url, (0, 0)))
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                response.read()
                if not location:
                    raise FetchError(f"GET {source.label} redirected without a Location")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status == 206:
                content_range = response.getheader("Content-Range") or ""
                response.read()
                total = content_range.rpartition("/")[2]
                if not total.isdigit():
                    raise FetchError(
                        f"GET {source.label} answered 206 without the object's size "
                        f"(Content-Range: {content_range!r})"
                    )
                return _Probe(url=url, size=int(total), ranges=True)
            if response.status == 200:
                length = response.getheader("Content-Length") or ""
                response.close()
                if not length.isdigit():
                    raise FetchError(f"GET {source.label} gave neither ranges nor a length")
                return _Probe(url=url, size=int(length), ranges=False)
            if response.status == 416:
                raise FetchError(f"{source.label} is empty: push the model again")
            raise _http_error(response, source.label)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"cannot reach {source.label}: {exc}") from None
        finally:
            connection.close()
    raise FetchError(f"GET {source.label} redirected more than {MAX_REDIRECTS} times")


class _Download:
    """Shared state of one parallel download: which chunks are written, the first error."""

    def __init__(self, size: int, chunk_bytes: int) -> None:
        self.size = size
        self.chunk_bytes = chunk_bytes
        self.count = max(1, -(-size // chunk_bytes))
        self.done = [False] * self.count
        self.written = 0
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(self.count):
            self.todo.put(index)

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_bytes
        return start, min(self.size, start + self.chunk_bytes) - 1

    def finish(self, index: int) -> None:
        with self.cond:
            self.done[index] = True
            self.cond.notify_all()

    def add(self, n: int) -> None:
        with self.cond:
            self.written += n

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()


def _write(fd: int, data: memoryview, position: int) -> None:
    """A disk error is not a network error: it fails the fetch at once, never retried."""
    try:
        os.pwrite(fd, data, position)
    except OSError as exc:
        raise FetchError(f"writing the model to local disk failed: {exc.strerror or exc}") from None


def _fetch_range(
    connection: _Connection,
    source: ObjectSource,
    url: str,
    fd: int,
    start: int,
    end: int,
    state: _Download,
    settings: FetchSettings,
) -> None:
    """Write bytes start..end (inclusive) at their offsets; on a dropped or stalled connection,
    reconnect and ask for what is still missing, up to `settings.retries` times."""
    position = start
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    failures = 0
    while position <= end:
        if state.error is not None:
            return
        try:
            response = connection.request(url, source.headers("GET", url, (position, end)))
            # A server without ranges sends the whole object: right only for the whole object.
            whole = response.status == 200 and position == 0 and end == state.size - 1
            if response.status != 206 and not whole:
                error = _http_error(response, source.label)
                connection.close()
                if response.status < 500 and response.status != 429:
                    raise error
                raise ConnectionError(str(error))
            while position <= end:
                n = response.readinto(view[: min(READ_BYTES, end - position + 1)])
                if n == 0:
                    raise ConnectionError("the connection closed before the range was complete")
                _write(fd, view[:n], position)
                position += n
                state.add(n)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            failures += 1
            if failures > settings.retries:
                raise FetchError(
                    f"bytes {position}-{end} of {source.label} failed {failures} times, last: "
                    f"{exc or type(exc).__name__}"
                ) from None
            time.sleep(min(8.0, 0.5 * 2**failures))


def _worker(
    source: ObjectSource, url: str, fd: int, state: _Download, settings: FetchSettings
) -> None:
    connection = _Connection(url, settings)
    try:
        while state.error is None:
            try:
                index = state.todo.get_nowait()
            except queue.Empty:
                return
            start, end = state.bounds(index)
            _fetch_range(connection, source, url, fd, start, end, state, settings)
            state.finish(index)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
        state.fail(exc)
    finally:
        connection.close()


def _hash_in_order(fd: int, state: _Download, log: Log, label: str) -> str:
    """sha256 over the file's finished prefix, chunk by chunk, as the workers complete them."""
    digest = hashlib.sha256()
    last_report = time.monotonic()
    for index in range(state.count):
        with state.cond:
            while not state.done[index] and state.error is None:
                state.cond.wait(timeout=5.0)
                if time.monotonic() - last_report >= 10.0:
                    last_report = time.monotonic()
                    log(f"fetching {label}: {state.written / 1e6:.0f} of {state.size / 1e6:.0f} MB")
            if state.error is not None:
                break
        start, end = state.bounds(index)
        position = start
        while position <= end:
            piece = os.pread(fd, min(4 * MIB, end - position + 1), position)
            if not piece:
                raise FetchError(f"the partial file ended at byte {position} while hashing")
            digest.update(piece)
            position += len(piece)
    return digest.hexdigest()


def fetch_to_file(
    source: ObjectSource,
    dest: Path,
    expected_sha256: str | None,
    settings: FetchSettings | None = None,
    log: Log = print,
) -> FetchResult:
    """Fetch the object to `dest`. Raises FetchError (IntegrityError for a wrong digest) and
    leaves no file behind on any failure."""
    settings = settings or FetchSettings()
    started = time.monotonic()
    found = probe(source, settings)
    part = dest.with_name(dest.name + ".part")
    connections = settings.connections if found.ranges else 1
    chunk_bytes = settings.chunk_bytes if found.ranges else max(1, found.size)
    state = _Download(found.size, chunk_bytes)
    connections = max(1, min(connections, state.count))
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise FetchError(f"cannot write {part}: {exc.strerror or exc}") from None
    ok = False
    try:
        try:
            if found.size:
                os.posix_fallocate(fd, 0, found.size)
        except OSError as exc:
            raise FetchError(
                f"no room for {found.size / 1e9:.2f} GB at {part}: {exc.strerror or exc}"
            ) from None
        workers = [
            threading.Thread(
                target=_worker,
                args=(source, found.url, fd, state, settings),
                name=f"fetch-{n}",
                daemon=True,
            )
            for n in range(connections)
        ]
        for worker in workers:
            worker.start()
        digest = _hash_in_order(fd, state, log, source.label)
        for worker in workers:
            worker.join()
        if state.error is not None:
            if isinstance(state.error, FetchError):
                raise state.error
            raise FetchError(f"fetching {source.label} failed: {state.error!r}")
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise IntegrityError(
                f"sha256 mismatch for {source.label}: expected {expected_sha256.lower()}, got "
                f"{digest}; the copy is corrupt or not the pinned file, so it was deleted and "
                "llama-server will not start on it (push the model again: llmctl model push)"
            )
        os.fsync(fd)
        os.replace(part, dest)
        ok = True
    finally:
        os.close(fd)
        if not ok:
            part.unlink(missing_ok=True)
    return FetchResult(
        bytes=found.size,
        seconds=time.monotonic() - started,
        sha256=digest,
        connections=connections,
        store=source.store,
    )


def read_small_object(source: ObjectSource, settings: FetchSettings, limit: int = 4096) -> str:
    """A small object's text (the `.sha256` beside a model), or FetchError."""
    url = source.url
    connection = _Connection(url, settings)
    try:
        response = connection.request(url, source.headers("GET", url, None))
        if response.status != 200:
            raise _http_error(response, source.label)
        return response.read(limit).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"cannot reach {source.label}: {exc}") from None
    finally:
        connection.close()
