"""Muting alerts from where people triage: Security Hub's workflow status, and a time-bounded
mute list kept beside the allowlist. Pure: the reads are done by adapters behind the two
protocols below (``detector.aws.securityhub.WorkflowReader``, ``detector.aws.ssm.MuteListStore``).

**Security Hub.** Each alert has one finding (``detector.report.asff.finding_id``). Its workflow
status is the customer's (our imports never carry ``Workflow``), read before the email in batches of
``GetFindings`` calls:

- ``SUPPRESSED`` mutes the alert's emails for as long as the finding stays suppressed, except
  an escalation: the first successful call after failures, or a value of the detection's
  escalation sample not reported yet (the reasons ``FIRST_SUCCESS`` / ``NEW_VALUE`` of the
  alert window). The first success after nothing but failures escalates even when the window
  ended in between (``escalated``). A muted alert counts as reported for the window (its
  claim is confirmed as if emailed), so escalations later in the window are still told apart.
- ``RESOLVED`` ends the alert window once: the principal's next call is a new alert (a fresh
  email, reason ``new``), as if the window had ended. The state table remembers that it acted
  on this resolution, so a finding left resolved does not make every later call an email;
  seeing the finding in any other status re-arms it.

**The mute list** (``MUTES_PARAMETER``, one SSM parameter), one entry a line::

    # <principal>                              until=<UTC time>        why=<free text>
    arn:aws:iam::111122223333:role/load-test  until=2026-12-31T00:00Z  why=load test, SEC-123

Strict: the principal is an allowlist entry (``detector.core.allowlist.entry_problem``: one
account's principals or one AWS service, no catch-all, no federated user), and not an assumed
role's session (an alert's principal is the role: mute the role); ``until`` is a UTC time
written ``YYYY-MM-DDTHH:MM[:SS]Z``, at most ``MAX_MUTE_DAYS`` ahead; ``why`` is required. A
mute mutes like ``SUPPRESSED`` (escalations still email, saying "Muted until ..."), and
expires on its own: past ``until`` it no longer mutes, and the alert it would have muted is
logged as such. A list with any bad line is not applied at all (every alert is emailed as if
nothing were muted) and the error names the line: a mute never silences more than it says.

**Never blocks the email.** A Security Hub or SSM error is recorded (``MuteView.problems``,
logged and counted by the handler) and the alerts concerned are emailed as if not muted.
Muted alerts are still imported into Security Hub (counts, samples) like every other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Protocol

from detector.core.allowlist import Allowlist, entry_problem
from detector.core.errors import DetectorError
from detector.report import asff
from detector.report.alerts import FIRST_SUCCESS, NEW, NEW_VALUE, Alert

SUPPRESSED = "SUPPRESSED"
RESOLVED = "RESOLVED"
# How far ahead a mute may run: a mute for years is an allowlist entry nobody reviews.
MAX_MUTE_DAYS = 90
MAX_ENTRIES = 500
MAX_WHY = 200
# A mute entry: principal, until=, why= (the rest of the line), separated by blanks.
_LINE = re.compile(r"(?P<principal>\S+)(?:[ \t]+(?P<rest>.*))?")
_UNTIL = re.compile(r"until=(?P<until>\S*)(?:[ \t]+(?P<rest>.*))?")
_WHY = re.compile(r"why=(?P<why>.*)")
_TIME = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})T(?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?Z"
)
_FORMAT = "write <principal> until=YYYY-MM-DDTHH:MMZ why=<reason>"


class MuteListInvalid(DetectorError):
    """The mute list cannot be parsed: it is not applied at all."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"mute list {source}: {reason}")
        self.source = source
        self.reason = reason


class MuteListUnavailable(DetectorError):
    """The mute list could not be read (missing parameter, access denied, throttled)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def when(moment: datetime) -> str:
    """A time as mute entries and emails write it: ``2026-12-31 00:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class MuteEntry:
    principal: str
    until: datetime
    why: str
    line: int
    source: str = "<inline>"
    _match: Allowlist = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The allowlist's own matching (exact, or a one-account glob): checked by the parser.
        object.__setattr__(self, "_match", Allowlist((self.principal,), self.source))

    def matches(self, principal: str) -> bool:
        return self._match.matches(principal)


