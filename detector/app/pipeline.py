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

The two sinks are delivered on their own, the email first: Security Hub never holds it back.
The state table records which sink got what: per object, that its email was settled (sent, or
held back by the window); per alert key, the version of the totals Security Hub got. A finding
Security Hub did not take (unreachable, throttled after retries, out of time) fails the items
that gave it, so Lambda retries them for Security Hub alone: the retry counts nothing twice
(per-object markers), sends no second email (window or not: the object's email is settled) and
re-imports only the keys Security Hub does not have yet. After ``SECURITY_HUB_RETRIES`` such
retries, or when Security Hub refuses us for good (not enabled, access denied), the finding is
given up instead of dead-lettering objects whose email went out: reported in
``Outcome.undelivered`` (metric ``SecurityHubUndelivered``, logged with its alert id).

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

from detector.analysis.engine import ObjectResult, Run, scan_object
from detector.analysis.findings import Finding
from detector.analysis.output import safe_text
from detector.core.allowlist import Allowlist
from detector.core.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    DetectorError,
    ObjectUnreadable,
    PublishFailed,
)
from detector.core.objects import ObjectRef
from detector.core.spec import Active
from detector.lake.notifications import Batch, Item
from detector.report import asff
from detector.report.alerts import Alert, Contribution, CountsLike, reaches, rollup

if TYPE_CHECKING:
    from detector.aws.dynamodb import AlertClaim
    from detector.aws.securityhub import Report
    from detector.report.mutes import Mute, Mutes, MuteView

# Time kept back for publishing when the function nears its timeout: items not started by then
# fail (and are retried) rather than half-finishing.
RESERVE_MS = 30_000
# Time Security Hub leaves for the SNS message and the state writes after it: no Security Hub
# batch starts with less than this left, and publishing does not start at all.
PUBLISH_RESERVE_MS = 10_000
# How long after its bucket a threshold alert's key stays claimed: objects of a bucket keep
# arriving for a while (Security Lake writes every few minutes, redeliveries later), and each
# must not email the same bucket again.
THRESHOLD_LATE_SECONDS = 86_400
# Objects fetched and scanned at once. S3 waits and Parquet decoding (pyarrow releases the GIL)
# overlap; memory grows with it (one row group's needed columns per object in flight).
MAX_PARALLEL_OBJECTS = 4
# State-table calls in flight at once (one worker per alert key, so keys never race here).
STATE_WORKERS = 8
# How many times the objects of an item are sent back (the item fails, Lambda retries it)
# because Security Hub did not take their findings while the email went out. Lambda retries an
# asynchronous invocation twice; SQS redelivers up to the queue's maxReceiveCount. After that
# the finding is given up (counted, logged with its alert id) rather than dead-lettering
# objects whose email went out long ago; the key's next update imports its totals anyway.
SECURITY_HUB_RETRIES = 2


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
    # Which sink got what (see the module docstring).
    def email_handled(self, ref: ObjectRef) -> int | None: ...
    def mark_email_handled(self, refs: Sequence[ObjectRef]) -> None: ...
    def count_security_hub_retry(self, refs: Sequence[ObjectRef]) -> None: ...
    def security_hub_version(self, key_id: str) -> int: ...
    def record_security_hub(self, key_id: str, version: int) -> None: ...
    # Security Hub's RESOLVED ends the alert window once (``detector.mutes``).
    def resolutions_acted(self, key_ids: Iterable[str]) -> set[str]: ...
    def reopen_window(self, key_id: str) -> bool: ...
    def forget_resolution(self, key_id: str) -> None: ...


class Busy(DetectorError):
    """Another invocation holds the object right now; this one retries it later."""


