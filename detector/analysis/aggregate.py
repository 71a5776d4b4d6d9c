"""Aggregation of the rows a detection reports into findings, like the Splunk search's ``stats``.

``stats count min(_time) max(_time) by <keys>`` with one difference on purpose: a null key is a
group of its own (Splunk silently drops such events). ``Aggregate`` folds in batches of
normalised rows with one Arrow group-by each (Python work is per group, not per row) and merges
the findings of several objects; what a finding holds is ``findings``.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector.analysis.findings import (
    _GENERIC,
    MAX_VALUES,
    Finding,
    GroupKey,
    _layout,
    bucket_of,
    default_detection,
)
from detector.core.spec import Detection
from detector.lake.schema import GROUP_KEYS

# Helper columns added to a batch before grouping; the prefix keeps them apart from the
# internal columns (which are identifiers).
_OK = "_:ok"
_BAD = "_:bad"
_ANON = "_:anon"


_KEY_ACCOUNT = re.compile(r"(?:^|/)accountId=([0-9]{12})/")


def recorded_account(key: str) -> str | None:
    """The account of a Security Lake object key (``…/accountId=111122223333/…``), if any."""
    found = _KEY_ACCOUNT.search(key)
    return found.group(1) if found else None


_BUCKET = "_:bucket"
Group = tuple[GroupKey, str | None, int | None]


def _error_counts(table: pa.Table) -> dict[Group, dict[str, int]]:
    """(group key, hidden keys) -> error code -> calls, for the rows that recorded an error."""
    if table.schema.get_field_index("error_code") < 0:
        return {}
    failed = table.filter(pc.is_valid(table.column("error_code")))
    if failed.num_rows == 0:
        return {}
    keys = [*GROUP_KEYS, _ANON, _BUCKET, "error_code"]
    counted = failed.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    out: dict[Group, dict[str, int]] = {}
    rows = zip(
        zip(*(counted.column(k).to_pylist() for k in GROUP_KEYS), strict=True),
        counted.column(_ANON).to_pylist(),
        counted.column(_BUCKET).to_pylist(),
        counted.column("error_code").to_pylist(),
        counted.column("count_all").to_pylist(),
        strict=True,
    )
    for key, anon, bucket, code, n in rows:
        out.setdefault((key, anon, bucket), {})[code] = n
    return out


def _group(f: Finding) -> Group:
    return f.key, f.anon, f.bucket


def _ok_column(column: str) -> str:
    return f"_:ok:{column}"


class Aggregate:
    """One detection's findings keyed by group; fed normalised batches, merged across objects."""

    def __init__(self, detection: Detection | None = None) -> None:
        self.detection = detection if detection is not None else default_detection()
        # (the Splunk grouping key, the hidden ``Finding.anon``) -> finding
        self.groups: dict[Group, Finding] = {}
        _layout(self.detection)  # a sample name clash fails here, not mid-run
        # column -> the samples it feeds (name, limit). The detection's own samples keep the
        # values of successful calls first (``prioritised``), so their columns come first.
        prioritised: dict[str, list[tuple[str, int]]] = {}
        distinct: dict[str, list[tuple[str, int]]] = {}
        lists: dict[str, list[tuple[str, int]]] = {}
        for spec in (*self.detection.samples, *self.detection.extra_samples):
            prioritised.setdefault(spec.column, []).append((spec.name, MAX_VALUES))
            distinct.setdefault(spec.column, []).append((spec.name, MAX_VALUES))
        for g in _GENERIC:
            if g.column is not None:
                target = lists if g.aggregation == "list" else distinct
                target.setdefault(g.column, []).append((g.name, g.limit))
        # (aggregated column, the samples it feeds, added with priority), in the order added.
        self._outputs = [(f"{_ok_column(c)}_distinct", t, True) for c, t in prioritised.items()] + [
            (f"{c}_distinct", t, False) for c, t in distinct.items()
        ]
        self._outputs += [(f"{c}_list", t, False) for c, t in lists.items()]
        self._prioritised = tuple(prioritised)
        self._columns = tuple(dict.fromkeys([*distinct, *lists]))
        self._aggs: list[tuple[Any, str]] = [
            ([], "count_all"),
            ("time_ms", "min"),
            ("time_ms", "max"),
            (_OK, "sum"),
            (_BAD, "sum"),
            *((c, "distinct") for c in self._prioritised),
            *((_ok_column(c), "distinct") for c in self._prioritised),
            *((c, "distinct") for c in distinct if c not in prioritised),
            *((c, "list") for c in lists),
        ]

    def add_batch(self, batch: pa.RecordBatch, source: str) -> None:
        """Fold one batch of normalised rows in; Python work is per group, not per row."""
        if batch.num_rows == 0:
            return
        n = batch.num_rows
        status = pc.utf8_lower(batch.column("status"))
        ok = pc.fill_null(pc.equal(status, "success"), False)
        table = (
            pa.Table.from_batches([batch])
            .append_column(_OK, ok.cast(pa.int64()))
            .append_column(_BAD, pc.fill_null(pc.equal(status, "failure"), False).cast(pa.int64()))
        )
        for c in self._columns:
            if table.schema.get_field_index(c) < 0:  # a column the batch lacks: no values
                table = table.append_column(c, pa.nulls(n, pa.string()))
        for c in self._prioritised:
            table = table.append_column(_ok_column(c), pc.if_else(ok, table.column(c), None))
        anon = pc.if_else(pc.is_null(table.column("user")), table.column("principal_id"), None)
        table = table.append_column(_ANON, anon)
        rule = self.detection.threshold
        bucket = (
            bucket_of(table.column("time_ms").combine_chunks(), rule.bucket_ms)
            if rule is not None
            else pa.nulls(n, pa.int64())
        )
        table = table.append_column(_BUCKET, bucket)
        grouped = table.group_by([*GROUP_KEYS, _ANON, _BUCKET], use_threads=False).aggregate(
            self._aggs
        )
        # Cap the sampled lists before they become Python objects.
        for col, targets, _ in self._outputs:
            # One more than a sample keeps, so the sample knows it was cut.
            limit = max(lim for _, lim in targets) + 1
            idx = grouped.schema.get_field_index(col)
            grouped = grouped.set_column(idx, col, pc.list_slice(grouped.column(col), 0, limit))
        # Column by column into Python (a dict per row costs more), then a finding per group.
        keys = zip(*(grouped.column(k).to_pylist() for k in GROUP_KEYS), strict=True)
        anons = grouped.column(_ANON).to_pylist()
        buckets = grouped.column(_BUCKET).to_pylist()
        errors = _error_counts(table)
        recorded = recorded_account(source)
        counts = grouped.column("count_all").to_pylist()
        firsts = grouped.column("time_ms_min").to_pylist()
        lasts = grouped.column("time_ms_max").to_pylist()
        oks = grouped.column(f"{_OK}_sum").to_pylist()
        bads = grouped.column(f"{_BAD}_sum").to_pylist()
        outputs = [
            (grouped.column(col).to_pylist(), [name for name, _ in targets], priority)
            for col, targets, priority in self._outputs
        ]
        for i, key in enumerate(keys):
            part = Finding(
                key=key,
                count=counts[i],
                first_ms=firsts[i],
                last_ms=lasts[i],
                succeeded=oks[i] or 0,
                failed=bads[i] or 0,
                detection=self.detection,
                anon=anons[i],
                bucket=buckets[i],
            )
            sample = part.sample
            for values, names, priority in outputs:
                got = values[i]
                if got:  # an empty list adds nothing: leave the sample unmade
                    for name in names:
                        sample(name).add(got, priority=priority)
            sample("objects").add([source])
            failures = errors.get((key, anons[i], buckets[i]))
            if failures:
                part.add_errors(failures)
            if recorded is not None:
                sample("recorded_accounts").add([recorded])
            self._merge_one(part)

    def _merge_one(self, part: Finding) -> None:
        key = _group(part)
        mine = self.groups.get(key)
        if mine is None:
            self.groups[key] = part
        else:
            mine.merge(part)

    def merge(self, other: Aggregate, *, adopt: bool = False) -> None:
        """Fold ``other`` in. It stays as it was (a per-object result is still needed to count
        that object's contribution exactly once), unless ``adopt``: then its findings may
        become this aggregate's and ``other`` must not be used again."""
        for key, part in other.groups.items():
            mine = self.groups.get(key)
            if mine is None:
                self.groups[key] = part if adopt else part.copy()
            else:
                mine.merge(part)

    def findings(self) -> list[Finding]:
        """Findings, most recent activity first; ties broken by key for a stable order."""

        def order(f: Finding) -> tuple[Any, ...]:
            return (
                -(f.last_ms or 0),
                tuple((v is None, v or "") for v in f.key),
                (f.anon is not None, f.anon or ""),
                f.bucket or 0,
            )

        return sorted(self.groups.values(), key=order)
