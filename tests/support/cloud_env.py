from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def clean_cloud_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[None]:
    """No cloud credentials from the environment, files or metadata servers."""
    import os

    for key in list(os.environ):
        if key.startswith(("AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_", "KUBECONFIG")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", f"{tmp_path}/absent-credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", f"{tmp_path}/absent-config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", f"{tmp_path}/gcloud")
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("AZURE_CONFIG_DIR", f"{tmp_path}/azure")
    # DefaultAzureCredential without managed identity, which would ask 169.254.169.254.
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
    monkeypatch.setenv("HOME", f"{tmp_path}")
    yield
