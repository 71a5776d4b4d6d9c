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
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol

from detector.allowlist import Allowlist
from detector.asff import key_digest
from detector.engine import ObjectResult, Run, scan_object
from detector.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    BadObject,
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
    item: Item
    claims: list[ObjectRef]
    results: list[tuple[ObjectRef, ObjectResult]]


def _scan_item(
    item: Item, objects: ObjectSource, allowlist: Allowlist, state: StateStore | None, out: Outcome
) -> _Done:
    done = _Done(item, [], [])
    try:
        for ref in item.refs:
            if state is not None:
                claim = state.claim_object(ref)
                if claim == "done":
                    out.duplicates.append(ref.uri)
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
                out.missing.append(str(exc))
                continue
            done.results.append((ref, result))
    except DetectorError:
        if state is not None:
            state.release_objects(done.claims)
        raise
    return done


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
    """Scan every announced object, aggregate, alert; report which items failed and why."""
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
    for item in batch.items:
        if item.error is not None:
            out.failed.append(item)
            out.errors.append(item.error)
            continue
        if time_left_ms is not None and item.refs and time_left_ms() < RESERVE_MS:
            out.failed.append(item)
            out.errors.append(f"{item.refs[0].uri}: not started, the function is about to time out")
            continue
        try:
            d = _scan_item(item, objects, allowlist, state, out)
        except (BadObject, ObjectUnreadable, Busy, DetectorError) as exc:
            out.failed.append(item)
            out.errors.append(str(exc))
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
    due = [
        f
        for f in cumulative
        if window_seconds <= 0 or state.claim_alert(key_id(f.key), window_seconds)
    ]
    out.suppressed = len(cumulative) - len(due)
    if not due:
        return
    try:
        alerts.notify(due)
    except PublishFailed:
        for f in due:
            if window_seconds > 0:
                state.release_alert(key_id(f.key))
        raise
    for f in due:
        if window_seconds > 0:
            state.confirm_alert(key_id(f.key))
    out.alerted = len(due)
