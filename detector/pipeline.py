"""One invocation: announced objects in, findings out to the alert sinks.

All objects of an invocation are aggregated together, like one run of the Splunk search. An
item (an SQS record, or the whole direct event) succeeds only when every object in it was read
and the findings it contributed were delivered; otherwise it is reported as failed so Lambda
retries it and, in the end, dead-letters it. Nothing is dropped silently.

Alerting works on alerts (``detector.alerts``: findings rolled up per detection, account and
principal), so what it costs grows with principals, not with attacker-chosen values: one SNS
message per invocation, one Security Hub finding and a few state calls per alert.

With a state table (``STATE_TABLE``) the alerting is exactly-once:
- an object already delivered is skipped when announced again (no double count, no alert);
- each object's events are added to an alert key's cumulative totals exactly once, so Security
  Hub shows the total count and first/last time over every object seen;
- SNS alerts on the first occurrence of a key, and again within the dedup window only when it
  escalates (a first successful call, or a successful call with a new value of the detection's
  escalation sample, e.g. a target not yet reported);
  an alert that could not be sent is not marked as sent, so it comes on retry rather than never.

Any exception, expected or not, fails only the items it concerns and releases the object
claims and alert leases they held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Literal, Protocol, TypeVar

from detector.alerts import Alert, Contribution, CountsLike, rollup
from detector.allowlist import Allowlist
from detector.engine import ObjectResult, Run, scan_object
from detector.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    DetectorError,
    ObjectUnreadable,
    PublishFailed,
)
from detector.findings import Finding
from detector.notifications import Batch, Item
from detector.objects import ObjectRef
from detector.spec import Active

if TYPE_CHECKING:
    from detector.aws.dynamodb import AlertClaim
    from detector.aws.securityhub import Report

# Time kept back for publishing when the function nears its timeout: items not started by then
# fail (and are retried) rather than half-finishing.
RESERVE_MS = 30_000
# Time Security Hub leaves for the SNS message and the state writes after it: no Security Hub
# batch starts with less than this left, and publishing does not start at all.
PUBLISH_RESERVE_MS = 10_000
# Objects fetched and scanned at once. S3 waits and Parquet decoding (pyarrow releases the GIL)
# overlap; memory grows with it (one row group's needed columns per object in flight).
MAX_PARALLEL_OBJECTS = 4
# State-table calls in flight at once (one worker per alert key, so keys never race here).
STATE_WORKERS = 8


class AllowlistSource(Protocol):
    def get(self) -> Allowlist: ...


class ObjectSource(Protocol):
    def open(self, ref: ObjectRef) -> IO[bytes]: ...


class AlertSink(Protocol):
    def security_hub(
        self,
        alerts: Sequence[Alert],
        created_at: Mapping[str, int] | None = None,
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report: ...

    def notify(self, alerts: Sequence[Alert]) -> None: ...


class Totals(CountsLike, Protocol):
    """An alert key's cumulative numbers, as the state table keeps them."""

    @property
    def created_at(self) -> int: ...
    @property
    def version(self) -> int: ...


