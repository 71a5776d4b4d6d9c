"""Exactly-once alerting with the DynamoDB state table, under moto."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from detector.app.pipeline import process
from detector.app.sinks import Alerts
from detector.aws.dynamodb import StateTable
from detector.aws.s3 import S3Store
from detector.aws.securityhub import SecurityHubPublisher
from detector.aws.sns import SnsPublisher
from detector.core.allowlist import Allowlist
from detector.core.errors import PublishFailed
from detector.core.objects import ObjectRef
from detector.lake.notifications import Batch, Item
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
        events = [
            lake.event(arn=INTRUDER, session_issuer=None, time_ms=lake.T0_MS + (first + i) * 1000)
            for i in range(n)
        ]
        return self.put_events(name, events)

    def put_events(self, name: str, events: list[dict[str, Any]]) -> ObjectRef:
        buf = io.BytesIO()
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

    def hub_findings(self) -> list[dict[str, Any]]:
        return list(self.hub.get_findings()["Findings"])

    def hub_count(self) -> int:
        (f,) = self.hub_findings()
        return int(f["ProductFields"]["count"])

    def items(self, prefix: str) -> list[dict[str, Any]]:
        """The state table's items whose key starts with ``prefix``."""
        got = boto3.client("dynamodb").scan(TableName=TABLE)["Items"]
        return [i for i in got if i["pk"]["S"].startswith(prefix)]


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
    (alert,) = digest["alerts"]
    assert alert["count"] == 3 and alert["principal"] == INTRUDER and alert["reason"] == "new"
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
    assert [d["alerts"][0]["count"] for d in digests] == [3, 4]
    assert [d["alerts"][0]["reason"] for d in digests] == ["new", "new"]


def test_window_zero_alerts_every_time(world: World):
    world.run(world.put("a", 1), window=0)
    world.run(world.put("b", 1, first=5), window=0)
    assert len(world.digests()) == 2


def test_sns_failure_fails_the_objects_and_the_alert_comes_on_retry(world: World):
    ref = world.put("a", 2)

    class FlakySns(Alerts):
        def notify(self, alerts):  # type: ignore[no-untyped-def]
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
    assert digest["alerts"][0]["count"] == 2  # not doubled by the failed attempt
    assert world.hub_count() == 2


def test_concurrent_invocations_lose_no_update(world: World):
    # moto's DynamoDB is made atomic per request for every test (tests/motosafe.py), as
    # DynamoDB is: without that, moto itself loses updates between threads.
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
    left = iter([120_000, 10_000])  # then time enough to publish what was read
    out = process(
        batch,
        Allow(),
        S3Store(),
        world.alerts,
        state=world.state,
        time_left_ms=lambda: next(left, 20_000),
    )
    assert [i.id for i in out.failed] == ["m1"]
    assert "about to time out" in out.errors[0]
    assert world.digests()[0]["alerts"][0]["count"] == 1
    assert world.items("obj#") and all(
        i["status"]["S"] == "COMPLETED" for i in world.items("obj#")
    )  # m1 was never claimed


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
        assert digest["alerts"][0]["count"] == 2
        (f,) = aws.hub.get_findings()["Findings"]
        assert f["ProductFields"]["count"] == "2"
    handler.reset()


# --- issue 10: alerts that cannot be flooded, hidden or poisoned ----------------------------

ATTACKER_ROLE = f"arn:aws:iam::{lake.ACCOUNT}:role/attacker"


def push(i: int, repository: str = "app", *, ok: bool = True, **fields: Any) -> dict[str, Any]:
    """One PutImage by the intruder, ``i`` seconds after T0."""
    outcome: dict[str, Any] = {"status": "Success"}
    if not ok:
        outcome = {
            "status": "Failure",
            "error_code": "AccessDenied",
            "error_message": "not authorized to perform: ecr:PutImage",
            "response_json": None,
        }
    values: dict[str, Any] = {
        "arn": INTRUDER,
        "session_issuer": None,
        "time_ms": lake.T0_MS + i * 1000,
        "request_json": lake.put_image_request(repository, f"v{i}"),
        **outcome,
    }
    return lake.event(**(values | fields))


