"""The HorizontalPodAutoscaler's arithmetic for the External metrics KEDA gives it, in Python, to
ask what replica count a ScaledObject's HPA wants for given metric values.

Sources (read at the versions the tests run):
- KEDA v2.21.0 `pkg/scalers/prometheus_scaler.go` `GetMetricSpecForScaling` and
  `pkg/scalers/scaler.go` `GetMetricTargetType`: each prometheus trigger becomes an External
  metric `s<index>-prometheus` whose target is `AverageValue: <threshold>` unless the trigger
  sets `metricType`; `apis/keda/v1alpha1/scaledobject_types.go` `GetHPAMinReplicas`: the HPA's
  minReplicas is minReplicaCount, or 1 when that is 0 (KEDA itself owns 0 <-> 1).
- Kubernetes v1.36.3 `pkg/controller/podautoscaler/replica_calculator.go`
  `GetExternalPerPodMetricReplicas`: usage is the sum of the metric's values; if
  usage / (target * current) is within the tolerance (0.1 by default,
  --horizontal-pod-autoscaler-tolerance) the count stays, else it is ceil(usage / target);
  `horizontal.go` `computeReplicasForMetrics` takes the largest proposal over all metrics, then
  the count is clamped to [minReplicas, maxReplicas].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TOLERANCE = 0.1  # kube-controller-manager's --horizontal-pod-autoscaler-tolerance default


@dataclass(frozen=True)
class ExternalTarget:
    """One External metric of an HPA with an AverageValue target."""

    name: str
    average_value: float


def targets_of_scaled_object(scaled_object: dict[str, Any]) -> list[ExternalTarget]:
    """The External metrics KEDA's HPA gets from a ScaledObject's prometheus triggers."""
    targets = []
    for index, trigger in enumerate(scaled_object["spec"]["triggers"]):
        assert trigger["type"] == "prometheus", trigger
        metric_type = trigger.get("metricType", "AverageValue")
        assert metric_type == "AverageValue", f"{metric_type} targets are not modelled here"
        threshold = float(trigger["metadata"]["threshold"])
        targets.append(ExternalTarget(f"s{index}-prometheus", threshold))
    return targets


def targets_of_hpa(hpa: dict[str, Any]) -> list[ExternalTarget]:
    """The External AverageValue metrics of a real HPA object (the one KEDA made)."""
    targets = []
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "External", metric
        target = metric["external"]["target"]
        assert target["type"] == "AverageValue", target
        targets.append(
            ExternalTarget(metric["external"]["metric"]["name"], quantity(target["averageValue"]))
        )
    return targets


def quantity(text: str) -> float:
    """A Kubernetes quantity as the HPA reads it: '4', '80', '500m'."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def hpa_min_replicas(min_replica_count: int) -> int:
    return min_replica_count if min_replica_count > 0 else 1


def desired_replicas(
    current: int,
    targets: list[ExternalTarget],
    usage: dict[str, float],
    min_replicas: int,
    max_replicas: int,
) -> int:
    """What the HPA asks for, `usage` being each metric's summed value by metric name."""
    proposals = []
    for target in targets:
        value = usage[target.name]
        ratio = value / (target.average_value * current)
        if 1.0 - TOLERANCE <= ratio <= 1.0 + TOLERANCE:
            proposals.append(current)
        else:
            proposals.append(math.ceil(value / target.average_value))
    return min(max(max(proposals), min_replicas), max_replicas)
