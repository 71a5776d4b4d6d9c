"""References to Security Lake objects, wherever they live, and which keys are data files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectRef:
    """One object to scan: an S3 object (``bucket`` set) or a local file (``bucket`` None)."""

    key: str
    bucket: str | None = None
    size: int | None = None
    etag: str | None = None
    # The version announced (versioned buckets only): the one read, whatever is written after.
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket is not None else self.key


def is_data_key(key: str) -> bool:
    """Parquet data files only: not Iceberg ``metadata/`` files, manifests or markers."""
    if "/metadata/" in f"/{key}" or key.endswith("/"):
        return False
    name = key.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and not name.startswith(("_", "."))