class StateStore(Protocol):
    def claim_object(self, ref: ObjectRef) -> Literal["new", "done", "busy"]: ...
    def complete_objects(self, refs: Sequence[ObjectRef]) -> None: ...
    def release_objects(self, refs: Sequence[ObjectRef]) -> None: ...
    def add(self, key_id: str, ref: ObjectRef, part: Contribution) -> Totals: ...
    def totals(self, key_id: str) -> Totals: ...
    def claim_alert(
        self,
        key_id: str,
        window_seconds: int,
        *,
        success: bool = False,
        values: Iterable[str] = (),
    ) -> AlertClaim | None: ...
    def confirm_alert(self, key_id: str, claim: AlertClaim) -> None: ...
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
    alerts: list[Alert] = field(default_factory=list)
    # Security Hub findings rejected for good: (finding Id, why); the email went out anyway.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    alerted: int = 0
    suppressed: int = 0
    objects: int = 0
    rows: int = 0
    untrusted: int = 0
    # Rows each detection reported (detection id -> rows), for its metric.
    kept: dict[str, int] = field(default_factory=dict)
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
    item: Item,
    objects: ObjectSource,
    allowlist: Allowlist,
    state: StateStore | None,
    active: Sequence[Active] | None = None,
) -> _Done:
    """Scan every object of one item. Runs in a worker thread: it shares nothing but the
    (thread-safe) adapters, and reports through what it returns."""
    done = _Done(item)
    current = item.refs[0].uri if item.refs else "(no object)"
    try:
        for ref in item.refs:
            current = ref.uri
            stream: IO[bytes] | None = None
            try:
                if state is not None and ref.bucket is not None and not ref.etag:
                    # No ETag announced: learn it from the object's first GET before claiming,
                    # so a re-announcement with or without one names the same object and the
                    # object counts once.
                    stream = objects.open(ref)
                    ref = dataclasses.replace(ref, etag=getattr(stream, "etag", None))
                if state is not None:
                    claim = state.claim_object(ref)
                    if claim == "done":
                        done.duplicates.append(ref.uri)
                        continue
                    if claim == "busy":
                        raise Busy(f"{ref.uri}: being processed by another invocation")
                    done.claims.append(ref)
                if stream is None:
                    stream = objects.open(ref)
                result = scan_object(stream, ref.uri, allowlist, key=ref.key, active=active)
            except ObjectUnreadable as exc:
                if exc.code != "NoSuchKey":
                    raise
                # Removed before it was read (e.g. lifecycle): retrying cannot bring it back.
                done.missing.append(str(exc))
                continue
            finally:
                if stream is not None:
                    stream.close()
            done.results.append((ref, result))
    except Exception as exc:
        # Whatever went wrong (a bug included), this item alone fails and is retried, and it
        # leaves no claim behind to make its retry wait for the lease to run out.
        if state is not None:
            with contextlib.suppress(Exception):
                state.release_objects(done.claims)
        done.error = _describe(exc, current)
    return done


