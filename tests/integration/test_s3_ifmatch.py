"""Every GET is pinned to the object announced ("Trust under attack, round two", item B1).

An object overwritten between its announcement and its read used to be counted, new content
under the old announcement. Now every GET carries ``If-Match`` with the announced ETag (and
``VersionId`` when the notification names a version): S3 answers 412 and the read fails with
``ObjectChanged``, naming the object and saying it changed since it was announced; the item
fails (retried, then dead-lettered). In a versioned bucket the announced version is read,
whatever was written over it. moto honours ``If-Match`` and ``VersionId`` on GetObject,
ranged or not (``moto/s3/responses.py``: ``_get_key``), as S3 does.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from detector import handler
from detector.analysis.engine import scan_object
from detector.aws import s3
from detector.aws.s3 import S3Store
from detector.core.allowlist import Allowlist
from detector.core.errors import ObjectChanged, ObjectUnreadable
from detector.core.objects import ObjectRef
from detector.lake.notifications import parse
from tests import lake
from tests.integration.world import BUCKET as WORLD_BUCKET
from tests.integration.world import INTRUDER, Aws, Context
from tests.unit.helpers import canonical

BUCKET = "lake"
KEY = lake.key_for(2, name="pinned")
CI = Allowlist.parse(lake.CI_ROLE)
SIZES = pytest.mark.parametrize("ranged", [False, True], ids=["one-get", "ranged"])


def lake_object(intruders: int, rows: int = 4_000) -> bytes:
    """Two row groups of CI pushes, ``intruders`` of them by an unknown caller."""
    events = [
        lake.event(
            time_ms=lake.T0_MS + i,
            event_uid=f"e{i}",
            **({"arn": INTRUDER, "session_issuer": None} if i < intruders else {}),
        )
        for i in range(rows)
    ]
    buf = io.BytesIO()
    lake.write_object(buf, events, 2, row_group_size=rows // 2)
    return buf.getvalue()


OLD, NEW = lake_object(3), lake_object(7)


class Recording:
    """A client recording the arguments of every GetObject."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gets: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs)
        return self.real.get_object(**kwargs)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        c = boto3.client("s3")
        c.create_bucket(Bucket=BUCKET)
        yield c


@pytest.fixture(params=[False, True], ids=["one-get", "ranged"])
def ranged(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param:
        monkeypatch.setattr(s3, "SMALL_OBJECT_BYTES", 0)  # every object read by ranges
    return bool(request.param)


def put(client: Any, data: bytes) -> tuple[str, str | None]:
    """(ETag as S3 sends it, version id) of ``data`` written at KEY."""
    resp = client.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    return resp["ETag"], resp.get("VersionId")


def intruder_calls(client: Any, ref: ObjectRef) -> int:
    f = S3Store(client).open(ref)
    return sum(f.count for f in scan_object(f, ref.uri, CI, key=ref.key).findings())


@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "bare"])
def test_every_get_is_pinned_to_the_announced_etag(client: Any, ranged: bool, quoted: bool):
    etag, _ = put(client, OLD)
    announced = etag if quoted else etag.strip('"')  # notifications send it bare
    recording = Recording(client)
    ref = ObjectRef(key=KEY, bucket=BUCKET, size=len(OLD), etag=announced)
    f = S3Store(recording).open(ref)
    assert sum(x.count for x in scan_object(f, ref.uri, CI).findings()) == 3
    assert len(recording.gets) > (2 if ranged else 0)
    assert all(g["IfMatch"] == etag and "VersionId" not in g for g in recording.gets)


def test_an_object_overwritten_after_its_announcement_is_not_read(client: Any, ranged: bool):
    etag, _ = put(client, OLD)
    put(client, NEW)  # written over before the announcement of OLD is read
    store = S3Store(client)
    ref = ObjectRef(key=KEY, bucket=BUCKET, size=len(OLD), etag=etag.strip('"'))
    with pytest.raises(ObjectChanged) as info:
        store.open(ref)
    exc = info.value
    assert isinstance(exc, ObjectUnreadable) and exc.code == "PreconditionFailed"
    assert exc.name == ref.uri
    message = str(exc)
    assert message.startswith(f"{ref.uri}: changed since it was announced: ")
    assert etag in message and "Retrying cannot succeed" in message and "\n" not in message
    assert store.stats.bytes == 0  # nothing of the new content was fetched


def test_an_object_replaced_while_being_read_fails_named(client: Any, monkeypatch):
    monkeypatch.setattr(s3, "SMALL_OBJECT_BYTES", 0)
    etag, _ = put(client, OLD)
    ref = ObjectRef(key=KEY, bucket=BUCKET, size=len(OLD), etag=etag.strip('"'))
    f = S3Store(client).open(ref)  # the footer, from the announced object
    put(client, NEW)
    with pytest.raises(ObjectChanged) as info:
        scan_object(f, ref.uri, CI)  # the column chunks, by ranged GETs inside pyarrow
    assert str(info.value).startswith(f"{ref.uri}: changed while being read: ")


