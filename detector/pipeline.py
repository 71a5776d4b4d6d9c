"""One invocation: announced objects in, findings out to the alert sinks.

All objects of an invocation are aggregated together, like one run of the Splunk search. An
item (an SQS record, or the whole direct event) succeeds only when every object in it was read
and the findings it contributed were delivered; otherwise it is reported as failed so Lambda
retries it and, in the end, dead-letters it. Nothing is dropped silently.

With a state table (``STATE_TABLE``) the alerting is exactly-once:
- an object already delivered is skipped when announced again (no double count, no alert);
- each object's events are added to a key's cumulative totals exactly once, so Security Hub
  shows the total count and first/last time over every object seen;
- SNS alerts on the first occurrence of a key, and again only after the dedup window; an alert
  that could not be sent is not marked as sent, so it comes on retry rather than never.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol

from detector.allowlist import Allowlist
from detector.asff import key_digest
from detector.engine import ObjectResult, Run, scan_object
from detector.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    DetectorError,
    ObjectUnreadable,
    PublishFailed,
)
from detector.findings import Finding, GroupKey
from detector.notifications import Batch, Item
from detector.objects import ObjectRef

# Time kept back for publishing when the function nears its timeout: items not started by then
# fail (and are retried) rather than half-finishing.
RESERVE_MS = 30_000
# Objects fetched and scanned at once. S3 waits and Parquet decoding (pyarrow releases the GIL)
# overlap; memory grows with it (one row group's needed columns per object in flight).
MAX_PARALLEL_OBJECTS = 4


class AllowlistSource(Protocol):
    def get(self) -> Allowlist: ...


class ObjectSource(Protocol):
    def open(self, ref: ObjectRef) -> IO[bytes]: ...


class AlertSink(Protocol):
    def security_hub(
        self, findings: Sequence[Finding], created_at: Mapping[GroupKey, int] | None = None
    ) -> None: ...

    def notify(self, findings: Sequence[Finding]) -> None: ...


class Totals(Protocol):
    @property
    def count(self) -> int: ...
    @property
    def first_ms(self) -> int | None: ...
    @property
    def last_ms(self) -> int | None: ...
    @property
    def created_at(self) -> int: ...
    @property
    def version(self) -> int: ...


class StateStore(Protocol):
    def claim_object(self, ref: ObjectRef) -> Literal["new", "done", "busy"]: ...
    def complete_objects(self, refs: Sequence[ObjectRef]) -> None: ...
    def release_objects(self, refs: Sequence[ObjectRef]) -> None: ...
    def add(self, key_id: str, ref: ObjectRef, part: Finding) -> Totals: ...
    def totals(self, key_id: str) -> Totals: ...
    def claim_alert(self, key_id: str, window_seconds: int) -> bool: ...
    def confirm_alert(self, key_id: str) -> None: ...
    def release_alert(self, key_id: str) -> None: ...


class Busy(DetectorError):
    """Another invocation holds the object right now; this one retries it later."""


@dataclass
class Outcome:
    failed: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    alerted: int = 0
    suppressed: int = 0
    objects: int = 0
    rows: int = 0
    untrusted: int = 0
    published: bool = False


@dataclass
class _Done:
    """What scanning one item gave: its objects' results, or the error that failed it."""

    item: Item
    claims: list[ObjectRef] = field(default_factory=list)
    results: list[tuple[ObjectRef, ObjectResult]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


def _scan_item(
    item: Item, objects: ObjectSource, allowlist: Allowlist, state: StateStore | None
) -> _Done:
    """Scan every object of one item. Runs in a worker thread: it shares nothing but the
    (thread-safe) adapters, and reports through what it returns."""
    done = _Done(item)
    try:
        for ref in item.refs:
            if state is not None:
                claim = state.claim_object(ref)
                if claim == "done":
                    done.duplicates.append(ref.uri)
                    continue
                if claim == "busy":
                    raise Busy(f"{ref.uri}: being processed by another invocation")
                done.claims.append(ref)
            try:
                with closing(objects.open(ref)) as stream:
                    result = scan_object(stream, ref.uri, allowlist, key=ref.key)
            except ObjectUnreadable as exc:
                if exc.code != "NoSuchKey":
                    raise
                # Removed before it was read (e.g. lifecycle): retrying cannot bring it back.
                done.missing.append(str(exc))
                continue
            done.results.append((ref, result))
    except Exception as exc:
        if state is not None:
            state.release_objects(done.claims)
        if not isinstance(exc, DetectorError):
            raise  # a bug: the invocation fails, but no claim is left to block the retry
        done.error = str(exc)
    return done


def _scan_items(
    items: Sequence[Item], scan: Callable[[Item], _Done], time_left_ms: Callable[[], int] | None
) -> list[_Done]:
    """``scan`` each item, ``MAX_PARALLEL_OBJECTS`` at a time; results in the items' order.

    An item starts only when a worker is free, and only if the function is not about to time
    out: that is decided here, in the items' order, exactly as when scanning one by one.
    """

    def late(item: Item) -> _Done | None:
        """The failed result of an item that must not start now, else None."""
        if time_left_ms is not None and item.refs and time_left_ms() < RESERVE_MS:
            uri = item.refs[0].uri
            return _Done(item, error=f"{uri}: not started, the function is about to time out")
        return None

    workers = min(MAX_PARALLEL_OBJECTS, len(items))
    if workers <= 1:
        return [late(item) or scan(item) for item in items]
    free = threading.Semaphore(workers)
    started: list[Future[_Done] | _Done] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="scan") as pool:
        for item in items:
            free.acquire()  # wait for a free worker: the item starts now, or not at all
            if (not_started := late(item)) is not None:
                free.release()
                started.append(not_started)
                continue
            future = pool.submit(scan, item)
            future.add_done_callback(lambda _: free.release())
            started.append(future)
    return [s.result() if isinstance(s, Future) else s for s in started]


