"""Alerts: findings rolled up per (detection, account, principal), the unit people are told about.

``scan`` and ``backfill`` keep the Splunk grouping (one finding per operation, caller, account,
user agent, source IP, source domain and region). Every one of those values is chosen by
whoever makes the call: 3,000 failed calls with 3,000 user agents are 3,000 findings. Alerting
must not grow with that, so the SNS message, Security Hub, the dedup window and the state table
work on alerts instead: one per principal, with exact totals and bounded samples.

The principal of a finding (its rules, in order) and the key of its alert: ``principals``.

Pure: no AWS calls. Rendering caps every sample and every string (``Limits``), so an alert's
size is bounded whatever the data holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from detector.analysis.findings import (
    KEY_NAMES,
    Finding,
    ctime,
    default_detection,
    max_opt,
    min_opt,
)
from detector.core.spec import Detection
from detector.lake.schema import GROUP_KEYS
from detector.report.principals import AlertKey, key_of

# The samples every alert keeps after its detection's own (``Detection.samples``), and the
# finding column each is taken from (event ids are a sample of every finding).
GENERIC_SAMPLES = ("user_agents", "src_ips", "sessions", "regions", "event_ids")
_GENERIC_COLUMNS = {
    "user_agents": "user_agent",
    "src_ips": "src_ip",
    "sessions": "user",
    "regions": "region",
}
# Samples added after the stable keys (see ``Alert.to_record``), each the union of a finding
# sample: who the caller is when the principal alone does not say it.
ADDED_SAMPLES = ("principal_ids", "caller_types", "resource_accounts", "access_keys", "mfa")
_FINDING_SAMPLES = {
    "principal_ids": "principal_ids",
    "caller_types": "user_types",
    # The accounts the calls were recorded in (the object keys' accountId=): the accounts that
    # own what was called (the resource owner).
    "resource_accounts": "recorded_accounts",
    # The access key ids the calls were signed with (actor.user.credential_uid), and whether
    # the session used MFA ("true"/"false" as recorded).
    "access_keys": "access_keys",
    "mfa": "mfa",
}
# The keys before the samples and after them.
_HEAD = (
    "principal",
    "actor.user.account.uid",
    "count",
    "succeeded",
    "failed",
    "firstTime",
    "lastTime",
    "groups",
)
_TAIL = ("findings", "truncated")


def sample_names(detection: Detection) -> tuple[str, ...]:
    """The samples of an alert of ``detection``, each rendered ``{"values": [...], "total":
    N}``: the detection's own, then the generic ones."""
    return (*(s.name for s in detection.samples), *GENERIC_SAMPLES)


def alert_keys(detection: Detection) -> tuple[str, ...]:
    """The stable keys of the JSON form of an alert of ``detection``, in order (scripts rely
    on them); more may follow."""
    return (*_HEAD, *sample_names(detection), *_TAIL)


# The keys and samples of an alert of the default detection.
ALERT_KEYS = alert_keys(default_detection())
SAMPLES = sample_names(default_detection())

# Why an alert is in a message (``Alert.reason``).
NEW = "new"  # not alerted within the window (or no state table)
FIRST_SUCCESS = "first_success"  # emailed in the window for failures only; now a call succeeded
# A successful call with a value of the detection's ``escalate_on`` sample not yet reported in
# the window. Rendered in JSON as the detection's ``new_value_reason``.
NEW_VALUE = "new_value"
NEW_REPOSITORY = NEW_VALUE  # the name before detections were specs


@dataclass(frozen=True)
class Limits:
    """How much of an alert is rendered: values per sample, findings, characters per string."""

    values: int = 20
    findings: int = 10
    text: int = 512


FULL = Limits()


class CountsLike(Protocol):
    @property
    def count(self) -> int: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def first_ms(self) -> int | None: ...
    @property
    def last_ms(self) -> int | None: ...


@dataclass(frozen=True)
class Contribution:
    """What a set of findings adds to an alert's totals (one object's share, for the state)."""

    count: int = 0
    succeeded: int = 0
    failed: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    # A window detection's distinct values (``Threshold.distinct``), at most ``MAX_DISTINCT``.
    distinct: frozenset[str] = frozenset()