@dataclass(frozen=True)
class Undelivered:
    """A finding Security Hub did not get from this invocation (metric
    ``SecurityHubUndelivered``; the handler logs each with its alert id)."""

    alert_id: str
    finding_id: str
    why: str
    # True: the items that gave it failed, so Lambda retries them for Security Hub (no second
    # email). False: given up: Security Hub refused us for good (not enabled, access denied),
    # the retries are used up, or without a state table a retry would email again.
    retried: bool


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
    # Findings Security Hub did not take from this invocation; the email went out anyway.
    undelivered: list[Undelivered] = field(default_factory=list)
    alerted: int = 0
    suppressed: int = 0
    objects: int = 0
    rows: int = 0
    untrusted: int = 0
    # Rows each detection reported (detection id -> rows), for its metric.
    kept: dict[str, int] = field(default_factory=dict)
    published: bool = False
    # What muted alerts (``detector.mutes``): muted ones, expired mutes, what was not read.
    mutes: MuteView | None = None


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
                if exc.code not in ("NoSuchKey", "NoSuchVersion"):
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
    mutes: Mutes | None = None,
) -> Outcome:
    """Scan every announced object, aggregate, alert; report which items failed and why.

    ``active``: the enabled detections (None: the default one). Each object is read once for
    all of them, and one message covers the alerts of all of them.

    ``mutes``: Security Hub workflow statuses and the mute list (``detector.mutes``); they
    apply with a state table only, which tells an escalation from an ordinary push.

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
    retry: list[_Done] = []  # emailed, but retried for Security Hub's sake
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
        # Thresholds are judged per alert: on this run's counts without a state table, on
        # the totals across objects and invocations with one (``_deliver_once``).
        out.alerts = rollup(run.all_findings(), {a.detection.id: a.options for a in active or ()})
        if state is None:
            out.alerts = [a for a in out.alerts if reaches(a)]
        if out.alerts:
            deadline = _deadline(time_left_ms)
            if deadline():
                raise PublishFailed("publishing", "not started: the function is about to time out")
            if state is None:
                _deliver(out, alerts, deadline)
            else:
                retry = _deliver_once(
                    out, done, alerts, state, window_seconds, deadline, mutes=mutes
                )
            out.published = True
        if state is not None:
            back = {id(d) for d in retry}
            state.complete_objects([ref for d in done if id(d) not in back for ref in d.claims])
        if retry:
            # Emailed (and marked so), not in Security Hub: these items alone are retried, and
            # their retry goes to Security Hub only. Nothing they hold blocks it.
            missed = [u for u in out.undelivered if u.retried]
            out.failed.extend(d.item for d in retry)
            out.errors.append(
                f"Security Hub did not take {len(missed)} finding(s); the email is settled "
                f"(not held back, not sent again), the objects that gave them are retried for "
                f"Security Hub only: {missed[0].why if missed else '-'}"
            )
            assert state is not None
            with contextlib.suppress(Exception):
                state.release_objects([ref for d in retry for ref in d.claims])
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


Parts = dict[str, list[tuple[ObjectRef, Contribution]]]


def _contributions(done: list[_Done]) -> tuple[Parts, list[set[str]]]:
    """Each object's share of each alert key (in the objects' order), and the alert keys each
    item (``done``, same order) contributed to."""
    per_key: Parts = {}
    keys_of: list[set[str]] = []
    for d in done:
        mine: set[str] = set()
        for ref, result in d.results:
            for alert in rollup(result.findings()):
                per_key.setdefault(alert.id, []).append((ref, alert.contribution()))
                mine.add(alert.id)
        keys_of.append(mine)
    return per_key, keys_of


def _add_contributions(per_key: Parts, state: StateStore) -> dict[str, Totals]:
    """Each object's share of each alert key, added to the key's totals exactly once.

    Calls grow with (objects x alert keys), not with Splunk groups; each key is one task
    (its objects in order), so two workers never race on the same key.
    """

    def add_all(key: str) -> Totals:
        totals = None
        for ref, part in per_key[key]:
            totals = state.add(key, ref, part)
        assert totals is not None
        return totals

    keys = list(per_key)
    return dict(zip(keys, _parallel(add_all, keys), strict=True))


@dataclass
class _Hub:
    """What Security Hub did with alerts, by alert id."""

    disabled: bool = False  # no Security Hub to write to: nothing was tried
    sent: set[str] = field(default_factory=set)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (finding Id, why), for good
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # a retry may deliver it
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)  # refused for good

    def undelivered(self, retried: set[str]) -> list[Undelivered]:
        out = [Undelivered(k, f, why, k in retried) for k, (f, why) in self.failed.items()]
        return out + [Undelivered(k, f, why, False) for k, (f, why) in self.blocked.items()]


def _finding_name(alert: Alert) -> str:
    """The alert's ASFF Id as Security Hub reports name it (escaped, cut)."""
    return safe_text(asff.finding_id(alert), 200)


