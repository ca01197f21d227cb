"""How the pod's fetcher reaches each store: the object's HTTP URL and the headers that sign or
authorise each request, from the credentials the cluster's workload identity gives the pod.

Standard library only: the router image carries no cloud SDK, and the three stores' read path
is one signed GET each. Credentials are looked up in the order the clouds' own SDKs use:

- S3: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`; EKS Pod Identity
  (`AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`); IRSA
  (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, exchanged with STS
  AssumeRoleWithWebIdentity). Requests are signed with Signature Version 4. The endpoint is
  `https://BUCKET.s3.REGION.amazonaws.com`, or `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`
  (path-style) as boto3 reads them.
- GCS: `STORAGE_EMULATOR_HOST` (no credentials, as google-cloud-storage does); otherwise an
  access token from the metadata server, which GKE Workload Identity answers for the pod's
  Kubernetes service account (`GCE_METADATA_HOST` overrides its address).
- Azure Blob: `AZURE_STORAGE_KEY` (Shared Key); otherwise AKS Workload Identity
  (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`,
  injected by its webhook) exchanged for a storage token; otherwise anonymous (a public
  container). `AZURE_STORAGE_BLOB_ENDPOINT` overrides `https://ACCOUNT.blob.core.windows.net`
  (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmctl.modelstore.locations import StoreLocation, is_store_uri, parse_store_uri

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AZURE_STORAGE_VERSION = "2023-11-03"
AZURE_STORAGE_SCOPE = "https://storage.azure.com/.default"
# Credential look-ups are small and must not hang a pod start.
CREDENTIAL_TIMEOUT_SECONDS = 10.0

Range = tuple[int, int] | None  # inclusive byte range, as in the Range header


class AccessError(RuntimeError):
    """No way to read the object: missing or refused credentials, or a bad setting."""


# Signs one request: (method, url, byte range) -> the headers to send.
Signer = Callable[[str, str, Range], dict[str, str]]


@dataclass(frozen=True)
class ObjectSource:
    """One object to GET: its URL, how to sign each request, and what to call it in logs."""

    url: str
    sign: Signer
    label: str  # the store URI or the https URL, for log lines
    store: str  # s3, gs, azure or https

    def headers(self, method: str, url: str, byte_range: Range) -> dict[str, str]:
        return self.sign(method, url, byte_range)


def range_header(byte_range: Range) -> dict[str, str]:
    return {} if byte_range is None else {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"}


def object_source(uri: str, env: Mapping[str, str]) -> ObjectSource:
    """The source for a store URI, or for a plain https URL (the Hub, with `HF_TOKEN`)."""
    if not is_store_uri(uri):
        if not uri.startswith(("https://", "http://")):
            raise AccessError(f"{uri!r} is neither a store URI nor an http(s) URL")
        return _https_source(uri, env)
    location = parse_store_uri(uri)
    if location.scheme == "s3":
        return _s3_source(location, env)
    if location.scheme == "gs":
        return _gcs_source(location, env)
    return _azure_source(location, env)


# --- plain https (the Hugging Face Hub) ----------------------------------------------------


def _https_source(url: str, env: Mapping[str, str]) -> ObjectSource:
    token = env.get("HF_TOKEN", "").strip()
    origin = urllib.parse.urlsplit(url).netloc

    def sign(method: str, target: str, byte_range: Range) -> dict[str, str]:
        headers = range_header(byte_range)
        # The token goes to the Hub only, never to the CDN it redirects to.
        if token and urllib.parse.urlsplit(target).netloc == origin:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    return ObjectSource(url=url, sign=sign, label=url, store="https")


# --- Amazon S3 -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""


def _aws_region(env: Mapping[str, str]) -> str:
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise AccessError("no AWS region: set AWS_REGION to the bucket's region")
    return region


def _aws_endpoint(env: Mapping[str, str], service: str) -> str | None:
    specific = env.get(f"AWS_ENDPOINT_URL_{service.upper()}")
    return (specific or env.get("AWS_ENDPOINT_URL") or "").rstrip("/") or None


def quote_key(key: str) -> str:
    return urllib.parse.quote(key, safe="/-_.~")


def _s3_source(location: StoreLocation, env: Mapping[str, str]) -> ObjectSource:
    region = _aws_region(env)
    endpoint = _aws_endpoint(env, "s3")
    if endpoint:
        url = f"{endpoint}/{location.bucket}/{quote_key(location.key)}"
    else:
        url = f"https://{location.bucket}.s3.{region}.amazonaws.com/{quote_key(location.key)}"
    credentials = aws_credentials(env)

    def sign(method: str, target: str, byte_range: Range) -> dict[str, str]:
        headers = sigv4_headers(method, target, region, "s3", credentials, now=_utcnow())
        return headers | range_header(byte_range)

    return ObjectSource(url=url, sign=sign, label=location.uri, store="s3")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aws_credentials(env: Mapping[str, str]) -> AwsCredentials:
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return AwsCredentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN", "")
        )
    if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return _pod_identity_credentials(env)
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
        return _web_identity_credentials(env)
    raise AccessError(
        "no AWS credentials for the model store: give the pod's service account an EKS Pod "
        "Identity association or an IRSA role (docs/deploy.md, 'Model cache')"
    )


def _pod_identity_credentials(env: Mapping[str, str]) -> AwsCredentials:
    """EKS Pod Identity: the agent on the node answers with the role's credentials."""
    request = urllib.request.Request(env["AWS_CONTAINER_CREDENTIALS_FULL_URI"])
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if token_file:
        request.add_header("Authorization", _read_token(token_file, "EKS Pod Identity"))
    body = _read_json(request, "the EKS Pod Identity agent")
    key_id, secret, token = (body.get(k) for k in ("AccessKeyId", "SecretAccessKey", "Token"))
    if not isinstance(key_id, str) or not isinstance(secret, str):
        raise AccessError("the EKS Pod Identity agent's answer holds no credentials")
    return AwsCredentials(key_id, secret, token if isinstance(token, str) else "")


