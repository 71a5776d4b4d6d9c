"""Objects of one invocation are scanned in parallel, with the outcome of a serial scan."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

import pytest

from detector.app import pipeline
from detector.aws.dynamodb_items import AlertClaim
from detector.aws.securityhub import Report
from detector.core.allowlist import Allowlist
from detector.core.errors import ObjectUnreadable
from detector.core.objects import ObjectRef
from detector.lake.notifications import Batch, Item
from detector.report.alerts import NEW, Alert, Contribution
from tests import lake
from tests.unit.helpers import canonical, parquet_bytes

ALLOWLIST = Allowlist.parse(lake.CI_ROLE)


def intruder(i: int) -> str:
    return f"arn:aws:iam::{lake.ACCOUNT}:user/intruder-{i % 3}"


def lake_objects(n: int) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        version = 1 + i % 2
        events = [
            lake.event(arn=intruder(i), session_issuer=None, time_ms=lake.T0_MS + i * 1000 + j)
            for j in range(i + 1)
        ] + [lake.event()]  # and a trusted push
        out[lake.key_for(version, name=f"part-{i:04d}")] = parquet_bytes(events, version)
    return out


class Allow:
    def get(self) -> Allowlist:
        return ALLOWLIST


class Objects:
    """Objects in memory; records how many are open at once."""

    def __init__(self, data: Mapping[str, bytes], meet: int = 0) -> None:
        self.data = data
        self.lock = threading.Lock()
        self.open_now = self.most_open = 0
        # The first ``meet`` opens wait for each other: proof that they run at the same time.
        self.barrier = threading.Barrier(meet, timeout=10) if meet > 1 else None
        self.waited = 0

    def open(self, ref: ObjectRef) -> IO[bytes]:
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            wait = self.barrier is not None and self.waited < self.barrier.parties
            self.waited += 1
        try:
            if wait:
                assert self.barrier is not None
                self.barrier.wait()
            if ref.key not in self.data:
                raise ObjectUnreadable(ref.uri, "NoSuchKey: gone", code="NoSuchKey")
            return io.BytesIO(self.data[ref.key])
        finally:
            with self.lock:
                self.open_now -= 1


class Sink:
    """Records what would be published; ``fail`` makes one call raise an unexpected error."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.hub: list[list[Alert]] = []
        self.notified: list[list[Alert]] = []

    def security_hub(
        self,
        alerts: Sequence[Alert],
        created_at: Mapping[str, int] | None = None,
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report:
        if self.fail == "security_hub":
            raise RuntimeError("a bug in the Security Hub sink")
        self.hub.append(list(alerts))
        return Report(imported=len(alerts))

    def notify(self, alerts: Sequence[Alert]) -> None:
        if self.fail == "notify":
            raise RuntimeError("a bug in the SNS sink")
        self.notified.append(list(alerts))


@dataclass(frozen=True)
class Totals:
    count: int = 0
    succeeded: int = 0
    failed: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    created_at: int = 0
    version: int = 0


class State:
    """A StateStore in memory that knows some objects as done already.

    It records object claims, releases and completions, and the alert leases it hands out, so
    a test sees exactly what an invocation leaves behind. ``fail_add`` makes ``add`` raise.
    """

    def __init__(self, done: set[str], fail_add: bool = False) -> None:
        self.done = done
        self.fail_add = fail_add
        self.lock = threading.Lock()
        self.claimed: list[str] = []
        self.released: list[str] = []
        self.completed: list[str] = []
        self.sums: dict[str, Totals] = {}
        self.leased: set[str] = set()  # alert leases held right now
        self.alert_claims: list[str] = []
        self.confirmed: list[str] = []
        self.mailed: dict[str, int] = {}  # objects whose email is settled: Security Hub retries
        self.hub_versions: dict[str, int] = {}  # the totals' version Security Hub got, per key

    def claim_object(self, ref: ObjectRef) -> Literal["new", "done", "busy"]:
        with self.lock:
            if ref.key in self.done:
                return "done"
            self.claimed.append(ref.key)
            return "new"

    def complete_objects(self, refs: Sequence[ObjectRef]) -> None:
        with self.lock:
            self.completed.extend(r.key for r in refs)

    def release_objects(self, refs: Sequence[ObjectRef]) -> None:
        with self.lock:
            self.released.extend(r.key for r in refs)

    def held(self) -> set[str]:
        """Object claims neither completed nor released: what a retry would find busy."""
        return set(self.claimed) - set(self.completed) - set(self.released)

    def add(self, key_id: str, ref: ObjectRef, part: Contribution) -> Totals:
        if self.fail_add:
            raise RuntimeError("a bug in the state store")
        with self.lock:
            old = self.sums.get(key_id, Totals())
            self.sums[key_id] = Totals(
                count=old.count + part.count,
                succeeded=old.succeeded + part.succeeded,
                failed=old.failed + part.failed,
                version=old.version + 1,
            )
            return self.sums[key_id]

    def totals(self, key_id: str) -> Totals:
        with self.lock:
            return self.sums[key_id]

    def claim_alert(
        self,
        key_id: str,
        window_seconds: int,
        *,
        success: bool = False,
        values: Iterable[str] = (),
    ) -> AlertClaim | None:
        with self.lock:
            if key_id in self.leased:
                return None
            self.leased.add(key_id)
            self.alert_claims.append(key_id)
        return AlertClaim(reason=NEW, window_start=0, success=success, reported=frozenset())

    def confirm_alert(self, key_id: str, claim: AlertClaim) -> None:
        with self.lock:
            self.leased.discard(key_id)
            self.confirmed.append(key_id)

    def release_alert(self, key_id: str) -> None:
        with self.lock:
            self.leased.discard(key_id)

    def email_handled(self, ref: ObjectRef) -> int | None:
        with self.lock:
            return self.mailed.get(ref.key)

    def mark_email_handled(self, refs: Sequence[ObjectRef]) -> None:
        with self.lock:
            for r in refs:
                self.mailed.setdefault(r.key, 0)

    def count_security_hub_retry(self, refs: Sequence[ObjectRef]) -> None:
        with self.lock:
            for r in refs:
                self.mailed[r.key] = self.mailed.get(r.key, 0) + 1

    def security_hub_version(self, key_id: str) -> int:
        with self.lock:
            return self.hub_versions.get(key_id, 0)

    def record_security_hub(self, key_id: str, version: int) -> None:
        with self.lock:
            self.hub_versions[key_id] = max(version, self.hub_versions.get(key_id, 0))


def batch_of(keys: Sequence[str]) -> Batch:
    items = [Item(id=f"m{i}", refs=[ObjectRef(key=k, bucket="lake")]) for i, k in enumerate(keys)]
    return Batch(from_sqs=True, items=items)


def run(
    monkeypatch: pytest.MonkeyPatch, workers: int, objects: Objects, keys: Sequence[str]
) -> tuple[pipeline.Outcome, Sink]:
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", workers)
    sink = Sink()
    return pipeline.process(batch_of(keys), Allow(), objects, sink), sink


def comparable(out: pipeline.Outcome) -> dict[str, Any]:
    return {
        "failed": [i.id for i in out.failed],
        "errors": out.errors,
        "missing": out.missing,
        "findings": canonical(out.findings),
        "order": [f.key for f in out.findings],
        "alerts": alert_records(out.alerts),
        "counts": (out.objects, out.rows, out.untrusted, out.alerted),
    }


def alert_records(alerts: Iterable[Alert]) -> list[str]:
    return [json.dumps(a.to_record(), sort_keys=True) for a in alerts]


def test_parallel_scan_gives_the_serial_outcome(monkeypatch: pytest.MonkeyPatch):
    data = lake_objects(10)
    keys = list(data)
    data[keys[3]] = b"not parquet at all"  # fails alone
    keys.insert(6, lake.key_for(2, name="gone"))  # missing: skipped, not failed
    serial, serial_sink = run(monkeypatch, 1, Objects(data), keys)
    objects = Objects(data, meet=4)
    parallel, sink = run(monkeypatch, 4, objects, keys)

    assert comparable(parallel) == comparable(serial)
    assert [i.id for i in parallel.failed] == ["m3"]
    assert "not Parquet" in parallel.errors[0]
    assert len(parallel.missing) == 1 and "gone" in parallel.missing[0]
    assert parallel.objects == 9 and parallel.findings
    # intruder-0, -1 and -2: three principals, so three alerts in one message
    assert parallel.alerted == 3 and len(parallel.alerts) == 3
    assert [alert_records(a) for a in sink.hub] == [alert_records(a) for a in serial_sink.hub]
    assert [alert_records(a) for a in sink.notified] == [
        alert_records(a) for a in serial_sink.notified
    ]
    assert len(sink.notified) == 1
    assert objects.most_open == 4  # four at once, never more


def test_a_failing_object_fails_only_its_item_and_releases_only_its_claim(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", 4)
    data = lake_objects(6)
    keys = list(data)
    data[keys[2]] = data[keys[2]][:200]  # truncated
    state = State(done={keys[4]})
    batch = Batch(
        from_sqs=True,
        items=[
            Item(id="a", refs=[ObjectRef(key=keys[0], bucket="lake")]),
            Item(id="b", refs=[ObjectRef(key=k, bucket="lake") for k in keys[1:3]]),
            Item(id="c", refs=[ObjectRef(key=k, bucket="lake") for k in keys[3:]]),
        ],
    )
    out = pipeline.process(batch, Allow(), Objects(data), Sink(), state=state, window_seconds=0)
    assert [i.id for i in out.failed] == ["b"]
    assert "truncated" in out.errors[0]
    assert out.duplicates == [f"s3://lake/{keys[4]}"]
    assert sorted(state.released) == sorted(keys[1:3])  # b's claims, nobody else's
    assert sorted(state.completed) == sorted([keys[0], keys[3], keys[5]])


def test_items_start_in_order_and_not_when_time_is_short(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", 4)
    data = lake_objects(6)
    # Six checks before items start; then publishing, with just enough time left for it.
    left = iter([300_000, 300_000, 300_000, 20_000, 20_000, 20_000])
    sink = Sink()
    out = pipeline.process(
        batch_of(list(data)),
        Allow(),
        Objects(data),
        sink,
        time_left_ms=lambda: next(left, pipeline.PUBLISH_RESERVE_MS),
    )
    assert [i.id for i in out.failed] == ["m3", "m4", "m5"]
    assert len(out.errors) == 3 and all("about to time out" in e for e in out.errors)
    assert out.objects == 3 and out.published
    assert len(sink.notified) == 1


class Broken(Objects):
    def open(self, ref: ObjectRef) -> IO[bytes]:
        if ref.key.endswith("part-0001.gz.parquet"):
            raise RuntimeError("a bug")
        return super().open(ref)


def test_an_unexpected_error_reading_fails_only_its_item_and_leaves_no_claim(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", 4)
    data = lake_objects(5)
    keys = list(data)
    state = State(done=set())
    batch = Batch(
        from_sqs=True,
        items=[
            # part-0000 is claimed and read before part-0001 raises: both claims go back
            # (announced with ETags, so each object is claimed before it is opened)
            Item(id="a", refs=[ObjectRef(key=k, bucket="lake", etag="e") for k in keys[:2]]),
            Item(id="b", refs=[ObjectRef(key=k, bucket="lake", etag="e") for k in keys[2:]]),
        ],
    )
    sink = Sink()
    out = pipeline.process(batch, Allow(), Broken(data), sink, state=state, window_seconds=60)
    assert [i.id for i in out.failed] == ["a"]
    (error,) = out.errors
    assert "RuntimeError" in error and "a bug" in error and keys[1] in error
    assert sorted(state.released) == sorted(keys[:2])
    assert sorted(state.completed) == sorted(keys[2:])
    assert state.held() == set() and state.leased == set()
    # b's objects were published: intruder-2, -0, -1 (objects 2, 3, 4)
    assert out.objects == 3 and out.alerted == 3 and len(sink.notified) == 1


class BrokenRun(pipeline.Run):
    def findings(self) -> list[Any]:
        raise RuntimeError("a bug in the aggregation")


@pytest.mark.parametrize("fail", ["findings", "add", "notify"])
def test_an_unexpected_error_publishing_fails_the_items_read_and_leaves_no_claim_or_lease(
    monkeypatch: pytest.MonkeyPatch, fail: str
):
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", 4)
    if fail == "findings":
        monkeypatch.setattr(pipeline, "Run", BrokenRun)
    data = lake_objects(4)
    keys = list(data)
    state = State(done={keys[3]}, fail_add=fail == "add")
    sink = Sink(fail=fail if fail == "notify" else None)
    out = pipeline.process(
        batch_of(keys), Allow(), Objects(data), sink, state=state, window_seconds=3600
    )
    # every item of the run is retried (m3, a duplicate, is skipped again on retry)
    assert [i.id for i in out.failed] == ["m0", "m1", "m2", "m3"]
    assert out.duplicates == [f"s3://lake/{keys[3]}"]
    (error,) = out.errors
    assert error.startswith("publishing: unexpected RuntimeError: a bug")
    assert not out.published and out.alerted == 0
    assert sorted(state.released) == sorted(keys[:3]) and state.completed == []
    assert state.held() == set()
    assert state.leased == set() and state.confirmed == []
    if fail == "notify":
        assert len(state.alert_claims) == 3  # claimed, then given back
    assert sink.notified == []


def test_an_unexpected_error_in_security_hub_does_not_hold_back_the_email(
    monkeypatch: pytest.MonkeyPatch,
):
    # Before issue "round two", item 5, Security Hub went first and this failed every item
    # with no email. Now the email goes out; the items that gave the findings are retried for
    # Security Hub alone (their email recorded as settled), the duplicate m3 is not.
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", 4)
    data = lake_objects(4)
    keys = list(data)
    state = State(done={keys[3]})
    sink = Sink(fail="security_hub")
    out = pipeline.process(
        batch_of(keys), Allow(), Objects(data), sink, state=state, window_seconds=3600
    )
    assert [i.id for i in out.failed] == ["m0", "m1", "m2"]
    (error,) = out.errors
    assert error.startswith("Security Hub did not take 3 finding(s); the email is settled")
    assert "unexpected RuntimeError: a bug in the Security Hub sink" in error
    assert out.published and out.alerted == 3 and len(sink.notified) == 1
    assert sorted(state.confirmed) == sorted(a.id for a in out.alerts)
    assert {u.alert_id for u in out.undelivered} == {a.id for a in out.alerts}
    assert all(u.retried for u in out.undelivered)
    assert sorted(state.released) == sorted(keys[:3]) and state.completed == []
    assert state.held() == set() and state.leased == set()
    assert state.mailed == {k: 1 for k in keys[:3]}  # emailed; sent back once for Security Hub

    # The retry: no second email, Security Hub tried again.
    sink.fail = None
    again = pipeline.process(
        batch_of(keys[:3]), Allow(), Objects(data), sink, state=state, window_seconds=3600
    )
    assert again.failed == [] and again.undelivered == [] and again.alerted == 0
    assert len(sink.notified) == 1 and len(sink.hub) == 1
    assert sorted(state.completed) == sorted(keys[:3])


def test_serial_scan_also_turns_an_unexpected_error_into_a_failed_item(
    monkeypatch: pytest.MonkeyPatch,
):
    data = lake_objects(3)
    state = State(done=set())
    out, _ = run(monkeypatch, 1, Broken(data), list(data))
    assert [i.id for i in out.failed] == ["m1"]
    assert "unexpected RuntimeError" in out.errors[0]
    out = pipeline.process(batch_of(list(data)), Allow(), Broken(data), Sink(), state=state)
    assert [i.id for i in out.failed] == ["m1"] and state.held() == set()