def _to_hub(
    sink: AlertSink,
    alerts_: Sequence[Alert],
    created_at: Mapping[str, int] | None,
    deadline: Callable[[], bool],
) -> _Hub:
    """Import ``alerts_``; what became of each. Never raises for Security Hub's sake: an error
    with no detail (out of time, another sink, a bug) leaves every one of them failed."""
    from detector.aws.securityhub import SecurityHubFailed

    hub = _Hub()
    if not alerts_:
        return hub
    names = {_finding_name(a): a.id for a in alerts_}
    try:
        report = sink.security_hub(alerts_, created_at, deadline=deadline)
    except SecurityHubFailed as exc:
        report = exc.report
    except Exception as exc:
        why = _describe(exc, "Security Hub")
        hub.failed = {a.id: (_finding_name(a), why) for a in alerts_}
        return hub
    if report.disabled:
        hub.disabled = True
        return hub
    hub.rejected = list(report.rejected)
    hub.failed = {names[f]: (f, why) for f, why in report.failed if f in names}
    hub.blocked = {names[f]: (f, why) for f, why in report.blocked if f in names}
    rejected = {names[f] for f, _ in report.rejected if f in names}
    hub.sent = {a.id for a in alerts_} - rejected - hub.failed.keys() - hub.blocked.keys()
    return hub


def _security_hub(
    alerts_: Sequence[Alert],
    totals: Mapping[str, Totals],
    sink: AlertSink,
    state: StateStore,
    deadline: Callable[[], bool],
    skip: set[str],
    rounds: int = 5,
) -> _Hub:
    """Import the alerts with their cumulative totals (except the keys in ``skip``: Security
    Hub has their current totals already), settle, and record what Security Hub got.

    Settling: concurrent invocations may import in any order, and Security Hub keeps the last
    import. So after importing, each invocation checks that the totals it sent are still the
    newest and re-imports the newest otherwise: whichever import lands last carries the latest
    totals. Each key's version that Security Hub got is recorded in the state table, so a
    retry re-imports only what it lacks.
    """
    by_id = {a.id: a for a in alerts_}
    todo = [by_id[k].with_totals(totals[k]) if k in totals else by_id[k] for k in by_id]
    hub = _to_hub(
        sink,
        [a for a in todo if a.id not in skip],
        {k: t.created_at for k, t in totals.items()},
        deadline,
    )
    if hub.disabled:
        return hub
    got = {k: totals[k] for k in hub.sent if k in totals}
    for _ in range(rounds):
        ids = list(got)
        now = _parallel(state.totals, ids)
        stale = {k: t for k, t in zip(ids, now, strict=True) if t.version != got[k].version}
        if not stale or deadline():
            break
        again = _to_hub(
            sink,
            [by_id[k].with_totals(t) for k, t in stale.items()],
            {k: t.created_at for k, t in stale.items()},
            deadline,
        )
        hub.rejected += again.rejected
        hub.failed.update(again.failed)
        hub.blocked.update(again.blocked)
        for k, t in stale.items():
            if k in again.sent:
                got[k] = t
            else:
                got.pop(k)
                hub.sent.discard(k)

    def record(pair: tuple[str, Totals]) -> None:
        # Only saves a retry a re-import: a failure to record costs nothing else.
        with contextlib.suppress(Exception):
            state.record_security_hub(pair[0], pair[1].version)

    _parallel(record, list(got.items()))
    return hub


def _deliver(out: Outcome, sink: AlertSink, deadline: Callable[[], bool]) -> None:
    """Without a state table: the email, then Security Hub, each on its own.

    Nothing records that the email went out, so retrying the items for Security Hub would
    email again: what Security Hub does not take is given up (counted, logged). A failed email
    fails the items (the retry re-imports harmlessly).
    """
    try:
        sink.notify(out.alerts)
    except Exception:
        hub = _to_hub(sink, out.alerts, None, deadline)
        out.rejected, out.undelivered = hub.rejected, hub.undelivered(set(hub.failed))
        raise
    out.alerted = len(out.alerts)
    hub = _to_hub(sink, out.alerts, None, deadline)
    out.rejected, out.undelivered = hub.rejected, hub.undelivered(set())


