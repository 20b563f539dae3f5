"""`ObjectStore`: the registry's layout in an S3 bucket (`s3://bucket[/prefix]`), through boto3.

Keys are `<prefix>/<task>/<version>/<file>`, `<prefix>/<task>/aliases.json`, ... exactly the directory
layout of `models.registry.store`. Endpoint and credentials come from the standard AWS variables
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), read by boto3.

Every failure to reach the store (refused connection, timeout, a 5xx) is a `StoreUnavailableError`; a
conditional write the store refuses (412) is a `StoreConflictError`. Timeouts are short and retries few:
a replica polls every few seconds and must notice a store that went away, not hang on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from models.registry.errors import InvalidStoreURLError, StoreConflictError, StoreUnavailableError

SCHEMES = ("file", "s3")
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Fetched:
    """An object's bytes and ETag."""

    data: bytes
    etag: str


NOT_MODIFIED = object()  # `get` with the current ETag


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of `s3://bucket[/prefix]`; `InvalidStoreURLError` otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
        raise InvalidStoreURLError(f"invalid store URL {url!r}: use s3://bucket[/prefix] or file:///path "
                                   f"(schemes: {', '.join(SCHEMES)})")
    return parsed.netloc, parsed.path.strip("/")


class ObjectStore:
    """Reads and writes one bucket prefix. Thread-safe (boto3 clients are)."""

    def __init__(self, url: str) -> None:
        import boto3  # imported here: a local store never needs it
        from botocore.config import Config

        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"max_attempts": 2, "mode": "standard"},
                        # S3-compatible servers (rclone, older MinIO) reject the new default checksums
                        request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        # a custom endpoint (MinIO, rclone) serves buckets by path, not by virtual host
                        s3={"addressing_style": "path" if os.environ.get("AWS_ENDPOINT_URL") else "auto"})
        self.client = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                                   config=config)

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def get(self, path: str, etag: str | None = None) -> Fetched | None | object:
        """The object at `path`, None when there is none, `NOT_MODIFIED` when its ETag is still `etag`."""
        kwargs = {"IfNoneMatch": etag} if etag else {}
        with self._errors(path):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.key(path), **kwargs)
            except self.client.exceptions.NoSuchKey:
                return None
            except Exception as exc:
                status = _status(exc)
                if status == 304:
                    return NOT_MODIFIED
                if status == 404:
                    return None
                raise
            return Fetched(response["Body"].read(), response["ETag"])

    def put(self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write `path`; with `if_match`, only while its ETag is that; with `if_absent`, only if it does not
        exist (`StoreConflictError` otherwise, where the store honours conditional writes). Returns the ETag."""
        kwargs: dict[str, str] = {}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        elif if_absent:
            kwargs["IfNoneMatch"] = "*"
        with self._errors(path):
            try:
                response = self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=data, **kwargs)
            except Exception as exc:
                if _status(exc) in (409, 412):
                    raise StoreConflictError(f"{self.url}/{path} changed in the store meanwhile; retry") from exc
                raise
            return str(response["ETag"])

    def delete(self, path: str) -> None:
        with self._errors(path):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def list(self, path: str = "") -> tuple[list[str], dict[str, str]]:
        """(sub-folder names, {file name: ETag}) directly under folder `path` ("" is the prefix itself)."""
        folder = path.strip("/")
        base = self.key(folder) + "/" if folder else (self.prefix + "/" if self.prefix else "")
        folders: list[str] = []
        files: dict[str, str] = {}
        with self._errors(path or "/"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base,
                                                                               Delimiter="/"):
                folders += [p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", [])]
                files.update({o["Key"][len(base):]: o["ETag"] for o in page.get("Contents", [])})
        return sorted(folders), files

    def _errors(self, path: str) -> _Errors:
        return _Errors(f"{self.url}/{path}")


class _Errors:
    """Turns boto3's connection errors and 5xx answers into `StoreUnavailableError`."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        if exc is None or isinstance(exc, (StoreConflictError, StoreUnavailableError)):
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, BotoCoreError) or (isinstance(exc, ClientError) and (_status(exc) or 500) >= 500):
            raise StoreUnavailableError(f"store unreachable ({self.where}): {exc}") from exc
        if isinstance(exc, ClientError):  # 403, a missing bucket: the store's configuration, not this request
            raise StoreUnavailableError(f"store refused {self.where}: {exc}") from exc
        return False


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    if code in ("304", "NotModified"):
        return 304
    if code in ("PreconditionFailed", "412"):
        return 412
    if code in ("NoSuchKey", "404", "NotFound"):
        return 404
    return int(status) if status else None
