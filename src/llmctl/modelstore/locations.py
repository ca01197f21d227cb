"""Where a model lives in an object store: store URIs and the object names llmctl uses.

Pure, standard library only (the pod's fetcher imports it). A store URI names one object:

    s3://BUCKET/KEY                  Amazon S3
    gs://BUCKET/OBJECT               Google Cloud Storage
    azure://ACCOUNT/CONTAINER/BLOB   Azure Blob Storage

The model's sha256 is kept beside it, in an object of the same name plus `.sha256`, written the
way `sha256sum` writes it (`<hex>  <filename>`), so a person can check a copy with the tool they
already have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

SCHEMES = ("s3", "gs", "azure")
SHA256_SUFFIX = ".sha256"
# Every model llmctl pushes lives under this prefix, one folder per model name.
KEY_PREFIX = "llmctl/models"

# The clouds' own naming rules, checked before any request is made.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")  # S3 and GCS (GCS also allows _)
_CONTAINER = re.compile(r"^[a-z0-9](-?[a-z0-9]){2,62}$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_SHA256 = re.compile(r"^[a-f0-9]{64}$")


class LocationError(ValueError):
    """A store URI or name that cannot be right; the message says which rule it breaks."""


@dataclass(frozen=True)
class StoreLocation:
    scheme: str  # s3, gs or azure
    bucket: str  # the S3/GCS bucket, or the Azure container
    key: str  # the object name inside it
    account: str = ""  # Azure only: the storage account

    @property
    def uri(self) -> str:
        if self.scheme == "azure":
            return f"azure://{self.account}/{self.bucket}/{self.key}"
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def sha256_location(self) -> StoreLocation:
        return replace(self, key=self.key + SHA256_SUFFIX)

    def __str__(self) -> str:
        return self.uri


def is_store_uri(uri: str) -> bool:
    return uri.split("://", 1)[0] in SCHEMES and "://" in uri


def parse_store_uri(uri: str) -> StoreLocation:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise LocationError(
            f"{uri!r} is not a model store URI: it must start with s3://, gs:// or azure://"
        )
    if scheme == "azure":
        account, _, rest = rest.partition("/")
        check_account(account)
    else:
        account = ""
    bucket, _, key = rest.partition("/")
    if scheme == "azure":
        check_container(bucket)
    else:
        check_bucket(bucket)
    if not key or key.endswith("/"):
        raise LocationError(f"{uri!r} names no object: add the object's name after the bucket")
    return StoreLocation(scheme=scheme, bucket=bucket, key=key, account=account)


def check_bucket(name: str) -> str:
    if not _BUCKET.match(name) or ".." in name:
        raise LocationError(
            f"bucket name {name!r} is not valid: 3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit"
        )
    return name


def check_container(name: str) -> str:
    if not _CONTAINER.match(name):
        raise LocationError(
            f"Azure container name {name!r} is not valid: 3-63 lowercase letters, digits and "
            "single hyphens, starting and ending with a letter or digit"
        )
    return name


def check_account(name: str) -> str:
    if not _ACCOUNT.match(name):
        raise LocationError(
            f"Azure storage account name {name!r} is not valid: 3-24 lowercase letters and digits"
        )
    return name


def model_location(
    scheme: str, bucket: str, model_name: str, filename: str, account: str = ""
) -> StoreLocation:
    """Where `llmctl model push` puts a model: one folder per model name, the file's own name."""
    location = StoreLocation(
        scheme=scheme, bucket=bucket, key=f"{KEY_PREFIX}/{model_name}/{filename}", account=account
    )
    return parse_store_uri(location.uri)  # the same checks as a hand-written URI


def sha256_line(digest: str, filename: str) -> str:
    """The `.sha256` object's text, in `sha256sum`'s format."""
    return f"{digest}  {filename}\n"


def parse_sha256_line(text: str) -> str:
    """The digest from a `.sha256` object; raises LocationError when it holds none."""
    digest = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    if not _SHA256.match(digest):
        raise LocationError(f"not a sha256 digest: {text.strip()[:80]!r}")
    return digest
