"""S3 adapter: list Security Lake objects and fetch them for reading."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from detector.errors import ObjectUnreadable, SourceUnavailable
from detector.objects import ObjectRef, is_data_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Objects up to this size stay in memory; bigger ones spill to /tmp so memory stays bounded.
SPOOL_BYTES = 32 * 1024 * 1024
_CHUNK = 1024 * 1024


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix)."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceUnavailable(f"{uri}: no bucket name")
    return bucket, prefix


class S3Store:
    def __init__(self, client: S3Client | None = None) -> None:
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = boto3.client("s3")
        return self._client

    def list(self, uri: str) -> Iterator[ObjectRef]:
        """Data objects under an ``s3://bucket/prefix``."""
        bucket, prefix = parse_uri(uri)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if is_data_key(key):
                        yield ObjectRef(
                            key=key, bucket=bucket, size=obj.get("Size"), etag=obj.get("ETag")
                        )
        except (ClientError, BotoCoreError) as exc:
            raise SourceUnavailable(f"{uri}: cannot list: {_reason(exc)}") from exc

    def open(self, ref: ObjectRef) -> IO[bytes]:
        """The object's bytes as a seekable file (in memory when small, else in /tmp)."""
        assert ref.bucket is not None
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        try:
            body = self.client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                spool.write(chunk)
            spool.seek(0)
        except (ClientError, BotoCoreError) as exc:
            spool.close()
            raise ObjectUnreadable(ref.uri, _reason(exc), code=_code(exc)) from exc
        return spool


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}".strip(": ")
    return " ".join(str(exc).split())[:300]
