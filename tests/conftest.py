from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.node import RealNode

REPO = Path(__file__).resolve().parent.parent

# A script that starts the suite in the background (`scripts/test.sh &`) starts it with SIGINT
# ignored (POSIX: asynchronous commands without job control), and an ignored signal stays
# ignored in every child: the Ctrl-C tests' llmctl would never see their SIGINT. A handler does
# not survive exec, so with one here the children start with SIGINT's default, as they do
# from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
