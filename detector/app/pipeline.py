"""One invocation: announced objects in, findings out to the alert sinks.

All objects of an invocation are aggregated together, like one run of the Splunk search. An
item (an SQS record, or the whole direct event) succeeds only when every object in it was read
and the findings it contributed were delivered; otherwise it is reported as failed so Lambda
retries it and, in the end, dead-letters it. Nothing is dropped silently.

Alerting works on alerts (``detector.report.alerts``: findings rolled up per detection, account and
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
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from detector.analysis.engine import Run
from detector.analysis.findings import Finding
from detector.app.delivery import (
    Undelivered,
    _add_contributions,
    _contributions,
    _parallel,
    _security_hub,
    _to_hub,
    notify_due,
)
from detector.app.ports import AlertSink, AllowlistSource, ObjectSource, StateStore
from detector.app.scan import _describe, _Done, _scan_item
from detector.core.errors import AllowlistInvalid, AllowlistUnavailable, PublishFailed
from detector.core.spec import Active
from detector.lake.notifications import Batch, Item
from detector.report.alerts import Alert, reaches, rollup

if TYPE_CHECKING:
    from detector.report.mutes import Mutes, MuteView

# Time kept back for publishing when the function nears its timeout: items not started by then
# fail (and are retried) rather than half-finishing.
RESERVE_MS = 30_000
# Time Security Hub leaves for the SNS message and the state writes after it: no Security Hub
# batch starts with less than this left, and publishing does not start at all.
PUBLISH_RESERVE_MS = 10_000
# Objects fetched and scanned at once. S3 waits and Parquet decoding (pyarrow releases the GIL)
# overlap; memory grows with it (one row group's needed columns per object in flight).
MAX_PARALLEL_OBJECTS = 4
# How many times the objects of an item are sent back (the item fails, Lambda retries it)
# because Security Hub did not take their findings while the email went out. Lambda retries an
# asynchronous invocation twice; SQS redelivers up to the queue's maxReceiveCount. After that
# the finding is given up (counted, logged with its alert id) rather than dead-lettering
# objects whose email went out long ago; the key's next update imports its totals anyway.
SECURITY_HUB_RETRIES = 2


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
    # What muted alerts (``detector.report.mutes``): muted ones, expired mutes, what was not read.
    mutes: MuteView | None = None


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

    ``mutes``: Security Hub workflow statuses and the mute list (``detector.report.mutes``); they
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
