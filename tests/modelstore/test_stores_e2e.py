"""`llmctl model push` into real stores on loopback, then `llmctl model fetch` (what the llama
pods' init container runs) out of them: moto's S3 with its signature and IAM checks on,
fake-gcs-server, Azurite with its Shared Key checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmctl.modelstore import access, stages
from tests.support.object_stores import (
    REGION,
    StoreServer,
    azurite,
    fake_gcs,
    installed_stores,
    moto_require_auth,
    moto_s3,
)

LLMCTL = str(Path(sys.executable).parent / "llmctl")
BUCKET = "llmctl-models-test"
MODEL_BYTES = 24 * 1024 * 1024 + 12345  # not a whole number of ranges
READER_ROLE = "arn:aws:iam::123456789012:role/model-reader"


@dataclass
class Store:
    server: StoreServer
    push_env: dict[str, str]
    fetch_env: dict[str, str]
    flags: list[str]  # where to push: --bucket or --account/--container

    @property
    def cloud(self) -> str:
        return {"s3": "aws", "gs": "gcp", "azure": "azure"}[self.server.scheme]

    def uri(self, name: str, filename: str) -> str:
        key = f"llmctl/models/{name}/{filename}"
        if self.server.scheme == "azure":
            return f"azure://{self.server.account}/{BUCKET}/{key}"
        return f"{self.server.scheme}://{BUCKET}/{key}"


def _clean_env(extra: dict[str, str], home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "GOOGLE"))}
    return keep | {"HOME": str(home), "NO_GCE_CHECK": "true", "COLUMNS": "200"} | extra


def _s3_identities(server: StoreServer, tmp: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A pusher with its own keys, and the pods' read-only role reached the IRSA way (a web
    identity token exchanged with STS by the fetcher's own code); then moto's auth goes on."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="pusher")
    allow_all = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="pusher", PolicyName="s3", PolicyDocument=json.dumps(allow_all))
    key = iam.create_access_key(UserName="pusher")["AccessKey"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "oidc"},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }
    iam.create_role(RoleName="model-reader", AssumeRolePolicyDocument=json.dumps(trust))
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
        ],
    }
    iam.put_role_policy(
        RoleName="model-reader", PolicyName="read", PolicyDocument=json.dumps(read_only)
    )
    token = tmp / "web-identity-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln\n")
    irsa = server.fetch_env | {
        "AWS_ROLE_ARN": READER_ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
    }
    role = access.aws_credentials(irsa)
    assert role.session_token, "STS gave the role's session credentials"
    moto_require_auth(server.url)
    push_env = server.push_env | {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    fetch_env = server.fetch_env | {
        "AWS_ACCESS_KEY_ID": role.access_key_id,
        "AWS_SECRET_ACCESS_KEY": role.secret_access_key,
        "AWS_SESSION_TOKEN": role.session_token,
    }
    return push_env, fetch_env


@pytest.fixture(params=["s3", "gs", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    scheme = request.param
    if scheme == "s3":
        with moto_s3(tmp_path) as server:
            push_env, fetch_env = _s3_identities(server, tmp_path)
            yield Store(server, push_env, fetch_env, ["--bucket", BUCKET])
        return
    tools = installed_stores()
    if scheme == "gs":
        with fake_gcs(tmp_path, tools["FAKE_GCS_SERVER_BIN"]) as server:
            yield Store(server, server.push_env, server.fetch_env, ["--bucket", BUCKET])
        return
    with azurite(tmp_path, tools["AZURITE_BLOB_BIN"]) as server:
        flags = ["--account", server.account, "--container", BUCKET]
        yield Store(server, server.push_env, server.fetch_env, flags)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMCTL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _push(store: Store, tmp: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["model", "push", "test-model", "--cloud", store.cloud, "--file", str(model)]
    return _run([*args, *store.flags, *extra], _clean_env(store.push_env, tmp), tmp)


def _fetch(
    store: Store, tmp: Path, uri: str, dest: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = ["model", "fetch", "--uri", uri, "--path", str(dest), "--connections", "8"]
    args += ["--chunk-mib", "1", *extra]
    return _run(args, _clean_env(store.fetch_env, tmp), tmp)


def test_push_then_fetch_in_parallel_and_refuse_a_corrupt_copy(
    store: Store, tmp_path: Path
) -> None:
    model = tmp_path / "test-model.gguf"
    payload = os.urandom(MODEL_BYTES)
    model.write_bytes(payload)
    uri = store.uri("test-model", "test-model.gguf")

    # --dry-run says what it would do and does nothing: the fetch finds no object afterwards.
    dry = _push(store, tmp_path, model, "--create-bucket", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would create the" in dry.stdout and "Would upload" in dry.stdout

    # Without --create-bucket a missing bucket is a usage error, said in one line.
    missing = _push(store, tmp_path, model)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr

    pushed = _push(store, tmp_path, model, "--create-bucket", "--output", "json")
    assert pushed.returncode == 0, pushed.stderr
    first = json.loads(pushed.stdout)
    assert first["changed"] is True and first["uri"] == uri and first["bytes"] == MODEL_BYTES

    again = _push(store, tmp_path, model, "--output", "json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["changed"] is False and second["sha256"] == first["sha256"]

    # No --sha256: the digest comes from the .sha256 object push wrote beside the model.
    dest = tmp_path / "models" / "test-model.gguf"
    dest.parent.mkdir()
    metrics = tmp_path / "stage-metrics" / "fetch.prom"
    fetched = _fetch(store, tmp_path, uri, dest, "--metrics-file", str(metrics))
    assert fetched.returncode == 0, fetched.stderr + fetched.stdout
    assert dest.read_bytes() == payload
    line = next(
        li for li in fetched.stdout.splitlines() if li.startswith("llmctl-stage stage=fetch")
    )
    fields = stages.parse_stage_line(line)
    assert fields["bytes"] == str(MODEL_BYTES)
    assert fields["connections"] == "8" and fields["sha256"] == "verified"
    assert fields["sha256_from"] == uri + ".sha256"
    assert float(fields["mb_per_s"]) > 0
    prom = metrics.read_text()
    labels = f'model="test-model.gguf",store="{store.server.scheme}"'
    assert f"llmctl_model_fetch_bytes{{{labels}}} {MODEL_BYTES}" in prom

    # Another file under the same name is refused unless --replace says so.
    other = tmp_path / "other" / "test-model.gguf"
    other.parent.mkdir()
    corrupt = bytearray(payload)
    corrupt[MODEL_BYTES // 2] ^= 0xFF
    other.write_bytes(bytes(corrupt))
    refused = _push(store, tmp_path, other)
    assert refused.returncode == 1 and "already holds a different file" in refused.stderr

    # A corrupted copy in the store (the .sha256 beside it still the good one): refused, and
    # nothing is left where llama-server would look for the model.
    _overwrite_object(store, uri, bytes(corrupt))
    dest.unlink()
    bad = _fetch(store, tmp_path, uri, dest)
    assert bad.returncode == 1
    assert "sha256 mismatch" in bad.stderr and first["sha256"] in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not dest.exists() and not list(dest.parent.iterdir())


def _overwrite_object(store: Store, uri: str, data: bytes) -> None:
    """Bypass llmctl: write other bytes under the model's name with the SDK itself."""
    from llmctl.modelstore.locations import parse_store_uri
    from llmctl.modelstore.stores import open_store

    location = parse_store_uri(uri)
    old = {k: os.environ.get(k) for k in store.push_env}
    os.environ.update(store.push_env)
    try:
        scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmctl-corrupt-{os.getpid()}.bin"
        scratch.write_bytes(data)
        try:
            open_store(location, REGION, "llmctl-test", store.push_env).upload_file(
                scratch, location.key
            )
        finally:
            scratch.unlink()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_s3_refuses_a_wrong_signature(tmp_path: Path) -> None:
    """moto checks the fetcher's Signature Version 4: a wrong secret gets 403, said clearly."""
    with moto_s3(tmp_path) as server:
        push_env, fetch_env = _s3_identities(server, tmp_path)
        store = Store(server, push_env, fetch_env, ["--bucket", BUCKET])
        model = tmp_path / "test-model.gguf"
        model.write_bytes(os.urandom(2 * 1024 * 1024))
        assert _push(store, tmp_path, model, "--create-bucket").returncode == 0
        store.fetch_env = fetch_env | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        dest = tmp_path / "m.gguf"
        bad = _fetch(store, tmp_path, store.uri("test-model", "test-model.gguf"), dest)
        assert bad.returncode == 1
        assert "HTTP 403" in bad.stderr and "Traceback" not in bad.stderr
        assert not dest.exists()
