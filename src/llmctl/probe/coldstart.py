"""`llmctl test-inference --cold`: how long a tier takes from zero pods to its first token, stage
by stage, read from the pod's own records.

`measure` is the adapter: it scales the tier's Deployment to 0, waits until its pods are gone,
scales it to 1, waits until the new pod is Ready (stopping early on a pod that cannot start),
asks the caller for a first token, then reads the pod, its events and its server's log.
`stages` is pure: it turns those records into the stages below, each ending at a time the
cluster itself wrote down:

| stage | ends when | recorded by |
| --- | --- | --- |
| scheduled | the pod is bound to a node | the scheduler's `Scheduled` event |
| fetcher started | the first init container starts (volume, sandbox, image) | container status |
| model fetched | the last init container ends | container status |
| server started | the server container starts (its image pulled or present) | container status |
| model loaded | llama-server logs `model loaded` | the container runtime's log time |
| ready | the pod's Ready condition turns True (the probes passed) | the kubelet |
| first token | the first streamed token through the router | llmctl, from seeing Ready |

The stages start at the pod's creation; each lasts from the end of the one before. Times in
conditions and container statuses are whole seconds (the API's precision); event and log times
are finer. A stage whose end the pod does not record (no init container, a server that prints
no `model loaded`) is left out and the next one spans it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from llmctl import kube
from llmctl.errors import LlmctlError
from llmctl.probe import client

# llama-server's line once the weights are in memory (tools/server/server.cpp, `main`).
MODEL_LOADED = re.compile(r"\bmodel loaded\b")
# Waiting reasons from which a pod does not recover by itself.
HOPELESS_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)
DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    ended_at: str  # RFC 3339, the cluster's clock (first token: llmctl's)
    source: str
    detail: str = ""


@dataclass
class ColdStart:
    namespace: str
    deployment: str
    pod: str
    node: str | None
    created_at: str
    stages: list[Stage] = field(default_factory=list)
    wall_s: float | None = None  # llmctl's clock, from the scale-up request to the first token

    @property
    def sum_s(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sum_s"] = self.sum_s
        return data


def parse_time(value: str) -> datetime:
    """RFC 3339 with or without a fraction of up to nine digits (Kubernetes writes Time,
    MicroTime and, in logs, RFC3339Nano); Python reads at most six."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    whole, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]
    return datetime.fromisoformat(whole + fraction + ("+00:00" if zone == "Z" else zone))


def _event_time(event: dict[str, Any]) -> str | None:
    found = event.get("eventTime") or event.get("firstTimestamp") or event.get("lastTimestamp")
    return str(found) if found else None


def _events_for(
    events: Iterable[dict[str, Any]], reason: str, field_path: str | None = None
) -> list[dict[str, Any]]:
    chosen = []
    for event in events:
        if event.get("reason") != reason:
            continue
        if (
            field_path is not None
            and (event.get("involvedObject") or {}).get("fieldPath") != field_path
        ):
            continue
        chosen.append(event)
    return chosen


def _pull_detail(events: list[dict[str, Any]], field_path: str) -> str:
    """The kubelet's own words on the container's image: pulled in how long, or present."""
    pulled = _events_for(events, "Pulled", field_path)
    return str(pulled[-1].get("message", "")) if pulled else ""


def _started_at(status: dict[str, Any]) -> str | None:
    """When the container's first run started (a restarted container: its last run's)."""
    state = status.get("state") or {}
    last = status.get("lastState") or {}
    for found in (state.get("running"), state.get("terminated"), last.get("terminated")):
        if found and found.get("startedAt"):
            return str(found["startedAt"])
    return None


def _condition_time(pod: dict[str, Any], kind: str) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            time_ = condition.get("lastTransitionTime")
            return str(time_) if time_ else None
    return None


def loaded_at(log: str) -> str | None:
    """The timestamp of the first `model loaded` line of a log read with timestamps."""
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        if MODEL_LOADED.search(text):
            return stamp
    return None