def test_without_an_announced_etag_the_first_get_pins_the_rest(client: Any, monkeypatch):
    monkeypatch.setattr(s3, "SMALL_OBJECT_BYTES", 0)
    etag, _ = put(client, OLD)
    recording = Recording(client)
    ref = ObjectRef(key=KEY, bucket=BUCKET, size=len(OLD))
    assert intruder_calls(recording, ref) == 3
    first, *rest = recording.gets
    assert "IfMatch" not in first and rest
    assert all(g["IfMatch"] == etag for g in rest)


def test_in_a_versioned_bucket_the_announced_version_is_read(client: Any, ranged: bool):
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    etag, version = put(client, OLD)
    assert version
    put(client, NEW)
    recording = Recording(client)
    ref = ObjectRef(KEY, BUCKET, len(OLD), etag.strip('"'), version_id=version)
    assert intruder_calls(recording, ref) == 3  # OLD's calls, not NEW's
    assert all(g["VersionId"] == version and g["IfMatch"] == etag for g in recording.gets)
    local = scan_object(io.BytesIO(OLD), ref.uri, CI, key=KEY).findings()
    assert canonical(scan_object(S3Store(client).open(ref), ref.uri, CI).findings()) == (
        canonical(local)
    )
    # The same announcement without its version: the object there now is another one.
    with pytest.raises(ObjectChanged):
        S3Store(client).open(ObjectRef(KEY, BUCKET, len(OLD), etag.strip('"')))


def test_notifications_carry_the_version_to_the_read():
    detail = {
        "bucket": {"name": BUCKET},
        "object": {"key": KEY, "size": 10, "etag": "abc", "version-id": "v-eb"},
    }
    eventbridge = {"source": "aws.s3", "detail-type": "Object Created", "detail": detail}
    record = {
        "eventSource": "aws:s3",
        "s3": {
            "bucket": {"name": BUCKET},
            "object": {"key": KEY, "size": 10, "eTag": "abc", "versionId": "v-s3"},
        },
    }
    sqs = {
        "Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": json.dumps(eventbridge)},
            {
                "messageId": "m2",
                "eventSource": "aws:sqs",
                "body": json.dumps({"Records": [record]}),
            },
        ]
    }
    refs = [ref for item in parse(sqs).items for ref in item.refs]
    assert [(r.etag, r.version_id) for r in refs] == [("abc", "v-eb"), ("abc", "v-s3")]
    assert parse(eventbridge).items[0].refs[0].version_id == "v-eb"
    unversioned = json.loads(json.dumps(record))
    del unversioned["s3"]["object"]["versionId"]
    assert parse({"Records": [unversioned]}).items[0].refs[0].version_id is None
    odd = json.loads(json.dumps(detail))
    odd["object"].update({"version-id": 7, "etag": '""'})  # not text, empty: not announced
    ref = parse({"source": "aws.s3", "detail": odd}).items[0].refs[0]
    assert (ref.etag, ref.version_id) == (None, None)


# --- through the handler ---------------------------------------------------------------------


def sqs_record(key: str, etag: str, message_id: str, version: str | None = None) -> dict:
    obj: dict[str, Any] = {"key": key, "size": 1000, "etag": etag.strip('"')}
    if version is not None:
        obj["version-id"] = version
    body = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": WORLD_BUCKET}, "object": obj},
    }
    return {"messageId": message_id, "eventSource": "aws:sqs", "body": json.dumps(body)}


def test_handler_fails_the_record_of_an_overwritten_object_alone(
    aws: Aws, caplog: pytest.LogCaptureFixture
):
    stale_key, good_key = lake.key_for(2, name="stale"), lake.key_for(2, name="good")
    stale = aws.s3.put_object(Bucket=WORLD_BUCKET, Key=stale_key, Body=OLD)["ETag"]
    aws.s3.put_object(Bucket=WORLD_BUCKET, Key=stale_key, Body=NEW)
    good = aws.s3.put_object(Bucket=WORLD_BUCKET, Key=good_key, Body=OLD)["ETag"]
    records = [sqs_record(stale_key, stale, "m-stale"), sqs_record(good_key, good, "m-good")]
    event = {"Records": records}
    result = handler.lambda_handler(event, Context())
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-stale"}]}
    (digest,) = aws.digests()
    (alert,) = digest["alerts"]
    assert alert["count"] == 3  # the good object's calls only
    (failed,) = [r for r in caplog.records if r.getMessage() == "failed"]
    error = failed.__dict__["error"]
    assert error.startswith(f"s3://{WORLD_BUCKET}/{stale_key}: changed since it was announced")


def test_handler_reads_the_announced_version(aws: Aws):
    aws.s3.put_bucket_versioning(Bucket=WORLD_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = lake.key_for(2, name="versioned")
    first = aws.s3.put_object(Bucket=WORLD_BUCKET, Key=key, Body=OLD)
    aws.s3.put_object(Bucket=WORLD_BUCKET, Key=key, Body=NEW)
    event = {"Records": [sqs_record(key, first["ETag"], "m-v1", first["VersionId"])]}
    assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
    (digest,) = aws.digests()
    assert [a["count"] for a in digest["alerts"]] == [3]  # the announced version's calls
