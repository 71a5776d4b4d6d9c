"""Objects of one invocation are scanned in parallel, with the outcome of a serial scan."""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

import pytest

from detector import pipeline
from detector.allowlist import Allowlist
from detector.errors import ObjectUnreadable
from detector.findings import Finding, GroupKey
from detector.notifications import Batch, Item
from detector.objects import ObjectRef
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
    def __init__(self) -> None:
        self.hub: list[list[Finding]] = []
        self.notified: list[list[Finding]] = []

    def security_hub(
        self, findings: Sequence[Finding], created_at: Mapping[GroupKey, int] | None = None
    ) -> None:
        self.hub.append(list(findings))

    def notify(self, findings: Sequence[Finding]) -> None:
        self.notified.append(list(findings))


@dataclass(frozen=True)
class Totals:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    created_at: int = 0
    version: int = 0


class State:
    """A StateStore that knows some objects as done already; records claims and releases."""

    def __init__(self, done: set[str]) -> None:
        self.done = done
        self.lock = threading.Lock()
        self.claimed: list[str] = []
        self.released: list[str] = []
        self.completed: list[str] = []
        self.sums: dict[str, Totals] = {}

    def claim_object(self, ref: ObjectRef) -> Literal["new", "done", "busy"]:
        with self.lock:
            if ref.key in self.done:
                return "done"
            self.claimed.append(ref.key)
            return "new"

    def complete_objects(self, refs: Sequence[ObjectRef]) -> None:
        self.completed.extend(r.key for r in refs)

    def release_objects(self, refs: Sequence[ObjectRef]) -> None:
        with self.lock:
            self.released.extend(r.key for r in refs)

    def add(self, key_id: str, ref: ObjectRef, part: Finding) -> Any:
        with self.lock:
            self.sums[key_id] = Totals(self.sums.get(key_id, Totals()).count + part.count)
            return self.sums[key_id]

    def totals(self, key_id: str) -> Any:
        return self.sums[key_id]

    def claim_alert(self, key_id: str, window_seconds: int) -> bool:
        return True

    def confirm_alert(self, key_id: str) -> None: ...

    def release_alert(self, key_id: str) -> None: ...


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
        "counts": (out.objects, out.rows, out.untrusted, out.alerted),
    }


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
    assert [canonical(f) for f in sink.hub] == [canonical(f) for f in serial_sink.hub]
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
    left = iter([300_000, 300_000, 300_000, 10_000, 10_000, 10_000])
    out = pipeline.process(
        batch_of(list(data)), Allow(), Objects(data), Sink(), time_left_ms=lambda: next(left)
    )
    assert [i.id for i in out.failed] == ["m3", "m4", "m5"]
    assert all("about to time out" in e for e in out.errors)
    assert out.objects == 3


class Broken(Objects):
    def open(self, ref: ObjectRef) -> IO[bytes]:
        if ref.key.endswith("part-0001.gz.parquet"):
            raise RuntimeError("a bug")
        return super().open(ref)


def test_a_bug_fails_the_invocation_and_leaves_no_claim_behind(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pipeline, "MAX_PARALLEL_OBJECTS", 4)
    data = lake_objects(4)
    state = State(done=set())
    with pytest.raises(RuntimeError, match="a bug"):
        pipeline.process(batch_of(list(data)), Allow(), Broken(data), Sink(), state=state)
    assert [k for k in state.released if k.endswith("part-0001.gz.parquet")]
