"""The write side of the three object stores, through the clouds' own SDKs (the cloud extra).

Each SDK is imported inside the adapter that uses it, so `llmctl --help` never loads one. The
adapters do four things: say whether the bucket exists, create it in a region, read a small
object, and upload a file (multipart/resumable/blocks, in parallel, as each SDK does best).
Endpoints follow each SDK's own overrides, which the tests point at moto, fake-gcs-server and
Azurite: `AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`, `AZURE_STORAGE_CONNECTION_STRING`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from llmctl.errors import LlmctlError
from llmctl.extras import missing_extra
from llmctl.modelstore.locations import StoreLocation

UPLOAD_CONCURRENCY = 8
PART_BYTES = 64 * 1024 * 1024


class StoreError(LlmctlError):
    """A store refused or failed a request: the message names the store and what it said."""


class Store(Protocol):
    def bucket_exists(self) -> bool: ...
    def create_bucket(self) -> None: ...
    def read_text(self, key: str) -> str | None: ...
    def object_size(self, key: str) -> int | None: ...
    def upload_file(self, path: Path, key: str) -> None: ...
    def put_text(self, key: str, text: str) -> None: ...


def open_store(
    location: StoreLocation, region: str, project: str | None, env: Mapping[str, str] | None = None
) -> Store:
    env = os.environ if env is None else env
    if location.scheme == "s3":
        return S3Store(location.bucket, region)
    if location.scheme == "gs":
        return GcsStore(location.bucket, region, project)
    return AzureBlobStore(location.account, location.bucket, env)


class S3Store:
    def __init__(self, bucket: str, region: str) -> None:
        try:
            import boto3
            from boto3.exceptions import S3UploadFailedError
            from boto3.s3.transfer import TransferConfig
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise missing_extra("cloud", exc.name or "boto3", "S3 model stores") from None
        self.bucket, self.region = bucket, region
        # A session of its own: boto3's default session keeps the first credentials it resolved
        # for the life of the process, so a second store with other credentials would use them.
        self.client = boto3.session.Session().client("s3", region_name=region)
        self.transfer = TransferConfig(
            multipart_chunksize=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY
        )
        self.errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
        self.upload_errors = (*self.errors, S3UploadFailedError)

    def _code(self, exc: Exception) -> str:
        response: dict[str, Any] = getattr(exc, "response", {}) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def _fail(self, what: str, exc: Exception) -> StoreError:
        return StoreError(
            f"S3 {what} on bucket {self.bucket} failed: {exc}",
            hint="check the AWS credentials (aws sts get-caller-identity) and the region",
        )

    def bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except self.errors as exc:
            if self._code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise self._fail("HeadBucket", exc) from None

    def create_bucket(self) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # S3 refuses us-east-1 as a LocationConstraint
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**args)
            # Never public: the pods read through their workload identity.
            self.client.put_public_access_block(
                Bucket=self.bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
        except self.errors as exc:
            raise self._fail("CreateBucket", exc) from None

    def read_text(self, key: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(4096)
        except self.errors as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"GetObject {key}", exc) from None
        return bytes(body).decode("utf-8", "replace")

    def object_size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self.errors as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"HeadObject {key}", exc) from None

    def upload_file(self, path: Path, key: str) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, key, Config=self.transfer)
        except self.upload_errors as exc:
            raise self._fail(f"upload of {key}", exc) from None

    def put_text(self, key: str, text: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=text.encode(), ContentType="text/plain"
            )
        except self.errors as exc:
            raise self._fail(f"PutObject {key}", exc) from None


class GcsStore:
    def __init__(self, bucket: str, region: str, project: str | None) -> None:
        try:
            from google.api_core import exceptions
            from google.auth.exceptions import GoogleAuthError
            from google.cloud import storage
            from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
        except ImportError as exc:
            raise missing_extra(
                "cloud", exc.name or "google-cloud-storage", "GCS model stores"
            ) from None
        self.bucket_name, self.region = bucket, region
        self.not_found = exceptions.NotFound
        # Uploads and downloads raise the media layer's own errors, not GoogleAPIError.
        self.errors: tuple[type[Exception], ...] = (
            exceptions.GoogleAPIError,
            GoogleAuthError,
            InvalidResponse,
            DataCorruption,
        )
        try:
            self.client = storage.Client(project=project)
        except Exception as exc:  # google.auth's DefaultCredentialsError and friends
            raise StoreError(
                f"no Google Cloud credentials for GCS: {exc}",
                hint="run `gcloud auth application-default login`, or set "
                "GOOGLE_APPLICATION_CREDENTIALS",
            ) from None
        self.bucket = self.client.bucket(bucket)
        self.chunk_bytes = PART_BYTES

    def _fail(self, what: str, exc: Exception) -> StoreError:
        return StoreError(
            f"GCS {what} on bucket {self.bucket_name} failed: {exc}",
            hint="check the Google credentials and that the project is right (--project)",
        )

    def bucket_exists(self) -> bool:
        try:
            return bool(self.bucket.exists())
        except self.errors as exc:
            raise self._fail("bucket lookup", exc) from None

    def create_bucket(self) -> None:
        try:
            self.bucket.iam_configuration.uniform_bucket_level_access_enabled = True
            self.bucket.iam_configuration.public_access_prevention = "enforced"
            self.client.create_bucket(self.bucket, location=self.region)
        except self.errors as exc:
            raise self._fail("bucket creation", exc) from None

    def read_text(self, key: str) -> str | None:
        try:
            return str(self.bucket.blob(key).download_as_text())
        except self.not_found:
            return None
        except self.errors as exc:
            raise self._fail(f"read of {key}", exc) from None

    def object_size(self, key: str) -> int | None:
        try:
            blob = self.bucket.get_blob(key)
        except self.errors as exc:
            raise self._fail(f"lookup of {key}", exc) from None
        return None if blob is None else int(blob.size)

    def upload_file(self, path: Path, key: str) -> None:
        # A resumable upload in 64 MiB chunks: it survives a dropped connection, and the
        # emulators speak it (the XML multipart API of parallel uploads is GCS's alone).
        try:
            blob = self.bucket.blob(key, chunk_size=self.chunk_bytes)
            blob.upload_from_filename(str(path), content_type="application/octet-stream")
        except self.errors as exc:
            raise self._fail(f"upload of {key}", exc) from None

    def put_text(self, key: str, text: str) -> None:
        try:
            self.bucket.blob(key).upload_from_string(text, content_type="text/plain")
        except self.errors as exc:
            raise self._fail(f"write of {key}", exc) from None


class AzureBlobStore:
    def __init__(self, account: str, container: str, env: Mapping[str, str]) -> None:
        try:
            from azure.core.exceptions import AzureError, ResourceNotFoundError
            from azure.storage.blob import BlobServiceClient
        except ImportError as exc:
            raise missing_extra(
                "cloud", exc.name or "azure-storage-blob", "Azure model stores"
            ) from None
        self.account, self.container_name = account, container
        self.not_found = ResourceNotFoundError
        self.errors: tuple[type[Exception], ...] = (AzureError,)
        connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string)
        else:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(
                f"https://{account}.blob.core.windows.net", credential=DefaultAzureCredential()
            )
        self.container = service.get_container_client(container)

    def _fail(self, what: str, exc: Exception) -> StoreError:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreError(
            f"Azure Blob {what} in {self.account}/{self.container_name} failed: {message}",
            hint="sign in with `az login` (the role Storage Blob Data Contributor on the account)",
        )

    def bucket_exists(self) -> bool:
        try:
            return bool(self.container.exists())
        except self.errors as exc:
            raise self._fail("container lookup", exc) from None

    def create_bucket(self) -> None:
        try:
            self.container.create_container()  # private: no public access level
        except self.errors as exc:
            raise self._fail("container creation", exc) from None

    def read_text(self, key: str) -> str | None:
        try:
            return bytes(self.container.download_blob(key).readall()).decode("utf-8", "replace")
        except self.not_found:
            return None
        except self.errors as exc:
            raise self._fail(f"read of {key}", exc) from None

    def object_size(self, key: str) -> int | None:
        try:
            return int(self.container.get_blob_client(key).get_blob_properties().size)
        except self.not_found:
            return None
        except self.errors as exc:
            raise self._fail(f"lookup of {key}", exc) from None

    def upload_file(self, path: Path, key: str) -> None:
        try:
            with path.open("rb") as data:
                self.container.upload_blob(
                    key, data, overwrite=True, max_concurrency=UPLOAD_CONCURRENCY
                )
        except self.errors as exc:
            raise self._fail(f"upload of {key}", exc) from None

    def put_text(self, key: str, text: str) -> None:
        try:
            self.container.upload_blob(key, text.encode(), overwrite=True)
        except self.errors as exc:
            raise self._fail(f"write of {key}", exc) from None
