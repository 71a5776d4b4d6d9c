"""Ranged S3 reads (``RangedObject``) under moto: the right bytes, few requests, errors named,
the same findings as a local scan."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from detector.analysis.engine import scan_object
from detector.aws import s3
from detector.aws.s3 import RangedObject, S3Store
from detector.core.allowlist import Allowlist
from detector.core.errors import BadObject, ObjectUnreadable
from detector.core.objects import ObjectRef
from tests import lake
from tests.unit.helpers import canonical

BUCKET = "lake"
CI = Allowlist.parse(lake.CI_ROLE)
# Every principal of the synthetic data (all in one account), without a catch-all entry.
EVERYONE = Allowlist.parse(
    f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/*\narn:aws:iam::{lake.ACCOUNT}:*"
)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        c = boto3.client("s3")
        c.create_bucket(Bucket=BUCKET)
        yield c


@pytest.fixture
def ranged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read every object by ranges, however small."""
    monkeypatch.setattr(s3, "SMALL_OBJECT_BYTES", 0)


def put(client: Any, key: str, data: bytes) -> ObjectRef:
    client.put_object(Bucket=BUCKET, Key=key, Body=data)
    return ObjectRef(key=key, bucket=BUCKET, size=len(data))


def lake_object(version: int = 2, rows: int = 40_000, row_group_size: int = 8_000) -> bytes:
    """Several row groups, each holding untrusted and trusted PutImage calls."""
    buf = io.BytesIO()
    cols = lake.synthetic_columns(rows, put_image_fraction=0.02, seed=version)
    lake.write_object(buf, cols, version, row_group_size=row_group_size)
    return buf.getvalue()


DATA = random.Random(1).randbytes(300_000)


# --- the file: bytes, seeks, EOF ----------------------------------------------------------


def test_reads_the_right_bytes_wherever_it_reads(client: Any, ranged: None):
    put(client, "blob", DATA)
    f = RangedObject(client, BUCKET, "blob", size_hint=len(DATA))
    assert f.size() == len(DATA) and f.readable() and f.seekable()
    rng = random.Random(2)
    for _ in range(50):
        start = rng.randrange(len(DATA))
        n = rng.choice([1, 7, 1000, 70_000, 200_000])
        f.seek(start)
        assert f.read(n) == DATA[start : start + n]
        assert f.tell() == min(start + n, len(DATA))


def test_seek_tell_and_end_of_file(client: Any, ranged: None):
    put(client, "blob", DATA)
    f = RangedObject(client, BUCKET, "blob", size_hint=len(DATA))
    assert f.seek(0, io.SEEK_END) == len(DATA)
    assert f.read(10) == b"" and f.read() == b""
    assert f.seek(-4, io.SEEK_END) == len(DATA) - 4
    assert f.read(100) == DATA[-4:]  # clipped at the end
    f.seek(10)
    assert f.seek(5, io.SEEK_CUR) == 15
    assert f.read(3) == DATA[15:18]
    assert f.seek(len(DATA) + 10) == len(DATA) + 10  # past the end: reads nothing
    assert f.read(1) == b""
    with pytest.raises(ValueError, match="negative"):
        f.seek(-1)
    f.seek(len(DATA) - 100_000)
    assert f.read() == DATA[-100_000:]
    buf = bytearray(10)
    f.seek(20)
    assert f.readinto(buf) == 10 and bytes(buf) == DATA[20:30]
    f.close()
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f.read(1)


def test_few_requests_and_only_the_bytes_read(client: Any, ranged: None):
    put(client, "blob", DATA)
    f = RangedObject(client, BUCKET, "blob", size_hint=len(DATA))
    tail = s3.TAIL_BYTES
    assert (f.requests, f.bytes_fetched) == (1, tail)  # the tail, with the footer
    f.seek(len(DATA) - 8)
    f.read(8)
    f.seek(len(DATA) - tail)
    f.read(tail)
    assert f.requests == 1  # served from the tail
    f.seek(10_000)
    assert f.read(150_000) == DATA[10_000:160_000]  # exactly its bytes, in one GET
    assert (f.requests, f.bytes_fetched) == (2, tail + 150_000)
    f.seek(len(DATA) - tail - 10)
    assert f.read(20) == DATA[-tail - 10 : -tail + 10]  # across into the tail
    assert (f.requests, f.bytes_fetched) == (3, tail + 150_000 + 10)