def _web_identity_credentials(env: Mapping[str, str]) -> AwsCredentials:
    """IRSA: the projected service-account token, exchanged with STS for the role's keys."""
    token = _read_token(env["AWS_WEB_IDENTITY_TOKEN_FILE"], "IRSA")
    endpoint = _aws_endpoint(env, "sts") or f"https://sts.{_aws_region(env)}.amazonaws.com"
    query = urllib.parse.urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": env["AWS_ROLE_ARN"],
            "RoleSessionName": env.get("AWS_ROLE_SESSION_NAME") or "llmctl-model-fetch",
            "WebIdentityToken": token,
        }
    )
    # A form POST, as the SDKs send it; the call is unsigned (the token is the credential).
    request = urllib.request.Request(
        f"{endpoint}/",
        data=query.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    text = _read_text(request, "AWS STS (AssumeRoleWithWebIdentity)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise AccessError("AWS STS answered AssumeRoleWithWebIdentity with no XML") from None
    found = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
    if not found.get("AccessKeyId") or not found.get("SecretAccessKey"):
        raise AccessError("AWS STS's AssumeRoleWithWebIdentity answer holds no credentials")
    return AwsCredentials(
        found["AccessKeyId"], found["SecretAccessKey"], found.get("SessionToken", "")
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _aws_quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def sigv4_headers(
    method: str,
    url: str,
    region: str,
    service: str,
    credentials: AwsCredentials,
    now: dt.datetime,
) -> dict[str, str]:
    """AWS Signature Version 4 for a request without a body (the read path only)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    datestamp = amz_date[:8]
    signed: dict[str, str] = {
        "host": parts.netloc,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": amz_date,
    }
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    query = "&".join(
        sorted(
            f"{_aws_quote(k)}={_aws_quote(v)}"
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
    )
    canonical_request = "\n".join(
        [
            method,
            parts.path or "/",
            query,
            "".join(f"{name}:{signed[name].strip()}\n" for name in names),
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(f"AWS4{credentials.secret_access_key}".encode(), datestamp)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {name: value for name, value in signed.items() if name != "host"}
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


# --- Google Cloud Storage ------------------------------------------------------------------


def _gcs_source(location: StoreLocation, env: Mapping[str, str]) -> ObjectSource:
    emulator = env.get("STORAGE_EMULATOR_HOST", "").rstrip("/")
    base = emulator or "https://storage.googleapis.com"
    if emulator and "://" not in emulator:
        base = f"http://{emulator}"
    name = urllib.parse.quote(location.key, safe="")
    url = f"{base}/download/storage/v1/b/{location.bucket}/o/{name}?alt=media"
    token = "" if emulator else gcp_access_token(env)

    def sign(method: str, target: str, byte_range: Range) -> dict[str, str]:
        del method, target
        headers = range_header(byte_range)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    return ObjectSource(url=url, sign=sign, label=location.uri, store="gs")


def gcp_access_token(env: Mapping[str, str]) -> str:
    """GKE Workload Identity: the metadata server gives the pod its service account's token."""
    host = env.get("GCE_METADATA_HOST") or "metadata.google.internal"
    request = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token",
        headers={"Metadata-Flavor": "Google"},
    )
    body = _read_json(request, "the GKE metadata server (Workload Identity)")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise AccessError("the GKE metadata server's answer has no access_token")
    return token


# --- Azure Blob Storage --------------------------------------------------------------------


def _azure_source(location: StoreLocation, env: Mapping[str, str]) -> ObjectSource:
    endpoint = (
        env.get("AZURE_STORAGE_BLOB_ENDPOINT")
        or f"https://{location.account}.blob.core.windows.net"
    ).rstrip("/")
    url = f"{endpoint}/{location.bucket}/{quote_key(location.key)}"
    key = env.get("AZURE_STORAGE_KEY", "")
    token = "" if key else azure_access_token(env)

    def sign(method: str, target: str, byte_range: Range) -> dict[str, str]:
        headers = {
            "x-ms-date": _utcnow().strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "x-ms-version": AZURE_STORAGE_VERSION,
        }
        if byte_range is not None:
            headers["x-ms-range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if key:
            headers["Authorization"] = shared_key_authorization(
                method, target, headers, location.account, key
            )
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    return ObjectSource(url=url, sign=sign, label=location.uri, store="azure")


def shared_key_authorization(
    method: str, url: str, headers: Mapping[str, str], account: str, key: str
) -> str:
    """Azure Storage Shared Key for a request without a body (the Blob service's rules)."""
    parts = urllib.parse.urlsplit(url)
    ms_headers = sorted(
        (k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-")
    )
    resource = f"/{account}{urllib.parse.unquote(parts.path)}"
    params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    for name in sorted(params, key=str.lower):
        resource += f"\n{name.lower()}:{','.join(sorted(params[name]))}"
    string_to_sign = "\n".join(
        [
            method,
            "",  # Content-Encoding
            "",  # Content-Language
            "",  # Content-Length (empty when 0)
            "",  # Content-MD5
            "",  # Content-Type
            "",  # Date (x-ms-date is sent instead)
            "",  # If-Modified-Since
            "",  # If-Match
            "",  # If-None-Match
            "",  # If-Unmodified-Since
            "",  # Range (x-ms-range is sent instead)
            "".join(f"{k}:{v}\n" for k, v in ms_headers) + resource,
        ]
    )
    try:
        secret = base64.b64decode(key, validate=True)
    except ValueError:
        raise AccessError("AZURE_STORAGE_KEY is not base64: copy the account key whole") from None
    signature = base64.b64encode(
        hmac.new(secret, string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    return f"SharedKey {account}:{signature}"


def azure_access_token(env: Mapping[str, str]) -> str:
    """AKS Workload Identity: the federated service-account token, exchanged with Entra ID for
    a storage token. Empty when the pod has no workload identity (a public container)."""
    token_file = env.get("AZURE_FEDERATED_TOKEN_FILE")
    if not token_file:
        return ""
    tenant, client = env.get("AZURE_TENANT_ID"), env.get("AZURE_CLIENT_ID")
    if not tenant or not client:
        raise AccessError(
            "AZURE_FEDERATED_TOKEN_FILE is set without AZURE_TENANT_ID and AZURE_CLIENT_ID: "
            "label the pod azure.workload.identity/use=true so AKS's webhook sets all three"
        )
    authority = (env.get("AZURE_AUTHORITY_HOST") or "https://login.microsoftonline.com/").rstrip(
        "/"
    )
    form = urllib.parse.urlencode(
        {
            "client_id": client,
            "scope": AZURE_STORAGE_SCOPE,
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _read_token(token_file, "AKS Workload Identity"),
        }
    ).encode()
    request = urllib.request.Request(
        f"{authority}/{tenant}/oauth2/v2.0/token", data=form, method="POST"
    )
    body = _read_json(request, "Microsoft Entra ID (AKS Workload Identity)")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise AccessError("Microsoft Entra ID's answer has no access_token")
    return token


# --- small helpers -------------------------------------------------------------------------


def _read_token(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AccessError(f"cannot read the {what} token {path}: {exc.strerror or exc}") from None


def _read_text(request: urllib.request.Request, what: str) -> str:
    try:
        with urllib.request.urlopen(request, timeout=CREDENTIAL_TIMEOUT_SECONDS) as response:
            text: str = response.read().decode("utf-8", "replace")
            return text
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300].strip()
        raise AccessError(
            f"{what} refused the credential request: HTTP {exc.code} {detail}"
        ) from None
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AccessError(f"cannot reach {what}: {reason}") from None


def _read_json(request: urllib.request.Request, what: str) -> dict[str, object]:
    text = _read_text(request, what)
    try:
        body = json.loads(text)
    except ValueError:
        raise AccessError(f"{what} answered with no JSON") from None
    if not isinstance(body, dict):
        raise AccessError(f"{what} answered with no JSON object")
    return body
