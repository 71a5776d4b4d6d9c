"""Aggregation of untrusted PutImage rows into findings, like the Splunk search's ``stats``.

``stats count min(_time) max(_time) by <keys>`` with one difference on purpose: a null key is a
group of its own (Splunk silently drops such events). Each finding also carries what a
responder needs: repositories and tags pushed, success/failure counts, sample event ids and the
objects the events came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector.detection import DETECTION
from detector.schema import GROUP_KEYS

# Bounds on what one finding remembers, so a push storm or hostile data cannot grow memory or
# messages without limit. Counts stay exact; only the samples are capped.
MAX_VALUES = 50
MAX_EVENT_IDS = 5
MAX_OBJECTS = 20

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
    # The year by hand: the C library's %Y does not pad years below 1000 to four digits.
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S")


@dataclass
class Sample:
    """A bounded set of distinct values, remembering whether more were seen.

    Values added with ``priority`` (e.g. repositories of successful pushes) are kept before the
    others: when the sample is full, a priority value evicts an ordinary one. So 50 failed
    pushes to decoy repositories cannot push the one successful push out of the sample.
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


_SAMPLE_FIELDS = (
    "repositories",
    "image_tags",
    "session_issuers",
    "principal_ids",
    "invoked_by",
    "event_ids",
    "objects",
)


@dataclass
class Finding:
    """One group of untrusted PutImage calls."""

    key: GroupKey
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    succeeded: int = 0
    failed: int = 0
    repositories: Sample = field(default_factory=Sample)
    image_tags: Sample = field(default_factory=Sample)
    session_issuers: Sample = field(default_factory=Sample)
    principal_ids: Sample = field(default_factory=Sample)
    invoked_by: Sample = field(default_factory=Sample)
    event_ids: Sample = field(default_factory=lambda: Sample(limit=MAX_EVENT_IDS))
    objects: Sample = field(default_factory=lambda: Sample(limit=MAX_OBJECTS))

    def field(self, name: str) -> str | None:
        return self.key[GROUP_KEYS.index(name)]

    @property
    def user(self) -> str | None:
        return self.field("user")

    def copy(self) -> Finding:
        """An independent copy (samples included), cheaper than ``copy.deepcopy``."""
        return dataclasses.replace(
            self,
            **{
                name: dataclasses.replace(
                    getattr(self, name), values=dict(getattr(self, name).values)
                )
                for name in _SAMPLE_FIELDS
            },
        )

    def merge(self, other: Finding) -> None:
        self.count += other.count
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.first_ms = min_opt(self.first_ms, other.first_ms)
        self.last_ms = max_opt(self.last_ms, other.last_ms)
        for name in _SAMPLE_FIELDS:
            getattr(self, name).merge(getattr(other, name))

    def who(self) -> str:
        """The best name for the actor, for messages: caller ARN, else principal or service."""
        for candidate in (
            self.user,
            *self.session_issuers.sorted(),
            *self.invoked_by.sorted(),
            *self.principal_ids.sorted(),
        ):
            if candidate:
                return candidate
        return "(no caller identity recorded)"

    def to_record(self) -> dict[str, Any]:
        """The JSON form. The first ten keys are a stable contract; more may follow."""
        rec: dict[str, Any] = {KEY_NAMES[k]: v for k, v in zip(GROUP_KEYS, self.key, strict=True)}
        rec |= {
            "count": self.count,
            "firstTime": ctime(self.first_ms),
            "lastTime": ctime(self.last_ms),
            "message": DETECTION.message(self.who()),
            "detection_id": DETECTION.id,
            "severity": DETECTION.severity,
            "risk_score": DETECTION.risk_score,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "repositories": self.repositories.sorted(),
            "image_tags": self.image_tags.sorted(),
            "session_issuers": self.session_issuers.sorted(),
            "principal_ids": self.principal_ids.sorted(),
            "invoked_by": self.invoked_by.sorted(),
            "event_ids": self.event_ids.sorted(),
            "source_objects": self.objects.sorted(),
            # Added keys: the repositories and tags of successful calls (also in the lists
            # above, and never evicted from them by failed calls).
            "succeeded_repositories": self.repositories.succeeded(),
            "succeeded_image_tags": self.image_tags.succeeded(),
            "samples_truncated": any(
                s.more
                for s in (
                    self.repositories,
                    self.image_tags,
                    self.session_issuers,
                    self.principal_ids,
                    self.invoked_by,
                )
            ),
        }
        return rec