@pytest.mark.parametrize("size_hint", [len(DATA), None], ids=["size-known", "size-unknown"])
def test_a_small_object_is_one_get(client: Any, size_hint: int | None):
    put(client, "blob", DATA)
    store = S3Store(client)
    f = store.open(ObjectRef(key="blob", bucket=BUCKET, size=size_hint))
    assert f.read() == DATA
    f.seek(12345)
    assert f.read(10) == DATA[12345:12355]
    assert (store.stats.requests, store.stats.bytes) == (1, len(DATA))


def test_a_stale_size_hint_does_not_matter(client: Any):
    put(client, "blob", DATA)
    f = RangedObject(client, BUCKET, "blob", size_hint=10)  # the notification said 10 bytes
    assert f.size() == len(DATA) and f.read() == DATA


@pytest.mark.parametrize("size_hint", [0, None])
def test_an_empty_object_is_named_empty(client: Any, size_hint: int | None):
    put(client, "empty.parquet", b"")
    f = S3Store(client).open(ObjectRef(key="empty.parquet", bucket=BUCKET, size=size_hint))
    with pytest.raises(BadObject, match="empty"):
        scan_object(f, "empty.parquet", CI)


# --- errors ---------------------------------------------------------------------------------


def test_missing_object_is_unreadable_with_its_code(client: Any):
    with pytest.raises(ObjectUnreadable) as info:
        S3Store(client).open(ObjectRef(key="nope.parquet", bucket=BUCKET, size=10_000_000))
    assert info.value.code == "NoSuchKey"


def test_object_deleted_while_being_read_is_unreadable_not_corrupt(client: Any, ranged: None):
    ref = put(client, "a.parquet", lake_object())
    f = S3Store(client).open(ref)
    client.delete_object(Bucket=BUCKET, Key=ref.key)
    with pytest.raises(ObjectUnreadable) as info:
        scan_object(f, ref.uri, CI)  # the ranged GETs run inside pyarrow's reader
    assert info.value.code == "NoSuchKey"


def test_object_replaced_while_being_read_is_not_mixed(client: Any, ranged: None):
    data = lake_object()
    ref = put(client, "a.parquet", data)
    f = S3Store(client).open(ref)
    client.put_object(Bucket=BUCKET, Key=ref.key, Body=lake_object(rows=30_000))
    with pytest.raises(ObjectUnreadable) as info:
        scan_object(f, ref.uri, CI)
    assert info.value.code == "PreconditionFailed"  # If-Match with the first GET's ETag


class DeniedAfterFirst:
    """A client whose first GET works and every later one is denied."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if len(self.calls) > 1:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "GetObject")
        return self.real.get_object(**kwargs)


def test_access_denied_on_a_ranged_get_is_unreadable_with_its_code(client: Any, ranged: None):
    put(client, "blob", DATA)
    denying = DeniedAfterFirst(client)
    f = RangedObject(denying, BUCKET, "blob", size_hint=len(DATA))
    with pytest.raises(ObjectUnreadable) as info:
        f.read(10)
    assert info.value.code == "AccessDenied"
    assert "IfMatch" not in denying.calls[0] and denying.calls[1]["IfMatch"]


# --- scanning through it --------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("allowlist", [CI, Allowlist.of([])], ids=["ci", "nobody"])
def test_scan_over_s3_finds_what_a_local_scan_finds(
    client: Any, ranged: None, version: int, allowlist: Allowlist
):
    data = lake_object(version)
    ref = put(client, lake.key_for(version), data)
    store = S3Store(client)
    remote = scan_object(store.open(ref), ref.uri, allowlist, key=ref.key)
    local = scan_object(io.BytesIO(data), ref.uri, allowlist, key=ref.key)
    assert remote.aggregate.findings()  # something to compare
    assert canonical(remote.aggregate.findings()) == canonical(local.aggregate.findings())
    assert remote.stats == local.stats
    assert store.stats.requests > 1


@pytest.mark.parametrize("version", [1, 2])
def test_trusting_everyone_fetches_a_fraction_of_the_object(
    client: Any, ranged: None, version: int
):
    data = lake_object(version)
    ref = put(client, lake.key_for(version), data)
    store = S3Store(client)
    result = scan_object(store.open(ref), ref.uri, EVERYONE, key=ref.key)
    assert result.stats.matched > 0 and result.stats.trusted == result.stats.matched
    # Only api.operation and the trust columns are read: far less than the object.
    assert store.stats.bytes < 0.5 * len(data)