@dataclass(frozen=True)
class MuteList:
    entries: tuple[MuteEntry, ...] = ()
    source: str = "<inline>"

    @classmethod
    def parse(cls, text: str, source: str = "<inline>", *, now: datetime | None = None) -> MuteList:
        """Parse the mute list; raises ``MuteListInvalid`` naming the first bad line."""
        now = now or utcnow()
        entries: list[MuteEntry] = []
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = raw.strip(" \t\r")
            if not line or line.startswith("#"):
                continue
            entries.append(_entry(line, lineno, source, now))
            if len(entries) > MAX_ENTRIES:
                raise MuteListInvalid(source, f"more than {MAX_ENTRIES} entries")
        return cls(tuple(entries), source)

    def find(self, principal: str) -> list[MuteEntry]:
        return [e for e in self.entries if e.matches(principal)]


def _entry(line: str, lineno: int, source: str, now: datetime) -> MuteEntry:
    def bad(problem: str) -> MuteListInvalid:
        return MuteListInvalid(source, f"line {lineno}: {problem}")

    head = _LINE.fullmatch(line)
    assert head is not None  # a non-blank line always has a first word
    principal = head["principal"]
    problem = entry_problem(principal)
    if problem:
        raise bad(f"principal {principal[:80]!r} {problem}")
    if ":assumed-role/" in principal:
        role = re.sub(r":sts::(\d{12}):assumed-role/([^/]+)/.*", r":iam::\1:role/\2", principal)
        raise bad(
            f"principal {principal[:80]!r} is a role session; an alert is about the role: "
            f"mute {role[:120]!r}"
        )
    until_part = _UNTIL.fullmatch(head["rest"] or "")
    if until_part is None:
        raise bad(f"no until= after the principal; {_FORMAT}")
    until = _time(until_part["until"])
    if until is None:
        raise bad(
            f"until={until_part['until'][:40]!r} is not a UTC time written YYYY-MM-DDTHH:MMZ "
            "(or YYYY-MM-DDTHH:MM:SSZ), e.g. until=2026-12-31T00:00Z"
        )
    if until > now + timedelta(days=MAX_MUTE_DAYS):
        raise bad(
            f"until={until_part['until']} is more than {MAX_MUTE_DAYS} days ahead; a mute "
            "that long is an allowlist entry (docs/allowlist.md), or renew it later"
        )
    why_part = _WHY.fullmatch(until_part["rest"] or "")
    why = why_part["why"].strip(" \t") if why_part else ""
    if not why:
        raise bad(f"no why= after until= (say why, e.g. a ticket); {_FORMAT}")
    if len(why) > MAX_WHY or not why.isprintable():
        raise bad(f"why= must be printable text of at most {MAX_WHY} characters")
    return MuteEntry(principal, until, why, lineno, source)


