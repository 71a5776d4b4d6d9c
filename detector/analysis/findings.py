"""Findings: one group of the rows a detection reports, and which findings a run reports.

A finding carries the group's key, count and first and last time, and what a responder needs:
the detection's samples (values of its request fields, say), success/failure counts, the
callers' session issuers, principal ids and calling services, sample event ids and the objects
the events came from. Its JSON form uses the Splunk search's names (``KEY_NAMES``). ``reported``
applies a detection's threshold over a run's findings. How rows become findings is
``aggregate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector import detections
from detector.core.spec import Detection
from detector.lake.schema import GROUP_KEYS

# Bounds on what one finding remembers, so a push storm or hostile data cannot grow memory or
# messages without limit. Counts stay exact; only the samples are capped.
MAX_VALUES = 50
MAX_EVENT_IDS = 5
MAX_OBJECTS = 20
# Where calls with more distinct error codes than a finding keeps are counted.
OTHER_ERRORS = "(other error codes)"

GroupKey = tuple[str | None, ...]  # values of schema.GROUP_KEYS, in order

# Stable output names (the Splunk search's names after its `rename`), in contract order.
KEY_NAMES: dict[str, str] = {
    "operation": "api.operation",
    "user": "user",
    "account": "actor.user.account.uid",
    "user_agent": "user_agent",
    "src_ip": "src_ip",
    "src_domain": "src_endpoint.domain",
    "region": "region",
}


def ctime(ms: int | None) -> str | None:
    """Splunk's ``ctime`` of ``_time`` in seconds: ``%Y-%m-%dT%H:%M:%S`` in UTC."""
    if ms is None:
        return None
    try:
        moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        # A time outside what a calendar date can hold is bad data, not a reason to crash.
        return None
    # By hand, not strftime: the C library's %Y does not pad years below 1000 to four
    # digits, and this runs twice per finding.
    m = moment
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"


@dataclass(slots=True)
class Sample:
    """A bounded set of distinct values, remembering whether more were seen.

    Values added with ``priority`` (e.g. the targets of successful calls) are kept before the
    others: when the sample is full, a priority value evicts an ordinary one. So 50 failed
    calls on decoy targets cannot push the one successful call out of the sample.
    """

    values: dict[str, bool] = field(default_factory=dict)  # value -> added with priority
    more: bool = False
    limit: int = MAX_VALUES

    def add(self, items: list[Any] | None, *, priority: bool = False) -> None:
        for item in items or ():
            if item is None:
                continue
            if item in self.values:
                if priority and not self.values[item]:
                    self.values[item] = True
                continue
            if len(self.values) >= self.limit:
                self.more = True
                if not priority:
                    return
                if not self._evict_ordinary():
                    continue  # full of priority values already
            self.values[item] = priority

    def _evict_ordinary(self) -> bool:
        for value, prio in reversed(self.values.items()):
            if not prio:
                del self.values[value]
                return True
        return False

    def copy(self) -> Sample:
        """An independent copy; per finding and sample, so without dataclass machinery."""
        return Sample(dict(self.values), self.more, self.limit)

    def merge(self, other: Sample) -> None:
        self.add([v for v, p in other.values.items() if p], priority=True)
        self.add([v for v, p in other.values.items() if not p])
        self.more = self.more or other.more

    def sorted(self) -> list[str]:
        return sorted(self.values)

    def succeeded(self) -> list[str]:
        return sorted(v for v, p in self.values.items() if p)

    def prioritised(self) -> list[str]:
        """Priority values first, each part sorted."""
        return sorted(v for v, p in self.values.items() if p) + sorted(
            v for v, p in self.values.items() if not p
        )


@dataclass(frozen=True)
class _Generic:
    """A sample every finding keeps, whatever its detection."""

    name: str
    column: str | None  # the internal column sampled (None: the source object)
    limit: int
    aggregation: str = "distinct"


# After the detection's own samples, in record order. The first three count for
# ``samples_truncated``; event ids and objects are capped on purpose and do not.
_GENERIC = (
    _Generic("session_issuers", "session_issuer", MAX_VALUES),
    _Generic("principal_ids", "principal_id", MAX_VALUES),
    _Generic("invoked_by", "invoked_by", MAX_VALUES),
    _Generic("user_types", "user_type", MAX_VALUES),
    _Generic("access_keys", "credential_uid", MAX_VALUES),
    _Generic("mfa", "mfa", MAX_VALUES),
    _Generic("event_ids", "event_uid", MAX_EVENT_IDS, "list"),
    _Generic("objects", None, MAX_OBJECTS),
    # The account each event was recorded in: the ``accountId=`` partition of its object's key
    # (Security Lake's layout). For a call on a resource, the resource owner's account.
    _Generic("recorded_accounts", None, MAX_VALUES),
)
_TRUNCATION = ("session_issuers", "principal_ids", "invoked_by")
GENERIC_SAMPLES = tuple(g.name for g in _GENERIC)


