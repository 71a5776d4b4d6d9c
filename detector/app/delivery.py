"""Delivering alerts to the two sinks, each on its own (see ``detector.app.pipeline``): each
object's share of each alert key added to the key's totals, the import into Security Hub and its
settling, and the email due under the alert window (``notify_due``), with Security Hub's
workflow statuses and the mute list applied (``detector.report.mutes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from detector.analysis.output import safe_text
from detector.app.ports import AlertSink, StateStore, Totals
from detector.app.scan import _describe, _Done
from detector.core.objects import ObjectRef
from detector.report import asff
from detector.report.alerts import Alert, Contribution, rollup

if TYPE_CHECKING:
    from detector.aws.dynamodb_items import AlertClaim
    from detector.report.mutes import Mute, MuteView

# How long after its bucket a threshold alert's key stays claimed: objects of a bucket keep
# arriving for a while (Security Lake writes every few minutes, redeliveries later), and each
# must not email the same bucket again.
THRESHOLD_LATE_SECONDS = 86_400
# State-table calls in flight at once (one worker per alert key, so keys never race here).
STATE_WORKERS = 8


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

    ``mutes`` (``detector.report.mutes``): a finding RESOLVED in Security Hub ends its key's window
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
