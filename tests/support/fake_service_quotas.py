"""EC2's GPU quotas in moto's Service Quotas.

moto 5.2 implements `GetServiceQuota` for service code `vpc` only (moto/servicequotas/models.py);
for `ec2` it answers NoSuchResourceException, and `GetAWSDefaultServiceQuota` is not implemented
at all. `ec2_quotas` teaches moto's own backend and responder the two quotas llmctl reads, so the
request still goes through boto3, moto's service-quotas responder and botocore's parser. A quota
with no applied value answers NoSuchResourceException to GetServiceQuota and its AWS default to
GetAWSDefaultServiceQuota ("For some quotas, only the default values are available. If the
applied quota value is not available for a quota, the quota is not retrieved": GetServiceQuota
in the Service Quotas API reference). Each quota has the shape the Service Quotas API
reference gives for `ServiceQuota` (GetServiceQuota response; values in vCPUs, Unit "None" as
EC2's vCPU quotas report it), and the names and codes AWS lists: L-3819A6DF "All G and VT Spot
Instance Requests", L-DB2E81BA "Running On-Demand G and VT instances". A code the test did not
set stays NoSuchResourceException, as moto answers it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto.servicequotas.exceptions import NoSuchResource
from moto.servicequotas.models import ServiceQuotasBackend
from moto.servicequotas.responses import ServiceQuotasResponse

NAMES = {
    "L-3819A6DF": "All G and VT Spot Instance Requests",
    "L-DB2E81BA": "Running On-Demand G and VT instances",
}


def ec2_quota(code: str, value: float, region: str = "us-east-1") -> dict[str, Any]:
    return {
        "ServiceCode": "ec2",
        "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "QuotaArn": f"arn:aws:servicequotas:{region}:123456789012:ec2/{code}",
        "QuotaCode": code,
        "QuotaName": NAMES[code],
        "Value": float(value),
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
        "UsageMetric": {
            "MetricNamespace": "AWS/Usage",
            "MetricName": "ResourceCount",
            "MetricDimensions": {
                "Class": "G/Spot" if code == "L-3819A6DF" else "G/OnDemand",
                "Resource": "vCPU",
                "Service": "EC2",
                "Type": "Resource",
            },
            "MetricStatisticRecommendation": "Maximum",
        },
        "QuotaAppliedAtLevel": "ACCOUNT",
    }


# moto's own, kept before any test replaces it (a second `ec2_quotas` replaces the first).
MOTO_GET_SERVICE_QUOTA = ServiceQuotasBackend.get_service_quota
# What a test gets unless it says otherwise: an account that has asked for G-family quota.
ENOUGH = {"L-3819A6DF": 32.0, "L-DB2E81BA": 32.0}


def ec2_quotas(
    monkeypatch: pytest.MonkeyPatch,
    applied: dict[str, float] | None = None,
    defaults: dict[str, float] | None = None,
) -> None:
    """From now on moto's Service Quotas answers these EC2 quotas (code -> vCPUs): `applied`
    ones to GetServiceQuota, `defaults` (AWS's default, 0 unless given) to
    GetAWSDefaultServiceQuota."""
    applied = dict(ENOUGH if applied is None else applied)
    defaults = dict.fromkeys(NAMES, 0.0) | (defaults or {})
    original = MOTO_GET_SERVICE_QUOTA

    def get_service_quota(
        self: ServiceQuotasBackend, service_code: str, quota_code: str
    ) -> dict[str, Any]:
        if service_code == "ec2" and quota_code in applied:
            return ec2_quota(quota_code, applied[quota_code], self.region_name)
        return original(self, service_code, quota_code)

    def get_aws_default_service_quota(self: ServiceQuotasResponse) -> str:
        params = json.loads(self.body)
        code = str(params.get("QuotaCode"))
        if params.get("ServiceCode") != "ec2" or code not in defaults:
            raise NoSuchResource
        quota = ec2_quota(code, defaults[code], self.region)
        quota["QuotaArn"] = quota["QuotaArn"].replace(":123456789012:", "::")
        return json.dumps({"Quota": quota})

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", get_service_quota)
    monkeypatch.setattr(
        ServiceQuotasResponse,
        "get_aws_default_service_quota",
        get_aws_default_service_quota,
        raising=False,
    )
