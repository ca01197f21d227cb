"""Flatten a base or overlay into the objects `kubectl kustomize DIR` prints.

llmctl writes every object complete (namespace included) and its patches are plain strategic
merges, so building needs no more than a map merge, merging the few keyed lists (containers by
name, volume mounts by path...) and `$patch: delete`. A test compares the result with the real
kustomize for every cloud.
"""

from __future__ import annotations

import copy
from typing import Any

from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.manifests import render

# kustomize's legacy resource order: these kinds first, in this order; webhooks last.
_ORDER_FIRST = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
]
_ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

ObjectKey = tuple[str, str, str, str]


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def _rank(obj: dict[str, Any]) -> tuple[int, str, str, str, str]:
    kind = obj["kind"]
    if kind in _ORDER_FIRST:
        index = _ORDER_FIRST.index(kind)
    elif kind in _ORDER_LAST:
        index = len(_ORDER_FIRST) + 1 + _ORDER_LAST.index(kind)
    else:
        index = len(_ORDER_FIRST)
    api, kind, namespace, name = object_key(obj)
    return (index, api, kind, namespace, name)


# Lists that strategic merge patches merge item by item, and the key that identifies an item.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


def _merge_list(target: list[Any], patch: list[Any], key: str) -> list[Any]:
    patched = {item[key]: item for item in patch}
    merged = [
        merge_patch(item, patched.pop(item[key])) if item[key] in patched else item
        for item in target
    ]
    return merged + [copy.deepcopy(item) for item in patch if item[key] in patched]


def merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    if isinstance(target, list) and isinstance(patch, list) and field in _MERGE_KEYS:
        return _merge_list(target, patch, _MERGE_KEYS[field])
    if not isinstance(target, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value, key)
    return merged


def apply_patches(
    objects: list[dict[str, Any]], patches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_key = {object_key(obj): obj for obj in objects}
    for patch in patches:
        key = object_key(patch)
        if key not in by_key:
            raise ValueError(f"patch targets {key}, which the base does not have")
        if patch.get("$patch") == "delete":
            del by_key[key]
        else:
            by_key[key] = merge_patch(by_key[key], patch)
    return list(by_key.values())


def built_objects(stack: Stack, cloud: CloudName, gpu: bool) -> list[dict[str, Any]]:
    """The objects of `clusters/<cloud>/base` or `clusters/<cloud>/overlays/gpu`, built."""
    layers = [render.base(stack, cloud)]
    patches: list[dict[str, Any]] = []
    if gpu:
        overlay = render.gpu_overlay(stack, cloud)
        layers += [render.nvidia_component(stack), overlay]
        patches = [doc for docs in overlay.patches.values() for doc in docs]
    objects = [doc for layer in layers for docs in layer.resources.values() for doc in docs]
    return sorted(apply_patches(objects, patches), key=_rank)
