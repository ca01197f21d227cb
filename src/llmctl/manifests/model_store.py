"""The llama pods and a cloud's model store (issue 30): where they fetch from, as whom.

With `modelStore.<cloud>` set, that cloud's llama pods fetch `<store>/llmctl/models/<model
name>/<file name>` (where `llmctl model push` puts it) instead of the model's uri, with the
pod's fetcher (`llmctl model fetch`, in the router image), as the service account
`llm-model-reader`, which the cloud's workload identity maps to an identity allowed to read the
bucket. Unset, nothing changes: the pods download from the Hub. Pure.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from llmctl.catalog import CloudName
from llmctl.config import (
    NAMESPACE,
    AwsModelStore,
    AzureModelStore,
    GcpModelStore,
    ModelSpec,
    Stack,
)
from llmctl.modelstore.locations import model_location

SERVICE_ACCOUNT = "llm-model-reader"
# The command the init container runs in the router image (docker/entrypoint.sh runs anything
# that is not `router` or `llama-server` as given).
FETCH_COMMAND = ["llmctl", "model", "fetch"]
# Where the fetcher writes its stage metrics, on the pod's model volume (issue 30, stages).
METRICS_FILE_NAME = ".llmctl-fetch.prom"
# AKS Workload Identity injects its token only into pods with this label.
AZURE_WORKLOAD_IDENTITY_LABEL = ("azure.workload.identity/use", "true")


def store_uri(stack: Stack, cloud: CloudName, model: ModelSpec) -> str | None:
    store = stack.model_store.of(cloud)
    if store is None:
        return None
    filename = PurePosixPath(model.path).name
    if isinstance(store, AzureModelStore):
        return model_location(
            "azure", store.container, model.name, filename, account=store.account
        ).uri
    scheme = "s3" if isinstance(store, AwsModelStore) else "gs"
    return model_location(scheme, store.bucket, model.name, filename).uri


def fetch_env(stack: Stack, cloud: CloudName, model: ModelSpec) -> list[dict[str, Any]]:
    """The init container's environment for the store: the URI, and what the fetcher needs to
    sign for it (S3 signatures name the bucket's region)."""
    uri = store_uri(stack, cloud, model)
    if uri is None:
        return []
    env: list[dict[str, Any]] = [
        {"name": "MODEL_URI", "value": uri},
        {"name": "MODEL_FETCH_METRICS_FILE", "value": metrics_file(model)},
    ]
    if cloud is CloudName.AWS:
        env.append({"name": "AWS_REGION", "value": stack.clouds.of(cloud).region})
    return env


def metrics_file(model: ModelSpec) -> str:
    return str(PurePosixPath(model.path).parent / METRICS_FILE_NAME)


def service_account(stack: Stack, cloud: CloudName, labels: dict[str, str]) -> dict[str, Any]:
    """The ServiceAccount the llama pods run as when the cloud has a model store, annotated
    for the cloud's workload identity (EKS Pod Identity needs no annotation: its association
    names this account)."""
    store = stack.model_store.of(cloud)
    annotations: dict[str, str] = {}
    if isinstance(store, AwsModelStore) and store.role_arn:
        annotations["eks.amazonaws.com/role-arn"] = store.role_arn
    elif isinstance(store, GcpModelStore) and store.service_account:
        annotations["iam.gke.io/gcp-service-account"] = store.service_account
    elif isinstance(store, AzureModelStore) and store.client_id:
        annotations["azure.workload.identity/client-id"] = store.client_id
    metadata: dict[str, Any] = {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        # The workload identity webhooks project their own tokens; llama.cpp needs no API token.
        "automountServiceAccountToken": False,
    }


def pod_labels(stack: Stack, cloud: CloudName) -> dict[str, str]:
    if isinstance(stack.model_store.of(cloud), AzureModelStore):
        key, value = AZURE_WORKLOAD_IDENTITY_LABEL
        return {key: value}
    return {}
