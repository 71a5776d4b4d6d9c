"""Exactly-once alerting with the DynamoDB state table, under moto."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from detector.alerting import Alerts
from detector.allowlist import Allowlist
from detector.aws.dynamodb import StateTable
from detector.aws.s3 import S3Store
from detector.aws.securityhub import SecurityHubPublisher
from detector.aws.sns import SnsPublisher
from detector.errors import PublishFailed
from detector.notifications import Batch, Item
from detector.objects import ObjectRef
from detector.pipeline import process
from tests import lake
from tests.integration.world import create_state_table, findings_inbox, read_digests

BUCKET = "lake"
TABLE = "ecr-upload-detector-state"
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Allow:
    def get(self) -> Allowlist:
        return Allowlist.parse(lake.CI_ROLE)


class World:
    def __init__(self) -> None:
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        self.sns = boto3.client("sns")
        self.hub = boto3.client("securityhub")
        create_state_table(TABLE)
        self.s3.create_bucket(Bucket=BUCKET)
        self.topic, self.queue = findings_inbox(self.sns, self.sqs)
        self.hub.enable_security_hub()
        self.clock = Clock()
        self.state = StateTable(TABLE, clock=self.clock)
        self.alerts = Alerts(
            SnsPublisher(self.topic, sleep=lambda _: None),
            SecurityHubPublisher(sleep=lambda _: None),
            account_id="123456789012",
            region="us-east-1",
        )

    def put(self, name: str, n: int, first: int = 0) -> ObjectRef:
        buf = io.BytesIO()
        events = [
            lake.event(arn=INTRUDER, session_issuer=None, time_ms=lake.T0_MS + (first + i) * 1000)
            for i in range(n)
        ]
        lake.write_object(buf, events, 2)
        key = lake.key_for(2, name=name)
        got = self.s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
        return ObjectRef(key=key, bucket=BUCKET, etag=got["ETag"])

    def run(self, *refs: ObjectRef, window: int = 3600, alerts: Any = None) -> Any:
        batch = Batch(from_sqs=True, items=[Item(id=f"m{i}", refs=[r]) for i, r in enumerate(refs)])
        return process(
            batch,
            Allow(),
            S3Store(),
            alerts or self.alerts,
            state=self.state,
            window_seconds=window,
        )

    def digests(self) -> list[dict[str, Any]]:
        return read_digests(self.sqs, self.queue)

    def hub_count(self) -> int:
        (f,) = self.hub.get_findings()["Findings"]
        return int(f["ProductFields"]["count"])


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield World()


def test_duplicate_delivery_alerts_once_and_counts_once(world: World):
    ref = world.put("a", 3)
    first = world.run(ref)
    again = world.run(ref)
    assert first.failed == [] and again.failed == []
    assert again.duplicates == [ref.uri] and again.findings == []
    (digest,) = world.digests()
    assert digest["findings"][0]["count"] == 3
    assert world.hub_count() == 3


def test_same_key_inside_the_window_updates_security_hub_but_sends_no_email(world: World):
    world.run(world.put("a", 3))
    world.clock.t += 600
    out = world.run(world.put("b", 2, first=10))
    assert out.suppressed == 1 and out.alerted == 0
    assert len(world.digests()) == 1
    assert world.hub_count() == 5  # cumulative over both objects
    (f,) = world.hub.get_findings()["Findings"]
    assert f["FirstObservedAt"].startswith("2026-11-20T10:00:00")
    assert f["LastObservedAt"].startswith("2026-11-20T10:00:11")


def test_window_expiring_alerts_again_with_the_total(world: World):
    world.run(world.put("a", 3))
    world.clock.t += 3601
    out = world.run(world.put("b", 1, first=10))
    assert out.alerted == 1
    digests = world.digests()
    assert [d["findings"][0]["count"] for d in digests] == [3, 4]


def test_window_zero_alerts_every_time(world: World):
    world.run(world.put("a", 1), window=0)
    world.run(world.put("b", 1, first=5), window=0)
    assert len(world.digests()) == 2


def test_sns_failure_fails_the_objects_and_the_alert_comes_on_retry(world: World):
    ref = world.put("a", 2)

    class FlakySns(Alerts):
        def notify(self, findings):  # type: ignore[no-untyped-def]
            raise PublishFailed("sns", "Throttling after 4 attempts")

    flaky = FlakySns(
        world.alerts.sns, world.alerts.hub, account_id="123456789012", region="us-east-1"
    )
    out = world.run(ref, alerts=flaky)
    assert [i.id for i in out.failed] == ["m0"]
    assert world.digests() == []
    retry = world.run(ref)  # the redelivery
    assert retry.failed == [] and retry.alerted == 1
    (digest,) = world.digests()
    assert digest["findings"][0]["count"] == 2  # not doubled by the failed attempt
    assert world.hub_count() == 2


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's DynamoDB atomic per request, as DynamoDB is.

    moto checks a condition and then writes without a lock, so two threads can both pass the
    same version check: a lost update that real DynamoDB's conditional writes rule out. One
    lock around each write request restores the guarantee the code relies on.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "get_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, __original=original, **kwargs):  # type: ignore[no-untyped-def]
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


def test_concurrent_invocations_lose_no_update(world: World, atomic_moto: None):
    refs = [world.put(f"o{i}", i + 1, first=i * 10) for i in range(6)]
    errors: list[BaseException] = []

    def one(ref: ObjectRef) -> None:
        try:
            out = world.run(ref)
            assert out.failed == [], out.errors
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(r,)) for r in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert world.hub_count() == sum(range(1, 7))
    item = boto3.client("dynamodb").get_item(
        TableName=TABLE, Key={"pk": {"S": f"key#{_key_id(world)}"}}
    )["Item"]
    assert int(item["count"]["N"]) == 21
    assert len(world.digests()) == 1  # one alert for the key, whichever thread got there first


def _key_id(world: World) -> str:
    (f,) = world.hub.get_findings()["Findings"]
    return str(f["Id"]).rsplit("/", 1)[1]


def test_object_about_to_time_out_fails_rather_than_half_publishing(world: World):
    refs = [world.put("a", 1), world.put("b", 1, first=5)]
    batch = Batch(from_sqs=True, items=[Item(id=f"m{i}", refs=[r]) for i, r in enumerate(refs)])
    left = iter([120_000, 10_000])
    out = process(
        batch, Allow(), S3Store(), world.alerts, state=world.state, time_left_ms=lambda: next(left)
    )
    assert [i.id for i in out.failed] == ["m1"]
    assert "about to time out" in out.errors[0]
    assert world.digests()[0]["findings"][0]["count"] == 1


def test_handler_with_state_table_alerts_once_for_a_redelivered_batch(
    monkeypatch: pytest.MonkeyPatch,
):
    from detector import handler
    from tests.integration.world import PARAM, Aws, Context, load

    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "ALLOWLIST_PARAMETER": PARAM,
        "STATE_TABLE": TABLE,
    }.items():
        monkeypatch.setenv(name, value)
    handler.reset()
    with mock_aws():
        aws = Aws()
        aws.allowlist(lake.CI_ROLE)
        create_state_table(TABLE)
        monkeypatch.setenv("FINDINGS_TOPIC_ARN", aws.topic)
        event = load("sqs-security-lake-subscriber.json")
        assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
        assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
        (digest,) = aws.digests()
        assert digest["findings"][0]["count"] == 2
        (f,) = aws.hub.get_findings()["Findings"]
        assert f["ProductFields"]["count"] == "2"
    handler.reset()
