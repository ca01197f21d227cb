"""A cluster with no default StorageClass (every EKS cluster created at 1.30 or later), for real:
`kube.preflight` (what `llmctl gpu enable` runs before applying anything) reads the API server's
StorageClasses and says the model volumes would stay Pending, with the fix; marking a class
default clears it. (test_scale_from_zero shows the ephemeral model PVCs waiting for a volume.)"""

from __future__ import annotations

from llmctl import kube
from llmctl.catalog import CloudName
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import apply_objects, get_json, reset_llmctl_objects


def test_preflight_names_the_missing_default_storage_class(control_plane: ControlPlane) -> None:
    api = kube.api_client(str(control_plane.kubeconfig))
    assert get_json(control_plane, "storageclass")["items"] == []
    check = next(
        c
        for c in kube.preflight(CloudName.AWS, kube.cluster_facts(api))
        if "StorageClass" in c.name
    )
    assert not check.ok and "stay Pending" in check.message and "kubectl patch" in check.fix

    standard = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "example.com/none",
    }
    apply_objects(control_plane, [standard])
    try:
        check = next(
            c
            for c in kube.preflight(CloudName.AWS, kube.cluster_facts(api))
            if "StorageClass" in c.name
        )
        assert check.ok and "standard" in check.message
    finally:
        control_plane.kubectl("delete", "storageclass", "standard", "--ignore-not-found")
        reset_llmctl_objects(control_plane)