def _time(text: str) -> datetime | None:
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    try:
        return datetime(
            int(m["y"]),
            int(m["mo"]),
            int(m["d"]),
            int(m["h"]),
            int(m["mi"]),
            int(m["s"] or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None


# --- sources ----------------------------------------------------------------------------------


class MuteListSource(Protocol):
    name: str

    def get(self) -> MuteList: ...


@dataclass
class WorkflowRead:
    """What a batched read of Security Hub workflow statuses gave."""

    statuses: dict[str, str] = field(default_factory=dict)  # finding Id -> Workflow.Status
    unread: list[str] = field(default_factory=list)  # finding Ids not read (error, budget, time)
    error: str | None = None  # why some were not read
    calls: int = 0


class WorkflowSource(Protocol):
    def statuses(
        self, finding_ids: Sequence[str], *, deadline: Callable[[], bool] | None = None
    ) -> WorkflowRead: ...


# --- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mute:
    """Why an alert is muted: a mute-list entry, or its finding's ``SUPPRESSED`` status."""

    entry: MuteEntry | None = None  # None: Security Hub

    @property
    def by(self) -> str:
        return "mute list" if self.entry else "Security Hub"

    def note(self) -> str:
        """The line an escalation's email carries."""
        if self.entry is None:
            return (
                "Muted in Security Hub (workflow status SUPPRESSED); emailed because it escalated."
            )
        return (
            f"Muted until {when(self.entry.until)} ({self.entry.why}); emailed because it "
            "escalated."
        )


REOPENED_NOTE = "Resolved in Security Hub since the last email: this is a new alert."


@dataclass
class TriagedAlert(Alert):
    """An alert emailed with a line about its triage state (``triage_note``): a mute it
    escalated past, or a Security Hub resolution it reopened. ``detector.report.digest`` shows
    it."""

    triage_note: str = ""


def with_note(alert: Alert, note: str) -> Alert:
    values = {f.name: getattr(alert, f.name) for f in fields(alert) if f.init}
    values["triage_note"] = note
    return TriagedAlert(**values)


@dataclass
class Muted:
    """An alert that was due and not emailed, and why."""

    alert_id: str
    principal: str
    mute: Mute


@dataclass
class MuteView:
    """One invocation's view of the mutes, and what was done with it (for logs and metrics).
    Built by ``Mutes.check``; ``detector.app.pipeline`` fills ``muted`` and ``reopened``."""

    now: datetime
    mute_list: MuteList | None = None
    # finding status per alert id, for the alerts whose finding Security Hub has
    statuses: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    list_failed: bool = False
    unread: int = 0  # alerts whose workflow status was not read (emailed as if not muted)
    calls: int = 0
    muted: list[Muted] = field(default_factory=list)
    expired: list[tuple[str, MuteEntry]] = field(default_factory=list)  # (alert id, entry)
    reopened: set[str] = field(default_factory=set)

    def status(self, alert_id: str) -> str | None:
        return self.statuses.get(alert_id)

    def mute_of(self, alert: Alert) -> Mute | None:
        """What mutes ``alert`` now, if anything; an expired entry it matched is noted."""
        if self.mute_list is not None:
            found = self.mute_list.find(alert.key.principal)
            active = [e for e in found if e.until > self.now]
            if active:
                return Mute(max(active, key=lambda e: e.until))
            for entry in found:
                self.expired.append((alert.id, entry))
        if self.statuses.get(alert.id) == SUPPRESSED:
            return Mute()
        return None


def escalated(
    reason: str,
    *,
    now: Alert,
    total: Alert,
    before: frozenset[str] = frozenset(),
    before_overflow: bool = False,
) -> str | None:
    """The reason a muted alert is emailed anyway, or None (it stays muted).

    ``reason`` is the alert window's (``claim_alert``); ``now`` is this run's share of the
    alert, ``total`` its cumulative totals. The first successful call after nothing but
    failures is an escalation even when the alert window had ended meanwhile (the reason is
    then ``new``): whoever muted it saw failures only.
    """
    if reason in (FIRST_SUCCESS, NEW_VALUE):
        return reason
    calls_before = total.count - now.count
    successes_before = total.succeeded - now.succeeded
    if reason == NEW and now.succeeded > 0 and calls_before > 0 and successes_before <= 0:
        return FIRST_SUCCESS
    # A new window of a muted key: a successful call with a value its last window did not
    # report (news nobody was told about) escalates, as it would within a window. When the
    # last window reported more than it could remember, every success does.
    if reason == NEW and now.succeeded > 0:
        if before_overflow:
            return NEW_VALUE
        if before and set(now.succeeded_values()) - before:
            return NEW_VALUE
    return None


class Mutes:
    """The mute list and Security Hub's workflow statuses, either optional."""

    def __init__(
        self,
        mute_list: MuteListSource | None = None,
        workflow: WorkflowSource | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.mute_list = mute_list
        self.workflow = workflow
        self.clock = clock or (lambda: utcnow())

    def check(
        self, alerts: Iterable[Alert], *, deadline: Callable[[], bool] | None = None
    ) -> MuteView:
        """Read what mutes ``alerts``. Never raises: what could not be read is in
        ``problems`` and mutes nothing."""
        alerts = list(alerts)
        view = MuteView(now=self.clock())
        if not alerts:
            return view
        if self.mute_list is not None:
            try:
                view.mute_list = self.mute_list.get()
            except Exception as exc:
                view.list_failed = True
                view.problems.append(
                    f"mute list {self.mute_list.name} not applied (every alert is emailed as "
                    f"if not muted): {_describe(exc)}"
                )
        if self.workflow is not None:
            names = {asff.finding_id(a): a.id for a in alerts}
            try:
                read = self.workflow.statuses(list(names), deadline=deadline)
            except Exception as exc:  # an adapter bug must not block the email either
                read = WorkflowRead(unread=list(names), error=_describe(exc))
            view.statuses = {names[f]: s for f, s in read.statuses.items() if f in names}
            view.unread = len(read.unread)
            view.calls = read.calls
            if read.unread:
                view.problems.append(
                    f"Security Hub workflow status of {len(read.unread)} alert(s) not read "
                    f"(emailed as if not muted): {read.error or 'unknown'}"
                )
        return view


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DetectorError):
        return str(exc)[:500]
    return f"unexpected {type(exc).__name__}: {str(exc)[:300]}"