# Distinct values a threshold's count keeps: far above any threshold, small in an item.
MAX_DISTINCT = 64


def reaches(alert: Alert, totals: CountsLike | None = None) -> bool:
    """Whether ``alert`` is past its detection's threshold (always, without one), judged on
    ``totals`` (the state table's, across objects) or else on the alert itself."""
    rule = alert.detection.threshold
    if rule is None:
        return True
    if alert.key.bucket is None:  # calls without a (usable) time are in no bucket
        return False
    if rule.distinct is None:
        return (totals.count if totals is not None else alert.count) >= rule.minimum
    values = getattr(totals, "distinct", None) if totals is not None else None
    if values is None:
        values = alert.contribution().distinct
    return len(values) >= rule.minimum


def _finding_order(f: Finding) -> tuple[Any, ...]:
    """Findings with a successful call first, then the busiest, then the most recent."""
    return (
        f.succeeded == 0,
        -f.count,
        -(f.last_ms or 0),
        tuple((v is None, v or "") for v in f.key),
    )


@dataclass
class Alert:
    """Every finding of one (detection, account, principal), with exact totals."""

    key: AlertKey
    findings: list[Finding] = field(default_factory=list)
    count: int = 0
    succeeded: int = 0
    failed: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    reason: str = NEW
    # Escalation values (successful calls) that came after the alert window's one escalation
    # email and were held for this one (the state table's ``held_repos``), and how many
    # distinct ones were held in all: listed so that nothing reported is never emailed.
    held: frozenset[str] = frozenset()
    held_total: int = 0
    # The detection's parsed options in the run that made the alert (``Active.options``), for
    # its own words on why it fired (``EmailText.reason``).
    options: Mapping[str, Any] = field(default_factory=dict)
    # The detection of every finding here (``AlertKey.detection_id`` is its id).
    detection: Detection = field(default_factory=default_detection)
    # A window detection's distinct values over every object (``with_totals``).
    totals_distinct: frozenset[str] = frozenset()
    # Orderings and samples computed from ``findings``: an alert of 100,000 groups (one per
    # user agent, say) is sorted once, not once per sample and per rendering step.
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _memo_of: int = field(default=-1, init=False, repr=False, compare=False)

    @property
    def groups(self) -> int:
        return len(self.findings)

    @property
    def id(self) -> str:
        return self.key.id

    def _cache(self) -> dict[str, Any]:
        if self._memo_of != len(self.findings):  # findings changed since (or never computed)
            self._memo = {}
            self._memo_of = len(self.findings)
        return self._memo

    def add(self, finding: Finding) -> None:
        self._memo_of = -1
        self.findings.append(finding)
        self.count += finding.count
        self.succeeded += finding.succeeded
        self.failed += finding.failed
        self.first_ms = min_opt(self.first_ms, finding.first_ms)
        self.last_ms = max_opt(self.last_ms, finding.last_ms)

    def contribution(self) -> Contribution:
        rule = self.detection.threshold
        distinct: frozenset[str] = frozenset()
        if rule is not None and rule.distinct is not None:
            values = {v for f in self.findings if (v := f.field(rule.distinct)) is not None}
            distinct = frozenset(sorted(values)[:MAX_DISTINCT])
        return Contribution(
            self.count, self.succeeded, self.failed, self.first_ms, self.last_ms, distinct
        )

    def with_totals(self, totals: CountsLike) -> Alert:
        """This alert showing cumulative totals (from the state table) instead of this run's."""
        return replace(
            self,
            totals_distinct=getattr(totals, "distinct", frozenset()),
            count=totals.count,
            succeeded=totals.succeeded,
            failed=totals.failed,
            first_ms=totals.first_ms,
            last_ms=totals.last_ms,
        )

    # --- samples --------------------------------------------------------------------------
    def ordered(self) -> list[Finding]:
        cache = self._cache()
        if "ordered" not in cache:
            cache["ordered"] = sorted(self.findings, key=_finding_order)
        return list(cache["ordered"])

    def sample(self, name: str) -> tuple[list[str], int, bool]:
        """(distinct values, most telling first; how many distinct; whether more existed than
        the findings kept). For the detection's own samples, values of successful calls come
        first."""
        cache = self._cache()
        key = f"sample:{name}"
        if key not in cache:
            cache[key] = self._sample(name)
        values, total, more = cache[key]
        return list(values), total, more

    def _sample(self, name: str) -> tuple[list[str], int, bool]:
        findings = self.ordered()
        more = False
        if name in self._spec_samples():
            samples = [f.sample(name) for f in findings]
            ok = sorted({v for s in samples for v in s.succeeded()})
            rest = sorted({v for s in samples for v in s.values} - set(ok))
            more = any(s.more for s in samples)
            values = ok + rest
        elif name in _FINDING_SAMPLES:
            own = [f.sample(_FINDING_SAMPLES[name]) for f in findings]
            values = sorted({v for s in own for v in s.values if v})
            more = any(s.more for s in own)
        elif name == "event_ids":
            values = list(dict.fromkeys(v for f in findings for v in f.sample("event_ids").values))
            more = any(f.sample("event_ids").more for f in findings)
        else:
            column = {
                "user_agents": "user_agent",
                "src_ips": "src_ip",
                "sessions": "user",
                "regions": "region",
            }[name]
            values = list(dict.fromkeys(v for f in findings if (v := f.field(column)) is not None))
        return values, len(values), more

    def _spec_samples(self) -> tuple[str, ...]:
        detection = self.detection
        return tuple(s.name for s in (*detection.samples, *detection.extra_samples))

    def succeeded_values(self, name: str | None = None) -> list[str]:
        """The distinct values of sample ``name`` (default: the detection's ``escalate_on``)
        in successful calls, sorted."""
        name = name or self.detection.escalate_on
        cache = self._cache()
        key = f"succeeded:{name}"
        if key not in cache:
            cache[key] = sorted({v for f in self.findings for v in f.sample(name).succeeded()})
        return list(cache[key])

    def rendered_reason(self) -> str:
        """``reason`` as JSON shows it: ``NEW_VALUE`` in the detection's own words."""
        return self.detection.new_value_reason if self.reason == NEW_VALUE else self.reason

    def who(self) -> str:
        return self.key.principal

    def error_counts(self) -> list[tuple[str, int]]:
        """(error code, failed calls) over every finding, most frequent first."""
        cache = self._cache()
        if "errors" not in cache:
            total: dict[str, int] = {}
            for f in self.findings:
                for code, n in f.errors.items():
                    total[code] = total.get(code, 0) + n
            cache["errors"] = sorted(total.items(), key=lambda item: (-item[1], item[0]))
        return list(cache["errors"])

    @property
    def severity(self) -> str:
        """The detection's severity, or its ``severity_failed_only`` when no call of the alert
        succeeded (nothing landed): severity follows what happened."""
        lower = self.detection.severity_failed_only
        return lower if lower and self.succeeded == 0 else self.detection.severity

    def cross_account(self) -> list[str]:
        """The resource accounts (``resource_accounts``) other than the caller's, sorted."""
        accounts, _, _ = self.sample("resource_accounts")
        return [a for a in accounts if self.key.account and a != self.key.account]

    # --- the JSON form --------------------------------------------------------------------
    def to_record(self, limits: Limits = FULL) -> dict[str, Any]:
        """The alert as JSON-ready data: exact totals, samples capped by ``limits``.

        Every string from the data is cut at ``limits.text`` characters (marked with an
        ellipsis); JSON encoding escapes the rest.
        """
        cut = _Cutter(limits.text)
        truncated: dict[str, bool] = {}
        rec: dict[str, Any] = {
            "principal": cut(self.key.principal),
            "actor.user.account.uid": cut(self.key.account),
            "count": self.count,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "firstTime": ctime(self.first_ms),
            "lastTime": ctime(self.last_ms),
            "groups": self.groups,
        }
        detection = self.detection
        for name in sample_names(detection):
            values, total, more = self.sample(name)
            shown = values[: limits.values]
            rec[name] = {"values": [cut(v) for v in shown], "total": total}
            truncated[name] = more or len(shown) < total
        findings = self.ordered()[: limits.findings]
        rec["findings"] = {
            "values": [_finding_record(f, cut) for f in findings],
            "total": self.groups,
        }
        truncated["findings"] = len(findings) < self.groups
        truncated["text"] = cut.cut
        rec["truncated"] = truncated
        escalate = next(s for s in detection.samples if s.name == detection.escalate_on)
        ok = self.succeeded_values()
        rec |= {
            escalate.succeeded_key: {
                "values": [cut(v) for v in ok[: limits.values]],
                "total": len(ok),
            },
            "alert_id": self.id,
            "reason": self.rendered_reason(),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "message": detection.message(cut(self.key.principal) or ""),
            "detection_id": self.key.detection_id,
            "severity": self.severity,
            "risk_score": detection.risk_score,
        }
        errors = self.error_counts()
        rec["error_codes"] = {
            "values": [{"code": cut(c), "count": n} for c, n in errors[: limits.values]],
            "total": len(errors),
        }
        truncated["error_codes"] = len(errors) > limits.values
        held = sorted(self.held)
        rec["held_values"] = {
            "values": [cut(v) for v in held[: limits.values]],
            "total": max(self.held_total, len(held)),
        }
        for name in (*ADDED_SAMPLES, *(s.name for s in detection.extra_samples)):
            values, total, more = self.sample(name)
            shown = values[: limits.values]
            rec[name] = {"values": [cut(v) for v in shown], "total": total}
            truncated[name] = more or len(shown) < total
        rule = detection.threshold
        if rule is not None:
            # A threshold detection's alert is one time bucket: which, and what it counted.
            seen = self.contribution().distinct | self.totals_distinct
            bucket_end = None if self.key.bucket is None else self.key.bucket + rule.bucket_ms
            rec["threshold"] = {
                "bucket_start": ctime(self.key.bucket),
                "bucket_end": ctime(bucket_end),
                "minimum": rule.minimum,
                "counted": rule.label,
                "distinct": rule.distinct,
                "value": len(seen) if rule.distinct else self.count,
            }
            if rule.distinct:
                # Every object's values (the state table's), not only this run's samples.
                rec["threshold"]["values"] = [cut(v) for v in sorted(seen)[: limits.values]]
        truncated["text"] = cut.cut
        return rec