def default_detection() -> Detection:
    """The detection a finding or aggregate built without one belongs to."""
    return detections.get(detections.DEFAULT)


def sample_names(detection: Detection) -> tuple[str, ...]:
    """A finding's samples, in order: the detection's own, then the generic ones."""
    extra = tuple(s.name for s in detection.extra_samples)
    return tuple(s.name for s in detection.samples) + GENERIC_SAMPLES + extra


# (detection id, its sample names) -> sample name -> limit, checked once per detection: a push
# storm makes many findings, and each must not pay for the check.
_LAYOUTS: dict[tuple[str, ...], dict[str, int]] = {}


def _layout(detection: Detection) -> dict[str, int]:
    """Sample name -> limit of a detection's findings, in record order."""
    names = [s.name for s in (*detection.samples, *detection.extra_samples)]
    key = (detection.id, *names)
    layout = _LAYOUTS.get(key)
    if layout is None:
        for g in _GENERIC:
            if g.name in names:
                raise ValueError(
                    f"detection {detection.slug}: sample name {g.name!r} is the engine's"
                )
        layout = dict.fromkeys(names, MAX_VALUES) | {g.name: g.limit for g in _GENERIC}
        _LAYOUTS[key] = layout
    return layout


_EMPTY = Sample({}, False, 0)  # read-only stand-in for a sample nothing was added to


@dataclass
class Finding:
    """One group of rows a detection reported.

    The samples are reached by name: ``finding.sample("session_issuers")``, or as attributes
    (``finding.session_issuers``), the detection's own included.
    """

    key: GroupKey
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    succeeded: int = 0
    failed: int = 0
    detection: Detection = field(default_factory=default_detection)
    # sample name -> sample, made on first use (``sample``): most findings of a push storm
    # leave most samples empty, and a finding is made per group.
    samples: dict[str, Sample] = field(default_factory=dict)
    # A hidden grouping key: for rows without a caller ARN, the principal id. Callers recorded
    # without an ARN (``AWSAccount``: another account's principal) share a null ``user``; they
    # must not share a finding, or one caller's alert window would silence the other's. Not
    # in the record: the Splunk grouping's columns stay as they are.
    anon: str | None = None
    # Error code -> calls that failed with it (``api.response.error``), at most ``MAX_VALUES``
    # codes; calls with further codes are counted under ``OTHER_ERRORS``.
    errors: dict[str, int] = field(default_factory=dict)
    # For a detection with a ``Threshold``: the start (epoch ms) of the time bucket the rows
    # fell in, a grouping key of its own (None otherwise, or for rows without a time).
    bucket: int | None = None

    def __post_init__(self) -> None:
        layout = _layout(self.detection)  # a sample name clash fails here
        unknown = [name for name in self.samples if name not in layout]
        if unknown:
            raise KeyError(f"{self.detection.slug}: no sample {unknown[0]!r}")

    def __getattr__(self, name: str) -> Sample:
        # Only called when normal lookup fails: the samples by name. ``samples`` itself is
        # looked up in ``__dict__`` so a half-built object (copy, pickle) cannot recurse.
        if "samples" not in self.__dict__ or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        try:
            return self.sample(name)
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!s} has no attribute or sample {name!r}"
            ) from None

    def sample(self, name: str) -> Sample:
        """The sample ``name`` (made, empty, on first use)."""
        got = self.samples.get(name)
        if got is None:
            limit = _layout(self.detection).get(name)
            if limit is None:
                raise KeyError(f"{self.detection.slug}: no sample {name!r}")
            got = self.samples[name] = Sample({}, False, limit)
        return got

    def _peek(self, name: str) -> Sample:
        """The sample ``name`` to read, without making it."""
        return self.samples.get(name, _EMPTY)

    def field(self, name: str) -> str | None:
        return self.key[GROUP_KEYS.index(name)]

    @property
    def user(self) -> str | None:
        return self.field("user")

    def copy(self) -> Finding:
        """An independent copy (samples included), cheaper than ``copy.deepcopy`` or
        ``dataclasses.replace`` (one per finding of every object merged into a run)."""
        new = Finding.__new__(Finding)
        new.__dict__.update(self.__dict__)
        new.samples = {name: sample.copy() for name, sample in self.samples.items()}
        new.errors = dict(self.errors)
        return new

    def add_errors(self, counts: dict[str, int]) -> None:
        for code, n in counts.items():
            if code in self.errors or len(self.errors) < MAX_VALUES:
                self.errors[code] = self.errors.get(code, 0) + n
            else:
                self.errors[OTHER_ERRORS] = self.errors.get(OTHER_ERRORS, 0) + n

    def merge(self, other: Finding) -> None:
        if other.errors:
            self.add_errors(other.errors)
        self.count += other.count
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.first_ms = min_opt(self.first_ms, other.first_ms)
        self.last_ms = max_opt(self.last_ms, other.last_ms)
        for name, sample in other.samples.items():
            mine = self.samples.get(name)
            if mine is None:
                self.samples[name] = sample.copy()
            else:
                mine.merge(sample)

    def who(self) -> str:
        """The best name for the actor, for messages: caller ARN, else principal or service."""
        for candidate in (
            self.user,
            *self._peek("session_issuers").sorted(),
            *self._peek("invoked_by").sorted(),
            *self._peek("principal_ids").sorted(),
        ):
            if candidate:
                return candidate
        return "(no caller identity recorded)"

    def to_record(self) -> dict[str, Any]:
        """The JSON form. The first ten keys are a stable contract; more may follow."""
        detection = self.detection
        own = [s.name for s in detection.samples]
        rec: dict[str, Any] = {KEY_NAMES[k]: v for k, v in zip(GROUP_KEYS, self.key, strict=True)}
        rec |= {
            "count": self.count,
            "firstTime": ctime(self.first_ms),
            "lastTime": ctime(self.last_ms),
            "message": detection.message(self.who()),
            "detection_id": detection.id,
            "severity": detection.severity,
            "risk_score": detection.risk_score,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }
        peek = self._peek
        for name in own:
            rec[name] = sorted(peek(name).values)
        for name in ("session_issuers", "principal_ids", "invoked_by", "event_ids"):
            rec[name] = sorted(peek(name).values)
        rec["source_objects"] = sorted(peek("objects").values)
        # Added keys: the values of successful calls (also in the lists above, and never
        # evicted from them by failed calls).
        for spec in detection.samples:
            rec[spec.succeeded_key] = peek(spec.name).succeeded()
        rec["samples_truncated"] = any(peek(name).more for name in (*own, *_TRUNCATION))
        # Added after the contract's keys: the detection's extra samples, then their values of
        # successful calls.
        for spec in detection.extra_samples:
            rec[spec.name] = sorted(peek(spec.name).values)
        for spec in detection.extra_samples:
            rec[spec.succeeded_key] = peek(spec.name).succeeded()
        if detection.threshold is not None:
            rec["bucket"] = ctime(self.bucket)
        return rec


