"""Strict validation of built objects against the real Kubernetes OpenAPI schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

# The Kubernetes version the rendered manifests are checked against: the oldest minor that all
# three managed services (EKS, AKS, GKE) still support in standard support as of 2026-11.
KUBERNETES_VERSION = "1.33.0"


def validate_strict(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Raise on any schema violation or unknown field. A kind with no schema is a failure too:
    kubernetes-validate only warns about it, which would let a CRD typo through unchecked."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(
            f"no Kubernetes {version} schema for {obj.get('apiVersion')}/"
            f"{obj.get('kind')}: validate it against its CRD instead"
        ) from exc
