"""Strict validation of built objects: the real Kubernetes OpenAPI schemas for built-in kinds, and
the CRDs' models (KEDA, Prometheus Operator) for custom resources, with unknown fields refused."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule, ServiceMonitor
from pydantic import BaseModel

# The Kubernetes version the rendered manifests are checked against: the oldest minor that all
# three managed services (EKS, AKS, GKE) still support in standard support as of 2026-11.
KUBERNETES_VERSION = "1.33.0"

CRD_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PrometheusRule,
}


def _unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Fields of `given` that the model dropped on its way to `kept`."""
    if isinstance(given, dict) and isinstance(kept, dict):
        found: list[str] = []
        for key, value in given.items():
            if key not in kept:
                found.append(f"{path}.{key}".lstrip("."))
            else:
                found += _unknown_fields(value, kept[key], f"{path}.{key}")
        return found
    if isinstance(given, list) and isinstance(kept, list):
        return [
            f
            for i, (g, k) in enumerate(zip(given, kept, strict=False))
            for f in _unknown_fields(g, k, f"{path}[{i}]")
        ]
    return []


def validate_crd_strict(obj: dict[str, Any]) -> None:
    model = CRD_MODELS[(obj["apiVersion"], obj["kind"])]
    # The cloudcoil models check types but ignore unknown fields: a round trip shows them.
    kept = model.model_validate(obj).model_dump(mode="json", by_alias=True, exclude_unset=True)
    unknown = _unknown_fields(obj, kept)
    if unknown:
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: unknown fields {unknown}")


def validate_strict(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Raise on any schema violation or unknown field. A kind with no schema is a failure too:
    kubernetes-validate only warns about it, which would let a CRD typo through unchecked."""
    if (obj.get("apiVersion"), obj.get("kind")) in CRD_MODELS:
        validate_crd_strict(obj)
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(
            f"no Kubernetes {version} schema for {obj.get('apiVersion')}/"
            f"{obj.get('kind')}: validate it against its CRD instead"
        ) from exc