def min_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def max_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def bucket_of(times: pa.Array, bucket_ms: int) -> pa.Array:
    """The start of each time's bucket: floor(t / bucket) * bucket, computed in doubles exactly
    as the SQL statement does (exact for epoch milliseconds); null for a time past 2^53 ms
    (far outside any real event, where doubles are no longer exact) or without a time."""
    exact = pc.and_(pc.greater_equal(times, -_EXACT), pc.less_equal(times, _EXACT))
    safe = pc.if_else(exact, times, 0)
    ratio = pc.floor(pc.divide(safe.cast(pa.float64()), float(bucket_ms)))
    bucket = pc.multiply(ratio, float(bucket_ms)).cast(pa.int64())
    return pc.if_else(exact, bucket, pa.scalar(None, pa.int64()))


_EXACT = 2**53


def reported(findings: Iterable[Finding]) -> list[Finding]:
    """The findings a threshold lets through, in their order: for a detection with a
    ``Threshold``, those whose (bucket, caller ARN) reached it over all the findings given;
    every finding of other detections. Run over a whole run's findings (``scan``, SQL)."""
    given = list(findings)
    totals: dict[tuple[str, int | None, str | None], list[Any]] = {}
    for f in given:
        rule = f.detection.threshold
        if rule is None:
            continue
        got = totals.setdefault((f.detection.id, f.bucket, f.user), [0, set()])
        got[0] += f.count
        if rule.distinct is not None and f.field(rule.distinct) is not None:
            got[1].add(f.field(rule.distinct))
    out = []
    for f in given:
        rule = f.detection.threshold
        if rule is not None:
            if f.bucket is None:  # no time (or an absurd one): in no bucket, as in SQL
                continue
            count, values = totals[(f.detection.id, f.bucket, f.user)]
            if (len(values) if rule.distinct else count) < rule.minimum:
                continue
        out.append(f)
    return out
