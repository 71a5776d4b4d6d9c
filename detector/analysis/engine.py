"""The pure core: scan objects against an allowlist and aggregate findings across them.

Knows Arrow tables, allowlists, detection specs and findings; nothing about AWS or where bytes
come from. Each object is read once for all the active detections; each detection has its own
aggregate, fed only the rows it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

from detector import detections
from detector.analysis.aggregate import Aggregate
from detector.analysis.findings import Finding, reported
from detector.core.allowlist import Allowlist
from detector.core.spec import Active
from detector.lake.reader import KeptRows, ObjectReader, ReadStats

AGGREGATE_ROWS = 256 * 1024


@dataclass
class ObjectResult:
    name: str
    stats: ReadStats
    # The first detection's aggregate (what a single-detection caller reads).
    aggregate: Aggregate
    # detection id -> its aggregate, in active order (the first is ``aggregate``).
    aggregates: dict[str, Aggregate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.aggregates:
            self.aggregates = {self.aggregate.detection.id: self.aggregate}

    def findings(self) -> list[Finding]:
        """Every detection's findings of this object, detection by detection in active order,
        each most recent first."""
        return [f for aggregate in self.aggregates.values() for f in aggregate.findings()]


def scan_object(
    stream: IO[bytes],
    name: str,
    allowlist: Allowlist,
    key: str | None = None,
    active: Sequence[Active] | None = None,
) -> ObjectResult:
    """Findings of one object for every active detection (None: the default one).

    Raises ``BadObject`` and then contributes nothing.
    """
    active = tuple(active) if active is not None else detections.default()
    reader = ObjectReader(stream, name, allowlist, key, active)
    aggregates = {a.detection.id: Aggregate(a.detection) for a in active}
    # Aggregate in few large steps: each step costs Python work per group, not per row.
    pending: list[KeptRows] = []
    rows = 0
    for part in reader:
        pending.append(part)
        rows += part.batch.num_rows
        if rows >= AGGREGATE_ROWS:
            _add(aggregates, pending, name)
            pending, rows = [], 0
    if rows:
        _add(aggregates, pending, name)
    first = next(iter(aggregates.values()))
    return ObjectResult(name, reader.stats, first, aggregates)


def _add(aggregates: dict[str, Aggregate], parts: list[KeptRows], name: str) -> None:
    """Feed each detection's aggregate the rows it keeps of ``parts``."""
    batch = _concat([p.batch for p in parts])
    for detection_id, aggregate in aggregates.items():
        mask = pa.chunked_array([p.masks[detection_id] for p in parts], pa.bool_())
        kept = pc.sum(mask).as_py() or 0
        if kept == batch.num_rows:
            aggregate.add_batch(batch, name)
        elif kept:
            aggregate.add_batch(batch.filter(mask.combine_chunks()), name)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


@dataclass
class Run:
    """One run of the detections over many objects: like one run of the Splunk searches."""

    allowlist: Allowlist
    # The detections run (None: the default one).
    active: Sequence[Active] | None = None
    # detection id -> its aggregate over every object added, in active order.
    aggregates: dict[str, Aggregate] = field(init=False)
    objects: int = 0
    rows: int = 0
    matched: int = 0
    trusted: int = 0
    # detection id -> rows it kept.
    kept: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.active = tuple(self.active) if self.active is not None else detections.default()
        self.aggregates = {a.detection.id: Aggregate(a.detection) for a in self.active}
        self.kept = dict.fromkeys(self.aggregates, 0)

    @property
    def aggregate(self) -> Aggregate:
        """The first detection's aggregate."""
        return next(iter(self.aggregates.values()))

    def add(self, result: ObjectResult, *, adopt: bool = False) -> None:
        """Merge one object's result. ``adopt``: the caller is done with ``result`` (its
        findings become the run's instead of being copied)."""
        # Only whole objects are merged: a failure half-way leaves no partial counts behind,
        # so a retry cannot count the same events twice.
        for detection_id, aggregate in result.aggregates.items():
            mine = self.aggregates.get(detection_id)
            if mine is None:  # a result of a detection this run was not given
                mine = self.aggregates[detection_id] = Aggregate(aggregate.detection)
            mine.merge(aggregate, adopt=adopt)
        self.objects += 1
        self.rows += result.stats.rows
        self.matched += result.stats.matched
        self.trusted += result.stats.trusted
        for detection_id, rows in result.stats.kept.items():
            self.kept[detection_id] = self.kept.get(detection_id, 0) + rows

    def all_findings(self) -> list[Finding]:
        """Every detection's findings, detection by detection in active order, each most
        recent first, thresholds not applied (the Lambda judges them on the state table's
        totals, across invocations)."""
        return [f for aggregate in self.aggregates.values() for f in aggregate.findings()]

    def findings(self) -> list[Finding]:
        """``all_findings`` past their detection's threshold, if any (``findings.reported``):
        what ``scan`` and the SQL statement report."""
        return reported(self.all_findings())
