from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmctl import kube
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.errors import LlmctlError
from llmctl.manifests import cluster_setup_objects
from tests.support.fake_kube import FakeKube, kubeconfig, node, pod
from tests.support.http_fake import FakeServer, serve


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
def server(fake: FakeKube) -> Iterator[FakeServer]:
    with serve(fake.route) as srv:
        yield srv


@pytest.fixture
def api(server: FakeServer, tmp_path: Path) -> object:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(server.url))
    return kube.api_client(str(path))


@pytest.mark.parametrize("cloud", list(CloudName))
def test_apply_sends_the_rendered_objects_by_server_side_apply(
    cloud: CloudName, api: object, server: FakeServer, fake: FakeKube
) -> None:
    objects = cluster_setup_objects(Stack(), cloud)
    kube.apply(api, objects)
    patches = [r for r in server.requests if r.method == "PATCH"]
    assert [r.body for r in patches] == objects
    for request in patches:
        assert request.content_type == "application/apply-patch+yaml"
        assert request.query == {"fieldManager": "llmctl"}  # no force: never take others' fields
    kinds = {o["kind"] for o in objects}
    assert "RuntimeClass" in kinds
    assert "/apis/node.k8s.io/v1/runtimeclasses/nvidia" in fake.objects


def test_apply_twice_updates_in_place(api: object, fake: FakeKube) -> None:
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    kube.apply(api, objects)
    first = {p: o["metadata"]["uid"] for p, o in fake.objects.items()}
    kube.apply(api, objects)
    assert {p: o["metadata"]["uid"] for p, o in fake.objects.items()} == first


def test_apply_request_paths() -> None:
    ds = kube.apply_request(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "x", "namespace": "kube-system"},
        }
    )
    assert ds.path == "/apis/apps/v1/namespaces/kube-system/daemonsets/x"
    sa = kube.apply_request(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "y", "namespace": "n"}}
    )
    assert sa.path == "/api/v1/namespaces/n/serviceaccounts/y"
    rc = kube.apply_request(
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"}}
    )
    assert rc.path == "/apis/node.k8s.io/v1/runtimeclasses/nvidia"
    with pytest.raises(LlmctlError, match="no metadata.namespace"):
        kube.apply_request(
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "z"}}
        )


def test_gpu_nodes_and_device_plugin_pods(api: object, fake: FakeKube) -> None:
    fake.nodes += [
        node("gpu-a", {"llmctl.dev/accelerator": "nvidia-tesla-t4", "compute": "gpu-enabled"}, "1"),
        node("gpu-b", {"llmctl.dev/accelerator": "nvidia-tesla-t4"}, "0", ready=False),
        node("cpu-a", {"compute": "cpu"}),
    ]
    nodes = kube.gpu_nodes(api)
    assert [(n.name, n.allocatable_gpus, n.ready) for n in nodes] == [
        ("gpu-a", 1, True),
        ("gpu-b", 0, False),
    ]
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    where = kube.device_plugin_pods(objects)
    assert where is not None
    namespace, selector = where
    labels = dict(term.split("=") for term in selector.split(","))
    fake.pods += [
        pod("dp-1", namespace, labels, True),
        pod("dp-2", namespace, labels, False),
        pod("other", namespace, {"app": "x"}, True),
    ]
    assert kube.pods_ready(api, namespace, selector) == kube.PodsReady(1, 2)


def test_forbidden_apply_names_the_rbac_need(api: object, fake: FakeKube) -> None:
    fake.forbid_apply = True
    with pytest.raises(LlmctlError, match="refused applying .*HTTP 403") as info:
        kube.apply(api, cluster_setup_objects(Stack(), CloudName.AWS))
    assert "RBAC" in (info.value.hint or "")


def test_missing_kubeconfig_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="no usable kubeconfig") as info:
        kube.api_client(str(tmp_path / "absent"), hint="aws eks update-kubeconfig --name c")
    assert "aws eks update-kubeconfig --name c" in (info.value.hint or "")
