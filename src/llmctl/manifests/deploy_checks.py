"""What `llmctl render` says about a config before anyone applies it: the settings whose default
would not serve, or not safely, on a real cluster. Pure: the config alone, no cluster.

Each message names the setting and what to do. `render` prints them on stderr, so
`render --stdout | kubectl apply -f -` still gets clean YAML.
"""

from __future__ import annotations

from llmctl.catalog import CloudName
from llmctl.config import DEFAULT_ROUTER_IMAGE, ModelSpec, Stack


def router_image_warning(stack: Stack) -> str | None:
    if stack.images.router != DEFAULT_ROUTER_IMAGE:
        return None
    return (
        f"images.router is still the default {DEFAULT_ROUTER_IMAGE}, which is only there once "
        "this project's release workflow has pushed it: build and push the router image to "
        "your registry and set images.router to it, by digest (README, 'The router image')"
    )


def _unclassed(stack: Stack, gpu: bool) -> list[tuple[str, ModelSpec]]:
    """The tiers whose model volume is a claim without a class (a `local` volume is an emptyDir
    on the node's own disk: no StorageClass is involved)."""
    tiers = [("cpu.model", stack.cpu.model, stack.cpu.model_volume)]
    if gpu:
        tiers.append(("gpu.model", stack.gpu.model, stack.gpu.model_volume))
    return [
        (key, model)
        for key, model, volume in tiers
        if volume == "ephemeral" and model.storage_class_name is None
    ]


def storage_class_warning(stack: Stack, clouds: tuple[CloudName, ...], gpu: bool) -> str | None:
    """EKS clusters created at 1.30 or later have no default StorageClass (and EBS volumes need
    the EBS CSI driver add-on): a model volume with no class never binds there."""
    if CloudName.AWS not in clouds:
        return None
    unset = [key for key, _ in _unclassed(stack, gpu)]
    if not unset:
        return None
    keys = " and ".join(f"{key}.storageClassName" for key in unset)
    return (
        f"{keys} unset: the model volumes use the cluster's default StorageClass, and EKS "
        "clusters created at 1.30 or later have none, so the pods would stay Pending. Install "
        "the EBS CSI driver add-on and a gp3 StorageClass, then set "
        f"{keys} to its name, or mark it default (README, 'EKS')"
    )


def api_key_warning(stack: Stack) -> str | None:
    if stack.router.api_keys.secret_name is not None:
        return None
    return (
        "router.apiKeys.secretName is unset: anyone who can reach the llm-router Service can "
        "send requests, and wake GPU nodes; create a Secret with the keys and set it"
    )


def deploy_warnings(stack: Stack, clouds: tuple[CloudName, ...], gpu: bool) -> list[str]:
    """Every warning for rendering these clouds, with or without the GPU tier, in a fixed order."""
    found = [
        router_image_warning(stack),
        storage_class_warning(stack, clouds, gpu),
        api_key_warning(stack),
    ]
    return [warning for warning in found if warning is not None]
