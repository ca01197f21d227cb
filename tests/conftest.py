from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.node import RealNode

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok, KEDA),
    started once per test run by the same code as `scripts/dev-cluster.sh up`, stopped at the
    end. It builds nothing: missing binaries fail it with the command that builds them
    (scripts/build-control-plane.sh; scripts/test.sh runs it before pytest)."""
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


@pytest.fixture(scope="session")
def real_node(control_plane: ControlPlane) -> RealNode:
    """One real node (containerd, runc, CNI bridge, kubelet, kube-proxy, CoreDNS) registered
    with the session's control plane, started the first time a test asks for it; it stops with
    the control plane. The tests' busybox image is imported; its name is in
    `real_node.bins["BUSYBOX_IMAGE"]`. Missing binaries fail it with the command that builds them
    (scripts/build-node.sh), as for the control plane."""
    try:
        node = control_plane.start_node()
    except Exception as exc:
        pytest.fail(f"the real node did not start: {exc}")
    print("real node up in " + ", ".join(f"{k} {v:.1f}s" for k, v in node.timings.items()))
    node.import_image(Path(node.bins["BUSYBOX_ARCHIVE"]))
    return node