def _deliver_once(
    out: Outcome,
    done: list[_Done],
    sink: AlertSink,
    state: StateStore,
    window_seconds: int,
    deadline: Callable[[], bool],
    *,
    mutes: Mutes | None = None,
) -> list[_Done]:
    """Deliver with the state table; the items to retry for Security Hub's sake.

    1. Each object's share of each alert key is added to the key's totals, exactly once.
    2. The email, first: one message for the keys due under the window. A key whose every
       object here had its email settled by an earlier attempt (this is a retry for Security
       Hub) is not judged again: that attempt emailed it or the window held it back. Once the
       message is out, every object is recorded as emailed, before Security Hub is tried.
    3. Security Hub, on its own, whatever the email did. A finding it did not take fails the
       items that gave it (up to ``SECURITY_HUB_RETRIES`` times per object), else is given up.

    If the email fails, Security Hub is still written, then the error is raised: every item
    fails and the retry sends the email.
    """
    per_key, keys_of = _contributions(done)
    totals = _add_contributions(per_key, state)
    # A threshold not reached yet: counted above, told nowhere (a later object may reach it).
    out.alerts = [a for a in out.alerts if reaches(a, totals.get(a.id))]
    claims = [ref for d in done for ref in d.claims]
    before = dict(zip(claims, _parallel(state.email_handled, claims), strict=True))
    settled = {
        k for k, parts in per_key.items() if all(before.get(r) is not None for r, _ in parts)
    }
    run = {a.id: a for a in out.alerts}
    cumulative = [a.with_totals(totals[a.id]) if a.id in totals else a for a in out.alerts]
    judged = [a for a in cumulative if a.id not in settled]
    # Read before the email, never holding it back (errors only mute nothing).
    view = mutes.check(judged, deadline=deadline) if mutes is not None and judged else None
    out.mutes = view
    email_error: Exception | None = None
    marked = False
    try:
        sent = notify_due(judged, sink, state, window_seconds, run=run, mutes=view)
    except Exception as exc:
        email_error = exc
    else:
        muted = len(view.muted) if view is not None else 0
        out.alerted, out.suppressed = len(sent), len(judged) - len(sent) - muted
        try:
            state.mark_email_handled([r for r in claims if before.get(r) is None])
            marked = True
        except Exception:
            # Unrecorded, a retry could email again: so nothing is retried for Security Hub.
            marked = False

    skip: set[str] = set()
    if settled:  # a retry: the keys Security Hub has at their current totals need no import
        ids = sorted(settled)
        has = _parallel(state.security_hub_version, ids)
        skip = {k for k, v in zip(ids, has, strict=True) if v >= totals[k].version}
    hub = _security_hub(out.alerts, totals, sink, state, deadline, skip)
    out.rejected = hub.rejected
    if email_error is not None:
        out.undelivered = hub.undelivered(set(hub.failed))  # every item is retried
        raise email_error

    retry: list[_Done] = []
    retried: set[str] = set()
    if hub.failed and marked:
        for d, keys in zip(done, keys_of, strict=True):
            tries = max((before.get(r) or 0 for r in d.claims), default=0)
            if d.claims and keys & hub.failed.keys() and tries < SECURITY_HUB_RETRIES:
                retry.append(d)
                retried |= keys & hub.failed.keys()
    out.undelivered = hub.undelivered(retried)
    if retry:
        state.count_security_hub_retry([r for d in retry for r in d.claims])
    return retry