def _describe(exc: BaseException, what: str) -> str:
    if isinstance(exc, DetectorError):
        return str(exc)
    return f"{what}: unexpected {type(exc).__name__}: {str(exc)[:300]}"


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
    active: Sequence[Active] | None = None,
) -> Outcome:
    """Scan every announced object, aggregate, alert; report which items failed and why.

    ``active``: the enabled detections (None: the default one). Each object is read once for
    all of them, and one message covers the alerts of all of them.

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
    run = Run(allowlist, active)
    done: list[_Done] = []
    scanned = iter(
        _scan_items(
            [item for item in batch.items if item.error is None],
            lambda item: _scan_item(item, objects, allowlist, state, active),
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
        done.append(d)
    claims = [ref for d in done for ref in d.claims]
    try:
        for d in done:
            for _, result in d.results:
                run.add(result)
        out.objects, out.rows = run.objects, run.rows
        out.untrusted = run.matched - run.trusted
        for d in done:
            for _, result in d.results:
                for detection_id, rows in result.stats.kept.items():
                    out.kept[detection_id] = out.kept.get(detection_id, 0) + rows
        out.findings = run.findings()
        out.alerts = rollup(out.findings)
        if out.alerts:
            deadline = _deadline(time_left_ms)
            if deadline():
                raise PublishFailed("publishing", "not started: the function is about to time out")
            if state is None:
                out.rejected = alerts.security_hub(out.alerts, deadline=deadline).rejected
                alerts.notify(out.alerts)
                out.alerted = len(out.alerts)
            else:
                _deliver_once(out, done, alerts, state, window_seconds, deadline)
            out.published = True
        if state is not None:
            state.complete_objects(claims)
    except Exception as exc:
        # Not (fully) delivered, whatever the reason: every item read in this run is retried,
        # so the alert comes later rather than never, and nothing it held blocks the retry.
        # Counts already added are not added again on retry.
        out.failed.extend(d.item for d in done)
        out.errors.append(_describe(exc, "publishing"))
        if state is not None:
            with contextlib.suppress(Exception):
                state.release_objects(claims)
    return out


def _deadline(time_left_ms: Callable[[], int] | None) -> Callable[[], bool]:
    """True once too little time is left to start another Security Hub batch or publish."""
    if time_left_ms is None:
        return lambda: False
    return lambda: time_left_ms() < PUBLISH_RESERVE_MS


T = TypeVar("T")
R = TypeVar("R")


def _parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` on up to ``STATE_WORKERS`` threads; results in order. The first
    exception is raised once every call has finished (none is left running)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(STATE_WORKERS, len(items)), thread_name_prefix="state") as pool:
        futures = [pool.submit(fn, i) for i in items]
    return [f.result() for f in futures]


def _add_contributions(done: list[_Done], state: StateStore) -> dict[str, Totals]:
    """Each object's share of each alert key, added to the key's totals exactly once.

    Calls grow with (objects x alert keys), not with Splunk groups; each key is one task
    (its objects in order), so two workers never race on the same key.
    """
    per_key: dict[str, list[tuple[ObjectRef, Contribution]]] = {}
    for d in done:
        for ref, result in d.results:
            for alert in rollup(result.findings()):
                per_key.setdefault(alert.id, []).append((ref, alert.contribution()))

    def add_all(key: str) -> Totals:
        totals = None
        for ref, part in per_key[key]:
            totals = state.add(key, ref, part)
        assert totals is not None
        return totals

    keys = list(per_key)
    return dict(zip(keys, _parallel(add_all, keys), strict=True))


def _settle_security_hub(
    alerts_: Sequence[Alert],
    totals: dict[str, Totals],
    sink: AlertSink,
    state: StateStore,
    deadline: Callable[[], bool],
    rounds: int = 5,
) -> list[tuple[str, str]]:
    """Re-import keys whose totals moved on while we imported.

    Concurrent invocations may import in any order, and Security Hub keeps the last import. So
    after importing, each invocation checks that the totals it sent are still the newest and
    re-imports the newest otherwise: whichever import lands last carries the latest totals.
    """
    rejected: list[tuple[str, str]] = []
    by_id = {a.id: a for a in alerts_}
    for _ in range(rounds):
        ids = list(totals)
        now = _parallel(state.totals, ids)
        stale = {k: t for k, t in zip(ids, now, strict=True) if t.version != totals[k].version}
        if not stale or deadline():
            return rejected
        totals.update(stale)
        changed = [by_id[k].with_totals(t) for k, t in stale.items()]
        report = sink.security_hub(
            changed, {k: t.created_at for k, t in stale.items()}, deadline=deadline
        )
        rejected += report.rejected
    return rejected


def _deliver_once(
    out: Outcome,
    done: list[_Done],
    sink: AlertSink,
    state: StateStore,
    window_seconds: int,
    deadline: Callable[[], bool],
) -> None:
    totals = _add_contributions(done, state)
    cumulative = [a.with_totals(totals[a.id]) if a.id in totals else a for a in out.alerts]
    report = sink.security_hub(
        cumulative, {k: t.created_at for k, t in totals.items()}, deadline=deadline
    )
    out.rejected = report.rejected
    out.rejected += _settle_security_hub(out.alerts, totals, sink, state, deadline)
    run = {a.id: a for a in out.alerts}
    cumulative = [a.with_totals(totals[a.id]) if a.id in totals else a for a in out.alerts]
    sent = notify_due(cumulative, sink, state, window_seconds, run=run)
    out.alerted = len(sent)
    out.suppressed = len(cumulative) - len(sent)


def notify_due(
    alerts_: Sequence[Alert],
    sink: AlertSink,
    state: StateStore,
    window_seconds: int,
    *,
    run: Mapping[str, Alert] | None = None,
) -> list[Alert]:
    """Send one SNS message for the alerts due under the window; the alerts sent.

    Whether an alert is due is judged on what this run saw (``run``: a successful call, and
    its values of the detection's escalation sample), the message shows ``alerts_``
    (cumulative totals). A key is claimed before sending and confirmed after; if sending fails,
    or anything else does, the claims are released, so the keys are not marked as alerted and
    the next attempt sends.
    """
    seen = run or {}

    def claim(a: Alert) -> tuple[Alert, AlertClaim | None, Exception | None]:
        mine = seen.get(a.id, a)
        try:
            got = state.claim_alert(
                a.id,
                window_seconds,
                success=mine.succeeded > 0,
                values=mine.succeeded_values(),
            )
        except Exception as exc:
            return a, None, exc
        return a, got, None

    due: list[tuple[Alert, AlertClaim | None]]
    if window_seconds <= 0:
        due = [(a, None) for a in alerts_]
    else:
        claimed = _parallel(claim, list(alerts_))
        errors = [e for _, _, e in claimed if e is not None]
        if errors:
            # Give back the claims taken before the failure; the others are not ours.
            _parallel(state.release_alert, [a.id for a, c, _ in claimed if c is not None])
            raise errors[0]
        due = [(dataclasses.replace(a, reason=c.reason), c) for a, c, _ in claimed if c]
    if not due:
        return []
    try:
        sink.notify([a for a, _ in due])
    except BaseException:
        if window_seconds > 0:
            _parallel(state.release_alert, [a.id for a, _ in due])
        raise
    confirmed = [(a.id, c) for a, c in due if c is not None]
    _parallel(lambda pair: state.confirm_alert(*pair), confirmed)
    return [a for a, _ in due]