def process(
    batch: Batch,
    allowlists: AllowlistSource,
    objects: ObjectSource,
    alerts: AlertSink,
    *,
    state: StateStore | None = None,
    window_seconds: int = 3600,
    time_left_ms: Callable[[], int] | None = None,
) -> Outcome:
    """Scan every announced object, aggregate, alert; report which items failed and why.

    Items are scanned in parallel (``MAX_PARALLEL_OBJECTS``) and merged in their order, so the
    outcome is the same as scanning them one after the other.
    """
    out = Outcome()
    for item in batch.items:
        out.skipped.extend(item.skipped)
    try:
        allowlist = allowlists.get()
    except (AllowlistUnavailable, AllowlistInvalid) as exc:
        # Judging against no allowlist would alert on everyone: fail and retry instead.
        out.failed = list(batch.items)
        out.errors.append(str(exc))
        return out
    run = Run(allowlist)
    done: list[_Done] = []
    scanned = iter(
        _scan_items(
            [item for item in batch.items if item.error is None],
            lambda item: _scan_item(item, objects, allowlist, state),
            time_left_ms,
        )
    )
    for item in batch.items:
        if item.error is not None:
            out.failed.append(item)
            out.errors.append(item.error)
            continue
        d = next(scanned)
        out.duplicates.extend(d.duplicates)
        out.missing.extend(d.missing)
        if d.error is not None:
            out.failed.append(item)
            out.errors.append(d.error)
            continue
        for _, result in d.results:
            run.add(result)
        done.append(d)
    out.objects, out.rows = run.objects, run.rows
    out.untrusted = run.matched - run.trusted
    out.findings = run.findings()
    claims = [ref for d in done for ref in d.claims]
    try:
        if out.findings:
            if state is None:
                alerts.security_hub(out.findings)
                alerts.notify(out.findings)
                out.alerted = len(out.findings)
            else:
                _deliver_once(out, done, alerts, state, window_seconds)
            out.published = True
        if state is not None:
            state.complete_objects(claims)
    except DetectorError as exc:
        # Not (fully) delivered: every item read in this run is retried, so the alert comes
        # later rather than never. Counts already added are not added again on retry.
        out.failed.extend(d.item for d in done)
        out.errors.append(str(exc))
        if state is not None:
            state.release_objects(claims)
    return out


def key_id(key: GroupKey) -> str:
    """The state table's name for a grouping key: the same digest as the ASFF finding Id."""
    return key_digest(key)


def _with_totals(findings: Sequence[Finding], totals: Mapping[GroupKey, Totals]) -> list[Finding]:
    """Findings with the key's cumulative count and first/last time instead of this run's."""
    return [
        dataclasses.replace(f, count=t.count, first_ms=t.first_ms, last_ms=t.last_ms)
        if (t := totals.get(f.key)) is not None
        else f
        for f in findings
    ]


def _settle_security_hub(
    findings: Sequence[Finding],
    totals: dict[GroupKey, Totals],
    alerts: AlertSink,
    state: StateStore,
    rounds: int = 5,
) -> None:
    """Re-import keys whose totals moved on while we imported.

    Concurrent invocations may import in any order, and Security Hub keeps the last import. So
    after importing, each invocation checks that the totals it sent are still the newest and
    re-imports the newest otherwise: whichever import lands last carries the latest totals.
    """
    for _ in range(rounds):
        stale = {}
        for key, sent in totals.items():
            now = state.totals(key_id(key))
            if now.version != sent.version:
                stale[key] = now
        if not stale:
            return
        totals.update(stale)
        changed = [f for f in findings if f.key in stale]
        alerts.security_hub(
            _with_totals(changed, stale), {k: t.created_at for k, t in stale.items()}
        )


def _deliver_once(
    out: Outcome, done: list[_Done], alerts: AlertSink, state: StateStore, window_seconds: int
) -> None:
    totals: dict[GroupKey, Totals] = {}
    for d in done:
        for ref, result in d.results:
            for part in result.aggregate.groups.values():
                totals[part.key] = state.add(key_id(part.key), ref, part)
    alerts.security_hub(
        _with_totals(out.findings, totals), {k: t.created_at for k, t in totals.items()}
    )
    _settle_security_hub(out.findings, totals, alerts, state)
    cumulative = _with_totals(out.findings, totals)
    out.alerted = notify_once(cumulative, alerts, state, window_seconds)
    out.suppressed = len(cumulative) - out.alerted


def notify_once(
    findings: Sequence[Finding], alerts: AlertSink, state: StateStore, window_seconds: int
) -> int:
    """Send the SNS digest for the keys not alerted within the window; how many were sent.

    A key is claimed before sending and confirmed after; a failed send releases the claim, so
    the key is not marked as alerted and the next attempt sends it.
    """
    due = [
        f
        for f in findings
        if window_seconds <= 0 or state.claim_alert(key_id(f.key), window_seconds)
    ]
    if not due:
        return 0
    try:
        alerts.notify(due)
    except PublishFailed:
        if window_seconds > 0:
            for f in due:
                state.release_alert(key_id(f.key))
        raise
    if window_seconds > 0:
        for f in due:
            state.confirm_alert(key_id(f.key))
    return len(due)
