"""`llmctl model push`: one GGUF copied into an object store in the cluster's region, its sha256
written beside it.

Idempotent: a copy whose `.sha256` object and size match is left alone (and a catalog model is
not even downloaded for that). A different file at the same name is refused unless `replace`
says so, so a push never overwrites what it did not mean to. The model goes up first and its
`.sha256` last: a push cut half-way never looks complete to the pods, which refuse a model
whose digest does not match.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llmctl.errors import ConfigError, LlmctlError
from llmctl.modelstore import access, fetch, locations
from llmctl.modelstore.locations import StoreLocation
from llmctl.modelstore.stores import Store, open_store

HASH_READ_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PushRequest:
    location: StoreLocation
    region: str
    project: str | None = None
    file: Path | None = None  # a local GGUF; None: download `hub_uri` first
    hub_uri: str | None = None
    sha256: str | None = None  # the pinned digest the file must have (catalog models)
    size: int | None = None  # the expected size, when known without the file
    create_bucket: bool = False
    replace: bool = False
    dry_run: bool = False


@dataclass
class PushResult:
    location: StoreLocation
    sha256: str | None
    bytes: int | None
    # What was done, or for a dry run what would be done, in order, one short sentence each.
    actions: list[str] = field(default_factory=list)
    changed: bool = False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(HASH_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _existing(store: Store, location: StoreLocation) -> tuple[str | None, int | None]:
    """The digest kept beside the object and the object's size, each None when absent."""
    size = store.object_size(location.key)
    text = store.read_text(location.sha256_location().key)
    if text is None:
        return None, size
    try:
        return locations.parse_sha256_line(text), size
    except locations.LocationError:
        return None, size


def push_model(
    request: PushRequest,
    env: Mapping[str, str] | None = None,
    open_: Callable[[StoreLocation, str, str | None], Store] | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> PushResult:
    env = os.environ if env is None else env
    location = request.location
    store = (open_ or (lambda loc, region, project: open_store(loc, region, project, env)))(
        location, request.region, request.project
    )
    result = PushResult(location=location, sha256=request.sha256, bytes=request.size)
    kind = "container" if location.scheme == "azure" else "bucket"
    if not store.bucket_exists():
        if not request.create_bucket:
            raise ConfigError(
                f"the {kind} {location.bucket} does not exist",
                hint=f"pass --create-bucket to create it in {request.region}, or name another",
            )
        result.actions.append(f"create the {kind} {location.bucket} in {request.region}")
        if not request.dry_run:
            store.create_bucket()
        result.changed = True
        existing_digest, existing_size = None, None
    else:
        existing_digest, existing_size = _existing(store, location)

    # A catalog model's pinned digest and size say whether the copy is current without
    # downloading anything.
    if request.file is None and request.sha256 is not None:
        if existing_digest == request.sha256 and existing_size == request.size:
            result.actions.append(f"keep {location.uri}: already there, sha256 matches")
            return result

    with tempfile.TemporaryDirectory(prefix="llmctl-push-") as scratch:
        path = request.file
        if path is None:
            if request.hub_uri is None:
                raise ConfigError("nothing to push: give a model name or --file")
            result.actions.append(f"download {request.hub_uri}")
            if request.dry_run:
                result.actions.append(f"upload it to {location.uri}, then its .sha256")
                result.changed = True
                return result
            path = Path(scratch) / location.filename
            log(f"downloading {request.hub_uri}")
            try:
                fetched = fetch.fetch_to_file(
                    access.object_source(request.hub_uri, env), path, request.sha256, log=log
                )
            except (fetch.FetchError, access.AccessError) as exc:
                raise LlmctlError(str(exc), hint="check the network and HF_TOKEN") from None
            digest, size = fetched.sha256, fetched.bytes
        else:
            if not path.is_file():
                raise ConfigError(f"{path} is not a file", hint="give the GGUF's path to --file")
            log(f"hashing {path}")
            digest, size = file_sha256(path), path.stat().st_size
            if request.sha256 is not None and digest != request.sha256:
                raise LlmctlError(
                    f"{path} has sha256 {digest}, not the catalog's pinned {request.sha256}",
                    hint="push the catalog's file, or push this one as a custom model (--name)",
                )
        result.sha256, result.bytes = digest, size
        if existing_digest == digest and existing_size == size:
            result.actions.append(f"keep {location.uri}: already there, sha256 matches")
            return result
        if existing_size is not None and not request.replace:
            raise LlmctlError(
                f"{location.uri} already holds a different file"
                + (
                    f" (sha256 {existing_digest})" if existing_digest else " (no .sha256 beside it)"
                ),
                hint="pass --replace to overwrite it, or push under another --name",
            )
        verb = "replace" if existing_size is not None else "upload"
        result.actions.append(f"{verb} {location.uri} ({size / 1e9:.2f} GB), then its .sha256")
        result.changed = True
        if request.dry_run:
            return result
        log(f"uploading {path} to {location.uri}")
        store.upload_file(path, location.key)
        store.put_text(
            location.sha256_location().key, locations.sha256_line(digest, location.filename)
        )
    return result