def min_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def max_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


_AGGS = [
    ([], "count_all"),
    ("time_ms", "min"),
    ("time_ms", "max"),
    ("ok", "sum"),
    ("bad", "sum"),
    ("repository", "distinct"),
    ("image_tag", "distinct"),
    ("repository_ok", "distinct"),
    ("image_tag_ok", "distinct"),
    ("session_issuer", "distinct"),
    ("principal_id", "distinct"),
    ("invoked_by", "distinct"),
    ("event_uid", "list"),
]
_SAMPLED = {
    "repository_distinct": "repositories",
    "image_tag_distinct": "image_tags",
    "session_issuer_distinct": "session_issuers",
    "principal_id_distinct": "principal_ids",
    "invoked_by_distinct": "invoked_by",
    "event_uid_list": "event_ids",
}
# Values of successful calls, added to the same samples first and with priority.
_SAMPLED_OK = {
    "repository_ok_distinct": "repositories",
    "image_tag_ok_distinct": "image_tags",
}


class Aggregate:
    """Findings keyed by group; fed normalised batches, merged across objects."""

    def __init__(self) -> None:
        self.groups: dict[GroupKey, Finding] = {}

    def add_batch(self, batch: pa.RecordBatch, source: str) -> None:
        """Fold one batch of ``schema.NORMAL`` rows in; Python work is per group, not per row."""
        if batch.num_rows == 0:
            return
        status = pc.utf8_lower(batch.column("status"))
        ok = pc.fill_null(pc.equal(status, "success"), False)
        table = (
            pa.Table.from_batches([batch])
            .append_column("ok", ok.cast(pa.int64()))
            .append_column("bad", pc.fill_null(pc.equal(status, "failure"), False).cast(pa.int64()))
            .append_column("repository_ok", pc.if_else(ok, batch.column("repository"), None))
            .append_column("image_tag_ok", pc.if_else(ok, batch.column("image_tag"), None))
        )
        grouped = table.group_by(list(GROUP_KEYS), use_threads=False).aggregate(_AGGS)
        # Cap the sampled lists before they become Python objects.
        for col, target in (_SAMPLED | _SAMPLED_OK).items():
            # One more than a sample keeps, so the sample knows it was cut.
            limit = (MAX_EVENT_IDS if target == "event_ids" else MAX_VALUES) + 1
            idx = grouped.schema.get_field_index(col)
            grouped = grouped.set_column(idx, col, pc.list_slice(grouped.column(col), 0, limit))
        for row in grouped.to_pylist():
            key = tuple(row[k] for k in GROUP_KEYS)
            part = Finding(
                key=key,
                count=row["count_all"],
                first_ms=row["time_ms_min"],
                last_ms=row["time_ms_max"],
                succeeded=row["ok_sum"] or 0,
                failed=row["bad_sum"] or 0,
            )
            for col, target in _SAMPLED_OK.items():
                getattr(part, target).add(row[col], priority=True)
            for col, target in _SAMPLED.items():
                getattr(part, target).add(row[col])
            part.objects.add([source])
            self._merge_one(part)

    def _merge_one(self, part: Finding) -> None:
        mine = self.groups.get(part.key)
        if mine is None:
            self.groups[part.key] = part
        else:
            mine.merge(part)

    def merge(self, other: Aggregate) -> None:
        # Copies: the other aggregate stays as it was (a per-object result is still needed to
        # count that object's contribution exactly once).
        for part in other.groups.values():
            self._merge_one(part.copy())

    def findings(self) -> list[Finding]:
        """Findings, most recent activity first; ties broken by key for a stable order."""

        def order(f: Finding) -> tuple[Any, ...]:
            return (-(f.last_ms or 0), tuple((v is None, v or "") for v in f.key))

        return sorted(self.groups.values(), key=order)