def the_alert(world: World) -> dict[str, Any] | None:
    """The one alert of the one message sent since the last look, or None if none was sent."""
    digests = world.digests()
    if not digests:
        return None
    (digest,) = digests
    (alert,) = digest["alerts"]
    assert digest["alert_count"] == 1
    return dict(alert)


def test_escalation_inside_the_window_is_emailed_with_its_reason(world: World):
    out = world.run(world.put_events("failed", [push(0, ok=False), push(1, ok=False)]))
    assert out.failed == [] and out.alerted == 1
    first = the_alert(world)
    assert first is not None and first["reason"] == "new"
    assert (first["count"], first["succeeded"], first["failed"]) == (2, 0, 2)

    world.clock.t += 600  # 10 minutes later, inside the 60-minute window
    out = world.run(world.put_events("ok", [push(600)]))
    assert out.alerted == 1 and out.suppressed == 0
    success = the_alert(world)
    assert success is not None and success["reason"] == "first_success"
    assert success["count"] == 3 and success["succeeded"] == 1  # cumulative totals
    assert success["succeeded_repositories"]["values"] == ["app"]

    world.clock.t += 600
    out = world.run(world.put_events("other", [push(1200, "other")]))
    assert out.alerted == 1
    other = the_alert(world)
    assert other is not None and other["reason"] == "new_repository"
    assert other["count"] == 4 and other["succeeded_repositories"]["values"] == ["other"]

    world.clock.t += 600  # the same repository again: known, nothing new to tell
    out = world.run(world.put_events("again", [push(1800), push(1801, "other")]))
    assert out.alerted == 0 and out.suppressed == 1
    assert the_alert(world) is None
    assert world.hub_count() == 6  # Security Hub still follows the total

    world.clock.t += 1801  # the window (opened by the first email) has run out
    out = world.run(world.put_events("later", [push(3601, ok=False)]))
    assert out.alerted == 1
    later = the_alert(world)
    assert later is not None and later["reason"] == "new" and later["count"] == 7
    assert world.hub_count() == 7
    (f,) = world.hub_findings()
    assert f["ProductFields"]["principal"] == INTRUDER


def test_a_failed_push_after_a_success_was_reported_is_not_an_escalation(world: World):
    world.run(world.put_events("ok", [push(0)]))
    assert the_alert(world) is not None
    world.clock.t += 60
    out = world.run(world.put_events("failed", [push(60, "elsewhere", ok=False)]))
    assert out.alerted == 0 and out.suppressed == 1
    assert the_alert(world) is None  # a failed push to a new repository pushed nothing


def test_session_names_do_not_multiply_alerts(world: World):
    session = f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/attacker/"
    events = [
        push(
            i,
            arn=session + f"session-{i}",
            user_type="AssumedRole",
            # half of them without the issuer recorded: the role is read from the session ARN
            session_issuer=ATTACKER_ROLE if i % 2 else None,
            principal_id=f"AROAATTACKER:session-{i}",
        )
        for i in range(50)
    ]
    out = world.run(world.put_events("sessions", events))
    assert out.failed == [] and len(out.findings) == 50  # the Splunk groups stay as they were
    assert out.alerted == 1 and [a.key.principal for a in out.alerts] == [ATTACKER_ROLE]
    alert = the_alert(world)
    assert alert is not None
    assert alert["principal"] == ATTACKER_ROLE and alert["count"] == 50 and alert["groups"] == 50
    assert alert["sessions"]["total"] == 50
    (f,) = world.hub_findings()
    assert f["ProductFields"]["principal"] == ATTACKER_ROLE
    assert f["ProductFields"]["count"] == "50"
    assert ATTACKER_ROLE in [r["Id"] for r in f["Resources"]]

    # 50 more session names later: the same alert, the same Security Hub finding
    world.clock.t += 60
    more = [push(100 + i, arn=session + f"other-{i}", session_issuer=None) for i in range(50)]
    out = world.run(world.put_events("more", more))
    assert out.alerted == 0 and out.suppressed == 1 and the_alert(world) is None
    assert world.hub_count() == 100