class _Cutter:
    """Cuts strings at ``limit`` characters and remembers whether it cut any."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cut = False

    def __call__(self, value: str | None) -> str | None:
        if value is None or len(value) <= self.limit:
            return value
        self.cut = True
        return value[: max(self.limit - 1, 0)] + "…"


def _finding_record(f: Finding, cut: _Cutter) -> dict[str, Any]:
    rec: dict[str, Any] = {KEY_NAMES[k]: cut(v) for k, v in zip(GROUP_KEYS, f.key, strict=True)}
    rec |= {
        "count": f.count,
        "firstTime": ctime(f.first_ms),
        "lastTime": ctime(f.last_ms),
        "succeeded": f.succeeded,
        "failed": f.failed,
    }
    if f.detection.threshold is not None:
        rec["bucket"] = ctime(f.bucket)
    return rec


def alert_order(a: Alert) -> tuple[Any, ...]:
    """Alerts with a successful call first, then by count, then by name (stable)."""
    return (a.succeeded == 0, -a.count, a.key.principal, a.key.account or "", a.key.detection_id)


def rollup(
    findings: Iterable[Finding], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Alert]:
    """The alerts of these findings, in ``alert_order``; ``options``: each detection's parsed
    options by detection id (``Alert.options``)."""
    alerts: dict[AlertKey, Alert] = {}
    given = options or {}
    for f in findings:
        key = key_of(f)
        alert = alerts.get(key)
        if alert is None:
            alert = alerts[key] = Alert(
                key, detection=f.detection, options=given.get(f.detection.id, {})
            )
        alert.add(f)
    return sorted(alerts.values(), key=alert_order)


def totals(alerts: Sequence[Alert]) -> tuple[int, int]:
    """(alerts, calls) over ``alerts``."""
    return len(alerts), sum(a.count for a in alerts)
