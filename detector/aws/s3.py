"""S3 adapter: list Security Lake objects and read them, fetching only the bytes the reader needs.

A small object is fetched whole in one GET. A large one is read through ``RangedObject``: one
GET of its tail (the Parquet footer), then a ranged GET for each byte range the reader asks for.
The reader reads only a few column chunks (and those only for row groups that need them), so a
large object costs a fraction of its bytes. Ranged GETs go through boto3 like every other call,
so credentials, retries, ``AWS_ENDPOINT_URL`` and moto work as for the rest of the detector.

Every GET is pinned to the object announced: ``If-Match`` with the announced ETag (from the
first GET when none was announced) and ``VersionId`` when the notification names a version. An
object overwritten since its announcement is not read under the old announcement's name: S3
answers 412 and the read fails with ``ObjectChanged`` (the item is retried, then dead-lettered;
the overwrite has an announcement of its own, which reads the new content).
"""

from __future__ import annotations

import builtins
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, cast

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from detector.core.errors import ObjectChanged, ObjectUnreadable, SourceUnavailable
from detector.core.objects import ObjectRef, is_data_key

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mypy_boto3_s3 import S3Client

# Up to this size an object is fetched whole in one GET; above it, by ranges. Measured with
# benchmarks/s3_cutover.py (moto's server, 2-core x86, objects of 0.1-34 MB, one row group):
# - moto as it is (~10 ms a request, no bandwidth limit): one GET is faster at every size;
# - with 20 ms per GET and 80 MB/s per connection added (S3-like; assumed, not measured), an
#   object whose row groups hold no untrusted push (only 4 ranges read, 5 % of the bytes):
#   one GET faster up to 5.5 MB (124 vs 143 ms), ranged from 9.5 MB (163 vs 182 ms; 17.6 MB:
#   173 vs 308 ms); an object with untrusted pushes everywhere (9-11 ranges, 47 %): one GET
#   faster at every size measured (34 MB: 957 vs 1322 ms).
# So 8 MiB: where ranges start to pay off in the common case; below it, one GET; and a whole
# object held in memory stays small (at most 4 objects at once, see pipeline.py).
SMALL_OBJECT_BYTES = 8 * 1024 * 1024
# The first GET of a large object: its last bytes, holding the footer. pyarrow reads the last
# 64 KiB first; a footer is tens of KB (4 row groups x 59 columns: 36 KB).
TAIL_BYTES = 64 * 1024
# No read-ahead beyond what is asked: with pre-buffering, pyarrow already asks for whole column
# chunks, adjacent ones coalesced per row group. Measured on tests.lake objects of 5 and 4 row
# groups: a 64 KiB read-ahead saved no request and fetched up to 2.7x the bytes (4 KiB: no
# request saved, +2 % bytes).


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix)."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceUnavailable(f"{uri}: no bucket name")
    return bucket, prefix


@dataclass
class FetchStats:
    """GET requests made and bytes received, summed over objects (thread-safe)."""

    requests: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, n_bytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += n_bytes