def test_state_calls_grow_with_alerts_not_with_groups(world: World, monkeypatch):
    calls: list[str] = []
    original = world.state._call

    def counting(what: str, fn: Any, **kwargs: Any) -> Any:
        calls.append(what)
        return original(what, fn, **kwargs)

    monkeypatch.setattr(world.state, "_call", counting)
    flood = [push(i % 60, ok=False, user_agent=f"agent/{i}") for i in range(3000)]
    out = world.run(world.put_events("flood", flood))
    assert out.failed == [], out.errors
    assert len(out.findings) == 3000 and len(out.alerts) == 1
    assert 0 < len(calls) <= 20, calls
    alert = the_alert(world)
    assert alert is not None and alert["count"] == 3000 and alert["groups"] == 3000
    assert len(world.hub_findings()) == 1 and world.hub_count() == 3000


END_OF_TIME_MS = int(datetime(9999, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp() * 1000)


def test_a_timestamp_at_the_end_of_time_breaks_nothing_and_leaves_no_lock(world: World):
    good = world.put_events("good", [push(0)])
    late = world.put_events("late", [push(0, "late", time_ms=END_OF_TIME_MS)])
    other = world.put_events(
        "other", [push(5, arn=f"arn:aws:iam::{lake.ACCOUNT}:user/other", session_issuer=None)]
    )
    out = world.run(good, late, other)
    assert out.failed == [], out.errors
    assert out.alerted == 2  # the intruder (with the odd timestamp) and the other user
    (digest,) = world.digests()
    counts = {a["principal"]: a["count"] for a in digest["alerts"]}
    assert counts == {INTRUDER: 2, f"arn:aws:iam::{lake.ACCOUNT}:user/other": 1}
    assert len(world.hub_findings()) == 2
    assert world.items("obj#") and all(i["status"]["S"] == "COMPLETED" for i in world.items("obj#"))
    assert not any("alert_lease" in i for i in world.items("key#"))
    # the same batch again: every object already delivered, none refused as busy
    again = world.run(good, late, other)
    assert again.failed == [] and len(again.duplicates) == 3


class BrokenSns(Alerts):
    def notify(self, alerts):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the message")


def test_an_unexpected_error_in_the_sink_leaves_no_claim_and_no_lease(world: World):
    refs = [world.put("a", 2), world.put("b", 1, first=5)]
    broken = BrokenSns(
        world.alerts.sns, world.alerts.hub, account_id="123456789012", region="us-east-1"
    )
    out = world.run(*refs, alerts=broken)
    assert [i.id for i in out.failed] == ["m0", "m1"]
    (error,) = out.errors
    assert "RuntimeError" in error and "a bug in the message" in error
    assert world.digests() == []
    # nothing is held: no object in progress, no alert lease
    assert world.items("obj#") == []
    (key,) = world.items("key#")
    assert "alert_lease" not in key and "alerted_at" not in key
    alert_id = key["pk"]["S"].removeprefix("key#")
    claim = world.state.claim_alert(alert_id, 3600)  # at once, not after the lease runs out
    assert claim is not None and claim.reason == "new"
    world.state.release_alert(alert_id)

    retry = world.run(*refs)  # same clock: a left-over claim would make these "busy"
    assert retry.failed == [] and retry.errors == [] and retry.alerted == 1
    alert = the_alert(world)
    assert alert is not None and alert["count"] == 3  # counted once despite the failed attempt
    assert world.hub_count() == 3


def test_escalation_values_of_any_length_keep_the_key_item_small(world: World):
    """The values remembered per alert window come from the data (for a detection whose
    escalation sample is not a name AWS caps): 200 values of 100,000 characters each would make
    a 20 MB item, far past DynamoDB's 400 KB. Each is kept cut, and the cut form is what is
    compared, so the same values seen again are not news."""
    long_values = [f"{i:03d}" + "x" * 100_000 for i in range(200)]
    claim = world.state.claim_alert("k", 3600, success=True, values=long_values)
    assert claim is not None and claim.reason == "new"
    assert all(len(v) <= 256 for v in claim.reported) and len(claim.reported) == 200
    world.state.confirm_alert("k", claim)
    (item,) = world.items("key#")
    assert sum(len(v) for v in item["reported_repos"]["SS"]) <= 200 * 256
    world.clock.t += 60
    assert world.state.claim_alert("k", 3600, success=True, values=long_values) is None
    news = world.state.claim_alert("k", 3600, success=True, values=["another"])
    assert news is not None and news.reason == "new_value"
