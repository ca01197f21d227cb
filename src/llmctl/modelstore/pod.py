"""What the llama pod's init container runs (`llmctl model fetch`): the model to local disk,
its digest checked, each stage logged and written as metrics. Standard library only.

The digest comes from, in order: MODEL_SHA256 (rendered from the config or the catalog's pin),
else the `.sha256` object beside a model in a store (written by `llmctl model push`). A model
with neither is fetched unchecked, and the log line says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmctl.modelstore import access, fetch, locations, stages
from llmctl.modelstore.fetch import FetchError, FetchSettings, Log

# Kubernetes shows this file's text as the container's termination message
# (`kubectl describe pod`, and `lastState.terminated.message` in the pod's status).
TERMINATION_LOG = Path("/dev/termination-log")


@dataclass(frozen=True)
class PodFetch:
    uri: str
    path: Path
    sha256: str | None
    metrics_file: Path | None
    settings: FetchSettings


@dataclass(frozen=True)
class PodFetchOutcome:
    fetched: bool  # False: the file was already there (a restarted init container)
    stages: list[stages.Stage]


def expected_digest(request: PodFetch, env: Mapping[str, str], log: Log) -> tuple[str | None, str]:
    """The digest to check, and where it came from."""
    if request.sha256:
        return request.sha256.lower(), "pinned"
    if locations.is_store_uri(request.uri):
        sidecar = locations.parse_store_uri(request.uri).sha256_location()
        source = access.object_source(sidecar.uri, env)
        text = fetch.read_small_object(source, request.settings)
        try:
            return locations.parse_sha256_line(text), sidecar.uri
        except locations.LocationError as exc:
            raise FetchError(
                f"{sidecar.uri} holds no sha256 ({exc}): push the model again"
            ) from None
    log(f"warning: no sha256 for {request.uri}: the download is not checked")
    return None, "none"


def run(request: PodFetch, env: Mapping[str, str], log: Log = print) -> PodFetchOutcome:
    """Fetch and check the model; raises FetchError or access.AccessError with one clear line."""
    done: list[stages.Stage] = []
    # Since the node booted means something only in a pod (on a node the autoscaler started).
    boot = stages.seconds_since_boot() if env.get("KUBERNETES_SERVICE_HOST") else -1.0
    if boot >= 0:
        done.append(stages.Stage("image_start", boot, {"since": "node_boot"}))
        log(stages.stage_line(done[-1]))
    labels = {"model": request.path.name}
    if request.path.is_file() and request.path.stat().st_size > 0:
        log(f"model present: {request.path}")
        return PodFetchOutcome(fetched=False, stages=done)
    started = time.monotonic()
    digest, digest_source = expected_digest(request, env, log)
    source = access.object_source(request.uri, env)
    log(f"fetching {source.label} to {request.path} ({request.settings.connections} connections)")
    result = fetch.fetch_to_file(source, request.path, digest, request.settings, log)
    seconds = time.monotonic() - started
    done.append(
        stages.Stage(
            "fetch",
            seconds,
            {
                "bytes": result.bytes,
                "mb_per_s": round(result.bytes / 1e6 / seconds, 1) if seconds > 0 else 0.0,
                "connections": result.connections,
                "store": result.store,
                "sha256": "verified" if digest else "unchecked",
                "sha256_from": digest_source,
                "source": source.label,
            },
        )
    )
    log(stages.stage_line(done[-1]))
    if request.metrics_file is not None:
        stages.write_metrics(request.metrics_file, done, labels | {"store": result.store})
    return PodFetchOutcome(fetched=True, stages=done)


def write_termination_message(message: str, path: Path = TERMINATION_LOG) -> None:
    """Best effort: outside a pod there is no termination log, and that is fine."""
    try:
        with path.open("w", encoding="utf-8") as out:
            out.write(message[:4000] + "\n")
    except OSError:
        pass