class RangedObject(io.RawIOBase):
    """One S3 object as a read-only, seekable file that GETs only the byte ranges read from it.

    The first GET fetches the tail: the whole object when ``size_hint`` says it is small (or
    when it turns out to be), else the last ``TAIL_BYTES``. It also tells the size and the ETag.
    ``etag`` (the announced ETag) pins the first GET too: an object that is no longer the one
    announced is not read (``ObjectChanged``). Later GETs carry ``If-Match`` with the ETag, so
    an object replaced while being read fails (``ObjectChanged``) instead of mixing two
    versions. ``version_id`` (the announced version) is asked for by every GET. Memory held:
    the tail, whatever the object's size; other ranges are handed to the reader, not kept.

    Any failed GET raises ``ObjectUnreadable`` with the S3 error code (e.g. ``NoSuchKey``;
    ``PreconditionFailed`` as ``ObjectChanged``).
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        size_hint: int | None = None,
        stats: FetchStats | None = None,
        etag: str | None = None,
        version_id: str | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self.uri = f"s3://{bucket}/{key}"
        self.requests = 0
        self.bytes_fetched = 0
        self._stats = stats
        self._announced = _quoted(etag)
        self._etag: str | None = self._announced
        self._version_id = version_id or None
        self._pos = 0
        if size_hint is None:
            first = SMALL_OBJECT_BYTES  # one GET if it is small after all
        elif size_hint <= SMALL_OBJECT_BYTES:
            first = size_hint
        else:
            first = TAIL_BYTES
        self._size, tail_start, tail = self._first_get(first)
        self._tail = (tail_start, tail)

    # -- file protocol ---------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    @property
    def etag(self) -> str | None:
        """The object's ETag, from the first GET (None if S3 sent none)."""
        return self._etag

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed RangedObject")
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._bytes(self._pos, end)
        self._pos = end
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._tail = (self._size, b"")
        super().close()

    # -- fetching --------------------------------------------------------------------------

    def _bytes(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (within the object), from memory or by one ranged GET."""
        tail_start, tail = self._tail
        if start >= tail_start:  # the tail runs to the end of the object
            return tail[start - tail_start : end - tail_start]
        data = self._get(start, min(end, tail_start))
        if end > tail_start:  # runs into the tail: fetched up to it, the rest is in memory
            return data + tail[: end - tail_start]
        return data

    def _get(self, start: int, stop: int) -> bytes:
        """One ranged GET of ``[start, stop)``, pinned to the ETag of the first GET."""
        args = self._pinned() | {"Range": f"bytes={start}-{stop - 1}"}
        data, _ = self._request(args)
        if len(data) != stop - start:
            raise ObjectUnreadable(
                self.uri,
                f"asked for bytes {start}-{stop - 1}, got {len(data)} bytes",
                code="ShortRead",
            )
        return data

    def _first_get(self, length: int) -> tuple[int, int, bytes]:
        """(object size, where the fetched tail starts, the tail) from one GET."""
        args = self._pinned()
        if length <= 0:
            data, resp = self._request(args)  # an empty object: no range to ask for
        else:
            try:
                data, resp = self._request(args | {"Range": f"bytes=-{length}"})
            except ObjectUnreadable as exc:
                if exc.code != "InvalidRange":  # S3's answer to any range of an empty object
                    raise
                data, resp = self._request(args)
        self._etag = resp.get("ETag") or self._announced
        content_range = resp.get("ContentRange")  # "bytes 100-199/200"
        if not content_range:  # the whole object (200 instead of 206)
            return len(data), 0, data
        span, _, total = content_range.removeprefix("bytes ").partition("/")
        start = int(span.partition("-")[0])
        return int(total), start, data

    def _pinned(self) -> dict[str, Any]:
        """A GET's arguments naming this object: its version, if announced, and its ETag."""
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key}
        if self._version_id is not None:
            args["VersionId"] = self._version_id
        if self._etag is not None:
            args["IfMatch"] = self._etag
        return args

    def _request(self, args: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        try:
            resp = cast("dict[str, Any]", self._client.get_object(**args))
            data = resp["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "PreconditionFailed":
                raise ObjectChanged(self.uri, self._changed()) from exc
            raise ObjectUnreadable(self.uri, _reason(exc), code=_code(exc)) from exc
        self.requests += 1
        self.bytes_fetched += len(data)
        if self._stats is not None:
            self._stats.add(len(data))
        return data, resp

    def _changed(self) -> str:
        version = f", version {self._version_id}" if self._version_id is not None else ""
        if self.requests == 0 and self._announced is not None:
            return (
                f"changed since it was announced: S3 no longer holds ETag {self._announced}"
                f"{version} (PreconditionFailed), so it was not read. Retrying cannot succeed; "
                "the object written over it is announced with its own ETag and read then"
            )
        return (
            f"changed while being read: S3 no longer holds ETag {self._etag}{version} of its "
            "first read (PreconditionFailed); nothing read from it counts"
        )


def _quoted(etag: str | None) -> str | None:
    """An ETag as S3 sends it (quoted), however the notification wrote it; None if empty."""
    bare = (etag or "").strip().strip('"')
    return f'"{bare}"' if bare else None


class S3Store:
    def __init__(self, client: S3Client | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.stats = FetchStats()

    @property
    def client(self) -> S3Client:
        # Objects are read from several threads; building a boto3 client is not thread-safe.
        with self._lock:
            if self._client is None:
                self._client = boto3.client("s3")
            return self._client

    def list(
        self, uri: str, select: Callable[[str], bool | None] | None = None
    ) -> Iterator[ObjectRef]:
        """Data objects under an ``s3://bucket/prefix``: every key under it in one listing, or
        with ``select`` only the "folders" it keeps.

        ``select(folder)`` (a key prefix ending in ``/``, such as ``…/region=us-east-1/``) says
        for the prefix (when it ends in ``/``) and each folder met whether to skip it (False),
        list every object under it (True), or list it level by level (None: one listing with
        ``Delimiter='/'`` gives its objects and its folders, each then asked about). So only the
        partitions asked for are listed, not the whole history. Objects met on the way, beside
        folders, are listed too: the caller filters them.
        """
        bucket, prefix = parse_uri(uri)
        try:
            if select is None:
                yield from self._listing(bucket, prefix)
                return
            stack: list[tuple[str, bool | None]] = [
                (prefix, select(prefix) if prefix.endswith("/") else None)
            ]
            while stack:
                level, verdict = stack.pop()
                if verdict is True:
                    yield from self._listing(bucket, level)
                elif verdict is None:
                    folders: list[str] = []
                    yield from self._listing(bucket, level, folders)
                    # In listing order (the stack is last in, first out).
                    stack.extend((f, select(f)) for f in reversed(folders))
        except (ClientError, BotoCoreError) as exc:
            raise SourceUnavailable(f"{uri}: cannot list: {_reason(exc)}") from exc

    def _listing(
        self, bucket: str, prefix: str, folders: builtins.list[str] | None = None
    ) -> Iterator[ObjectRef]:
        """The data objects of one listing of ``prefix``: every key under it, or with
        ``folders`` one level (``Delimiter='/'``), whose folders are added to ``folders``."""
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if folders is not None:
            args["Delimiter"] = "/"
        for page in self.client.get_paginator("list_objects_v2").paginate(**args):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if is_data_key(key):
                    yield ObjectRef(
                        key=key, bucket=bucket, size=obj.get("Size"), etag=obj.get("ETag")
                    )
            if folders is not None:
                folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))

    def open(self, ref: ObjectRef) -> IO[bytes]:
        """The object as a seekable file: one GET when small, else ranges as they are read;
        every GET pinned to ``ref.etag`` and ``ref.version_id`` when given.

        Raises ``ObjectUnreadable`` (with the S3 error code; ``ObjectChanged`` when the object
        is not the one announced) when the first GET fails; a later ranged GET raises it from
        inside the Parquet reader.
        """
        assert ref.bucket is not None
        ranged = RangedObject(
            self.client,
            ref.bucket,
            ref.key,
            size_hint=ref.size,
            stats=self.stats,
            etag=ref.etag,
            version_id=ref.version_id,
        )
        return cast("IO[bytes]", ranged)


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}".strip(": ")
    return " ".join(str(exc).split())[:300]