def stages(
    pod: dict[str, Any],
    events: list[dict[str, Any]],
    server_log: str,
    first_token_s: float | None,
    first_token_at: str | None = None,
) -> list[Stage]:
    """The stages of one pod's start (module docstring), from its records. `server_log` is the
    first container's log with timestamps; `first_token_s` is how long after the pod was seen
    Ready the first token came."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    created = str((pod.get("metadata") or {}).get("creationTimestamp"))
    # Native sidecars (restartPolicy Always, such as the stage watcher) run on beside the
    # server: only the init containers that finish mark the fetch.
    inits = [
        c["name"] for c in spec.get("initContainers") or [] if c.get("restartPolicy") != "Always"
    ]
    server = spec["containers"][0]["name"]
    init_status = {s["name"]: s for s in status.get("initContainerStatuses") or []}
    server_status: dict[str, Any] = next(
        (s for s in status.get("containerStatuses") or [] if s.get("name") == server), {}
    )

    ends: list[tuple[str, str | None, str, str]] = []  # name, time, source, detail
    scheduled = _events_for(events, "Scheduled")
    node = spec.get("nodeName")
    if scheduled and _event_time(scheduled[-1]):
        ends.append(("scheduled", _event_time(scheduled[-1]), "event Scheduled", f"node {node}"))
    else:
        ends.append(
            ("scheduled", _condition_time(pod, "PodScheduled"), "condition PodScheduled", "")
        )
    if inits:
        first, last = inits[0], inits[-1]
        ends.append(
            (
                "fetcher started",
                _started_at(init_status.get(first, {})),
                f"init container {first} started",
                _pull_detail(events, f"spec.initContainers{{{first}}}"),
            )
        )
        finished = ((init_status.get(last, {}).get("state") or {}).get("terminated") or {}).get(
            "finishedAt"
        )
        ends.append(("model fetched", finished, f"init container {last} finished", ""))
    ends.append(
        (
            "server started",
            _started_at(server_status),
            f"container {server} started",
            _pull_detail(events, f"spec.containers{{{server}}}"),
        )
    )
    ends.append(("model loaded", loaded_at(server_log), f"log of {server}: model loaded", ""))
    ends.append(("ready", _condition_time(pod, "Ready"), "condition Ready", ""))

    result: list[Stage] = []
    previous = parse_time(created)
    for name, at, source, detail in ends:
        if at is None:
            continue
        moment = parse_time(at)
        # Whole-second times can fall before a finer one that precedes them: never negative.
        seconds = max(0.0, (moment - previous).total_seconds())
        result.append(Stage(name, round(seconds, 3), at, source, detail))
        previous = max(previous, moment)
    if first_token_s is not None:
        result.append(
            Stage(
                "first token",
                round(first_token_s, 3),
                first_token_at or "",
                "llmctl: first streamed token through the router, from seeing Ready",
            )
        )
    return result


# --- the adapter: scale, wait, read ------------------------------------------------------------


def selector_of(deployment: dict[str, Any]) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not labels:
        name = deployment["metadata"]["name"]
        raise LlmctlError(f"deployment {name} has no matchLabels selector to find its pods by")
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _ready(pod: dict[str, Any]) -> bool:
    return _condition_time(pod, "Ready") is not None and not (pod.get("metadata") or {}).get(
        "deletionTimestamp"
    )


def stuck(pod: dict[str, Any]) -> str | None:
    """Why the pod cannot start by itself (an image that does not pull, a crashing container,
    a failed init container), or None while it may still."""
    status = pod.get("status") or {}
    for kind in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(kind) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in HOPELESS_WAITING:
                message = waiting.get("message") or ""
                last = ((container.get("lastState") or {}).get("terminated") or {}).get("message")
                said = (last or message).strip()
                return f"container {container['name']}: {waiting['reason']}" + (
                    f": {said}" if said else ""
                )
    if status.get("phase") == "Failed":
        return f"the pod failed: {status.get('reason', '')} {status.get('message', '')}".strip()
    return None


def describe(pod: dict[str, Any]) -> str:
    """One line on where the pod stands, for the spinner."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("reason"):
            return f"{phase}: {condition['type']} {condition['reason']}"
    for kind in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(kind) or []:
            state = container.get("state") or {}
            if "running" in state and not container.get("ready"):
                return f"{phase}: {container['name']} running"
            waiting = state.get("waiting")
            if waiting:
                return f"{phase}: {container['name']} {waiting.get('reason', 'waiting')}"
    return phase


def _wait(
    what: str,
    probe: Callable[[], Any],
    deadline: float,
    poll_s: float,
    hint: str,
) -> Any:
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise LlmctlError(f"timed out waiting for {what}", hint=hint)
        time.sleep(poll_s)


