from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok, KEDA),
    started once per test run by the same code as `scripts/dev-cluster.sh up`, stopped at the
    end. Missing binaries are built first (scripts/build-control-plane.sh; cached)."""
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    try:
        plane.up()
    except Exception as exc:
        plane.down()
        pytest.fail(f"the control plane did not start: {exc}")
    print(
        "control plane up in "
        + ", ".join(f"{step} {secs:.1f}s" for step, secs in plane.timings.items())
    )
    yield plane
    plane.down()
