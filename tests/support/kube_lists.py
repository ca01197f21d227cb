"""Cluster-wide lists and CRDs as kube-apiserver serves them, built with the kubernetes client's
own models, for llmctl's preflight reads (kube.cluster_facts). `Cluster.route` answers those
reads and hands everything else to another route (the FakeKube stand-in), so one server plays
the whole cluster. Replaceable by the real kube-apiserver of tests/cluster: create the same
objects there.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from llmctl import kube
from tests.support.fake_kube import TOKEN, status
from tests.support.http_fake import Request, Response, Route

LISTS = {
    "/apis/storage.k8s.io/v1/storageclasses": "StorageClassList",
    "/apis/apps/v1/daemonsets": "DaemonSetList",
    "/apis/apps/v1/deployments": "DeploymentList",
    "/apis/node.k8s.io/v1/runtimeclasses": "RuntimeClassList",
}


def plain(model: Any) -> dict[str, Any]:
    return dict(k8s.ApiClient().sanitize_for_serialization(model))


def storage_class(name: str, default: bool) -> dict[str, Any]:
    annotations = {kube.DEFAULT_CLASS_ANNOTATION: "true"} if default else None
    return plain(
        k8s.V1StorageClass(
            api_version="storage.k8s.io/v1",
            kind="StorageClass",
            metadata=k8s.V1ObjectMeta(name=name, annotations=annotations),
            provisioner="ebs.csi.aws.com",
        )
    )


def _pod_template(image: str, labels: dict[str, str]) -> Any:
    return k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels=labels),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="main", image=image)]),
    )


def daemon_set(
    namespace: str, name: str, image: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    selector = {"app": name}
    return plain(
        k8s.V1DaemonSet(
            api_version="apps/v1",
            kind="DaemonSet",
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
            spec=k8s.V1DaemonSetSpec(
                selector=k8s.V1LabelSelector(match_labels=selector),
                template=_pod_template(image, selector),
            ),
            status=k8s.V1DaemonSetStatus(
                current_number_scheduled=0,
                desired_number_scheduled=0,
                number_misscheduled=0,
                number_ready=0,
            ),
        )
    )


def deployment(namespace: str, name: str, image: str) -> dict[str, Any]:
    selector = {"app": name}
    return plain(
        k8s.V1Deployment(
            api_version="apps/v1",
            kind="Deployment",
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace),
            spec=k8s.V1DeploymentSpec(
                selector=k8s.V1LabelSelector(match_labels=selector),
                template=_pod_template(image, selector),
            ),
        )
    )


def runtime_class(name: str, handler: str) -> dict[str, Any]:
    return plain(
        k8s.V1RuntimeClass(
            api_version="node.k8s.io/v1",
            kind="RuntimeClass",
            metadata=k8s.V1ObjectMeta(name=name),
            handler=handler,
        )
    )


class Cluster:
    """Lists and CRDs as kube-apiserver serves them (tests add objects)."""

    def __init__(self, other: Route | None = None) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {path: [] for path in LISTS}
        self.crds: set[str] = set()
        self.other = other

    def route(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        if request.path in LISTS and request.method == "GET":
            kind = LISTS[request.path]
            return Response(
                200,
                {
                    "kind": kind,
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": self.objects[request.path],
                },
            )
        prefix = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        if request.path.startswith(prefix) and request.method == "GET":
            name = request.path.removeprefix(prefix)
            if name in self.crds:
                return Response(
                    200, {"kind": "CustomResourceDefinition", "metadata": {"name": name}}
                )
            return status(
                404,
                "NotFound",
                f'customresourcedefinitions.apiextensions.k8s.io "{name}" not found',
            )
        if self.other is not None:
            return self.other(request)
        return status(404, "NotFound", "the server could not find the requested resource")