def measure(
    api: Any,
    namespace: str,
    name: str,
    first_token: Callable[[], tuple[float, str]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = 0.5,
    on_status: Callable[[str], None] | None = None,
) -> ColdStart:
    """Scale Deployment `name` to 0 and back to 1, and time its pod's start. `first_token`
    sends the first request once the pod is Ready and returns the moment its first token came
    (`time.monotonic()`, and as RFC 3339). Afterwards, or on any error, the Deployment is scaled
    back to the replica count it had."""
    say = on_status or (lambda line: None)
    deployment = kube.read_deployment(api, namespace, name)
    selector = selector_of(deployment)
    before = (deployment.get("spec") or {}).get("replicas")
    deadline = time.monotonic() + timeout_s
    hint = (
        f"kubectl -n {namespace} describe pods -l {selector} says why; raise --cold-timeout "
        "for a GPU node that starts from zero"
    )
    replicas = before
    try:
        say(f"scaling deployment {name} to 0")
        replicas = 0
        kube.scale_deployment(api, namespace, name, 0)
        _wait(
            f"the pods of deployment {name} to go",
            lambda: not kube.list_pods(api, namespace, selector),
            deadline,
            poll_s,
            hint,
        )
        say(f"scaling deployment {name} to 1")
        scaled = time.monotonic()
        replicas = 1
        kube.scale_deployment(api, namespace, name, 1)
        last = ""

        def ready_pod() -> dict[str, Any] | None:
            nonlocal last
            pods = kube.list_pods(api, namespace, selector)
            for pod in pods:
                if _ready(pod):
                    return pod
                why = stuck(pod)
                if why:
                    raise LlmctlError(
                        f"pod {pod['metadata']['name']} of deployment {name} cannot start: {why}",
                        hint=f"kubectl -n {namespace} describe pod {pod['metadata']['name']}",
                    )
            line = describe(pods[0]) if pods else "waiting for the pod"
            if line != last:
                say(f"pod: {line}")
                last = line
            return None

        pod = _wait(f"a Ready pod of deployment {name}", ready_pod, deadline, poll_s, hint)
        seen_ready = time.monotonic()
        say("pod Ready: sending the first request")
        token_at, token_wall = first_token()
        pod_name = str(pod["metadata"]["name"])
        pod = kube.read_pod(api, namespace, pod_name)
        events = kube.pod_events(api, namespace, pod_name)
        server = pod["spec"]["containers"][0]["name"]
        log = kube.pod_log(api, namespace, pod_name, container=server, timestamps=True)
        return ColdStart(
            namespace=namespace,
            deployment=name,
            pod=pod_name,
            node=(pod.get("spec") or {}).get("nodeName"),
            created_at=str(pod["metadata"]["creationTimestamp"]),
            stages=stages(pod, events, log, token_at - seen_ready, token_wall),
            wall_s=round(token_at - scaled, 3),
        )
    finally:
        if before is not None and replicas != before:
            say(f"scaling deployment {name} back to {before}")
            kube.scale_deployment(api, namespace, name, int(before))


# What the router (or the port-forward) answers while it has not yet seen the new pod Ready: the
# request is sent again until `timeout_s`. Any other failure is the answer.
RETRIED_FAILURES = frozenset(
    {"unavailable", "connection_refused", "connection_lost", "connect_error", "gateway_timeout"}
)


def first_answer(
    target: client.Target, timeout_s: float, poll_s: float = 0.5
) -> tuple[client.Result, float]:
    """One streamed request, sent until the router answers it; the result and the moment
    (`time.monotonic()`) of its first token (of its end, when it failed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        sent = time.monotonic()
        result = client.send_one(target)
        if result.ok:
            return result, sent + (result.ttft_s if result.ttft_s is not None else result.latency_s)
        assert result.failure is not None
        if result.failure.kind not in RETRIED_FAILURES or time.monotonic() > deadline:
            return result, sent + result.latency_s
        time.sleep(poll_s)


def wall_clock(monotonic_at: float) -> str:
    """A `time.monotonic()` moment as RFC 3339 UTC, by this machine's clock."""
    from datetime import UTC, timedelta

    moment = datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic_at)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