def notify_due(
    alerts_: Sequence[Alert],
    sink: AlertSink,
    state: StateStore,
    window_seconds: int,
    *,
    run: Mapping[str, Alert] | None = None,
    mutes: MuteView | None = None,
) -> list[Alert]:
    """Send one SNS message for the alerts due under the window; the alerts sent.

    Whether an alert is due is judged on what this run saw (``run``: a successful call, and
    its values of the detection's escalation sample), the message shows ``alerts_``
    (cumulative totals). A key is claimed before sending and confirmed after; if sending fails,
    or anything else does, the claims are released, so the keys are not marked as alerted and
    the next attempt sends.

    ``mutes`` (``detector.mutes``): a finding RESOLVED in Security Hub ends its key's window
    first (once per resolution); a due alert that is muted (SUPPRESSED, or the mute list) is
    not sent unless it escalates, and its claim is confirmed as if it had been: the window
    remembers what it reported, so a first success or a new value later in it still emails.
    Muted alerts are listed in ``mutes.muted``.
    """
    seen = run or {}
    if mutes is not None and window_seconds > 0:
        _reopen_resolved(alerts_, state, mutes)

    def claim(a: Alert) -> tuple[Alert, AlertClaim | None, Exception | None]:
        mine = seen.get(a.id, a)
        rule = a.detection.threshold
        try:
            if rule is None:
                got = state.claim_alert(
                    a.id,
                    window_seconds,
                    success=mine.succeeded > 0,
                    values=mine.succeeded_values(),
                )
            else:
                # Once per bucket and key: the window outlasts the bucket and late objects.
                window = max(window_seconds, rule.bucket_seconds + THRESHOLD_LATE_SECONDS)
                got = state.claim_alert(a.id, window)
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
        due = [
            (dataclasses.replace(a, reason=c.reason, held=c.held, held_total=c.held_total), c)
            for a, c, _ in claimed
            if c
        ]
    silenced: list[tuple[Alert, AlertClaim | None, Mute]] = []
    if mutes is not None:
        due, silenced = _apply_mutes(due, mutes, seen)
    if due:
        try:
            sink.notify([a for a, _ in due])
        except BaseException:
            if window_seconds > 0:
                _parallel(state.release_alert, [a.id for a, _ in due + [s[:2] for s in silenced]])
            raise
    confirmed = [(a.id, c) for a, c in due if c is not None]
    # A muted claim opens or continues the window as if emailed; held values wait for an email.
    confirmed += [
        (a.id, dataclasses.replace(c, held=frozenset(), held_total=0))
        for a, c, _ in silenced
        if c is not None
    ]
    _parallel(lambda pair: state.confirm_alert(*pair), confirmed)
    if mutes is not None:
        from detector.report.mutes import Muted

        mutes.muted += [Muted(a.id, a.key.principal, m) for a, _, m in silenced]
    return [a for a, _ in due]


def _apply_mutes(
    due: list[tuple[Alert, AlertClaim | None]], view: MuteView, seen: Mapping[str, Alert]
) -> tuple[list[tuple[Alert, AlertClaim | None]], list[tuple[Alert, AlertClaim | None, Mute]]]:
    """Split the due alerts into those emailed (an escalation of a muted one carries a line
    saying so) and those muted."""
    from detector.report.mutes import REOPENED_NOTE, escalated, with_note

    kept: list[tuple[Alert, AlertClaim | None]] = []
    silenced: list[tuple[Alert, AlertClaim | None, Mute]] = []
    for a, c in due:
        mine = seen.get(a.id, a)  # this run's share; ``a`` holds the cumulative totals
        note = REOPENED_NOTE if a.id in view.reopened else ""
        mute = view.mute_of(a)
        if mute is not None:
            reason = escalated(
                a.reason,
                now=mine,
                total=a,
                before=c.before if c is not None else frozenset(),
                before_overflow=c.before_overflow if c is not None else False,
            )
            if reason is None:
                silenced.append((a, c, mute))
                continue
            a, note = dataclasses.replace(a, reason=reason), mute.note()
        kept.append((with_note(a, note) if note else a, c))
    return kept, silenced


def _reopen_resolved(alerts_: Sequence[Alert], state: StateStore, view: MuteView) -> None:
    """End the alert window of keys whose finding is newly RESOLVED (once per resolution: the
    state table remembers it acted, until it sees the finding in another status). Never
    raises: what failed is in ``view.problems`` and that key keeps its window."""
    from detector.report.mutes import RESOLVED

    ids = [a.id for a in alerts_ if view.status(a.id) is not None]
    if not ids:
        return
    try:
        acted = state.resolutions_acted(ids)
    except Exception as exc:
        view.problems.append(f"Security Hub RESOLVED not acted on: {_describe(exc, 'state')}")
        return

    def act(key: str) -> str | None:
        try:
            if view.status(key) == RESOLVED and key not in acted:
                return key if state.reopen_window(key) else None
            if view.status(key) != RESOLVED and key in acted:
                state.forget_resolution(key)
        except Exception as exc:
            view.problems.append(f"Security Hub RESOLVED of {key}: {_describe(exc, 'state')}")
        return None

    view.reopened |= {k for k in _parallel(act, ids) if k is not None}
