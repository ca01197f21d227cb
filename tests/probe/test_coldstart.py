"""`llmctl test-inference --cold`'s stages, from a pod's records as the API server returns them:
the pod (conditions and container statuses in whole seconds), its events (the scheduler's with a
MicroTime `eventTime`, the kubelet's with `firstTimestamp` only) and its server's log read with
timestamps (RFC3339Nano). The whole flow runs on the real node in tests/cluster/test_pods.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmctl.probe import coldstart

POD: dict[str, Any] = {
    "metadata": {
        "name": "cpu-llm-server-7d9c-abcde",
        "creationTimestamp": "2026-12-07T01:00:00Z",
    },
    "spec": {
        "nodeName": "node-1",
        "initContainers": [{"name": "fetch-model"}],
        "containers": [{"name": "llama-server"}],
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastTransitionTime": "2026-12-07T01:00:02Z",
            },
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-07T01:00:09Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-07T01:00:21Z"},
            {
                "type": "PodScheduled",
                "status": "True",
                "lastTransitionTime": "2026-12-07T01:00:00Z",
            },
        ],  # fmt: skip
        "initContainerStatuses": [
            {
                "name": "fetch-model",
                "ready": True,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": "2026-12-07T01:00:03Z",
                        "finishedAt": "2026-12-07T01:00:08Z",
                    }
                },
            }
        ],
        "containerStatuses": [
            {
                "name": "llama-server",
                "ready": True,
                "state": {"running": {"startedAt": "2026-12-07T01:00:10Z"}},
            }
        ],
    },
}
EVENTS: list[dict[str, Any]] = [
    {
        "reason": "Scheduled",
        "involvedObject": {"kind": "Pod", "name": "cpu-llm-server-7d9c-abcde"},
        "eventTime": "2026-12-07T01:00:00.412345Z",
        "firstTimestamp": None,
        "message": "Successfully assigned llm-server/cpu-llm-server-7d9c-abcde to node-1",
    },
    {
        "reason": "Pulled",
        "involvedObject": {"kind": "Pod", "fieldPath": "spec.initContainers{fetch-model}"},
        "firstTimestamp": "2026-12-07T01:00:03Z",
        "message": 'Container image "ghcr.io/llmctl/llm-router:dev" already present on machine',
    },
    {
        "reason": "Pulled",
        "involvedObject": {"kind": "Pod", "fieldPath": "spec.containers{llama-server}"},
        "firstTimestamp": "2026-12-07T01:00:10Z",
        "message": 'Successfully pulled image "ghcr.io/ggml-org/llama.cpp:server-b11312" in 1.2s',
    },
]
LOG = (
    "2026-12-07T01:00:10.500000000Z main: loading model\n"
    "2026-12-07T01:00:11.123456789Z main: model loaded\n"
    "2026-12-07T01:00:11.200000000Z main: server is listening on http://0.0.0.0:8080\n"
)


def _by_name(stages: list[coldstart.Stage]) -> dict[str, coldstart.Stage]:
    return {stage.name: stage for stage in stages}


def test_each_stage_ends_where_the_pod_recorded_it() -> None:
    found = coldstart.stages(POD, EVENTS, LOG, first_token_s=0.75, first_token_at="t")
    assert [s.name for s in found] == [
        "scheduled",
        "fetcher started",
        "model fetched",
        "server started",
        "model loaded",
        "ready",
        "first token",
    ]
    by = _by_name(found)
    assert by["scheduled"].seconds == pytest.approx(0.412)  # the event's microseconds
    assert by["fetcher started"].seconds == pytest.approx(3 - 0.412345, abs=1e-3)
    assert "already present" in by["fetcher started"].detail
    assert by["model fetched"].seconds == 5
    assert by["server started"].seconds == 2 and "pulled image" in by["server started"].detail
    assert by["model loaded"].seconds == pytest.approx(1.123, abs=1e-3)  # from the log's ns
    assert by["ready"].seconds == pytest.approx(21 - 11.123457, abs=1e-3)
    assert by["first token"].seconds == 0.75
    # The stages add up to creation -> Ready, plus the first token.
    assert sum(s.seconds for s in found) == pytest.approx(21.75, abs=2e-3)


def test_a_running_sidecar_after_the_fetcher_does_not_hide_the_fetch() -> None:
    """The stage watcher is a native sidecar (an init container with restartPolicy Always,
    running beside the server): the fetch still ends when fetch-model finished."""
    pod = copy.deepcopy(POD)
    pod["spec"]["initContainers"].append({"name": "stages", "restartPolicy": "Always"})
    pod["status"]["initContainerStatuses"].append(
        {
            "name": "stages",
            "ready": True,
            "started": True,
            "state": {"running": {"startedAt": "2026-12-07T01:00:09Z"}},
        }
    )
    by = _by_name(coldstart.stages(pod, EVENTS, LOG, first_token_s=None))
    assert by["model fetched"].seconds == 5
    assert by["model fetched"].source == "init container fetch-model finished"
    assert by["server started"].seconds == 2


def test_a_pod_without_init_containers_or_load_line_spans_the_gap() -> None:
    pod = copy.deepcopy(POD)
    pod["spec"]["initContainers"] = []
    del pod["status"]["initContainerStatuses"]
    found = coldstart.stages(pod, EVENTS[:1], "no such line\n", first_token_s=None)
    assert [s.name for s in found] == ["scheduled", "server started", "ready"]
    assert _by_name(found)["server started"].seconds == pytest.approx(10 - 0.412, abs=1e-3)
    assert sum(s.seconds for s in found) == pytest.approx(21)


def test_without_the_scheduler_event_the_condition_stands_in() -> None:
    """Events expire (an hour by default); the PodScheduled condition stays."""
    found = coldstart.stages(POD, [], LOG, first_token_s=None)
    scheduled = _by_name(found)["scheduled"]
    assert scheduled.seconds == 0 and scheduled.source == "condition PodScheduled"


def test_a_whole_second_time_before_a_finer_one_is_never_negative() -> None:
    pod = copy.deepcopy(POD)
    # Ready's whole second (01:00:11) falls before the log's 01:00:11.123.
    pod["status"]["conditions"][2]["lastTransitionTime"] = "2026-12-07T01:00:11Z"
    by = _by_name(coldstart.stages(pod, EVENTS, LOG, first_token_s=None))
    assert by["ready"].seconds == 0


def test_a_restarted_fetcher_counts_from_its_last_run() -> None:
    pod = copy.deepcopy(POD)
    status = pod["status"]["initContainerStatuses"][0]
    status["lastState"] = {"terminated": {"exitCode": 28, "startedAt": "2026-12-07T01:00:01Z"}}
    by = _by_name(coldstart.stages(pod, EVENTS, LOG, first_token_s=None))
    # The current run's start wins over the failed one before it.
    assert by["fetcher started"].ended_at == "2026-12-07T01:00:03Z"


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("2026-12-07T01:00:00Z", 0),
        ("2026-12-07T01:00:00.5Z", 500000),
        ("2026-12-07T01:00:00.123456Z", 123456),
        ("2026-12-07T01:00:00.123456789Z", 123456),
        ("2026-12-07T02:00:00.25+01:00", 250000),
    ],
)
def test_kubernetes_times_parse_to_the_microsecond(value: str, micros: int) -> None:
    parsed = coldstart.parse_time(value)
    assert parsed.microsecond == micros and parsed.utcoffset() is not None
    assert parsed.astimezone(coldstart.parse_time("2026-12-07T01:00:00Z").tzinfo).hour == 1


def test_a_time_that_is_not_rfc3339_is_refused() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        coldstart.parse_time("yesterday")


def test_stuck_names_an_image_that_does_not_pull_and_a_failing_fetcher() -> None:
    pod = copy.deepcopy(POD)
    pod["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}
    }
    assert coldstart.stuck(pod) == (
        'container llama-server: ImagePullBackOff: Back-off pulling image "x"'
    )
    pod = copy.deepcopy(POD)
    pod["status"]["initContainerStatuses"][0] = {
        "name": "fetch-model",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        "lastState": {"terminated": {"exitCode": 22, "message": "curl: (22) 404 Not Found"}},
    }
    assert coldstart.stuck(pod) == (
        "container fetch-model: CrashLoopBackOff: curl: (22) 404 Not Found"
    )
    assert coldstart.stuck(POD) is None


def test_the_json_form_carries_the_sum() -> None:
    cold = coldstart.ColdStart(
        "llm-server", "cpu-llm-server", "p", "node-1", "2026-12-07T01:00:00Z",
        coldstart.stages(POD, EVENTS, LOG, first_token_s=0.5), wall_s=23.0,
    )  # fmt: skip
    data = cold.as_dict()
    assert data["sum_s"] == pytest.approx(21.5, abs=2e-3)
    assert [s["name"] for s in data["stages"]][-1] == "first token"
