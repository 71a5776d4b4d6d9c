"""The pure core: scan objects against an allowlist and aggregate findings across them.

Knows Arrow tables, allowlists and findings; nothing about AWS or where bytes come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa

from detector.allowlist import Allowlist
from detector.findings import Aggregate, Finding
from detector.reader import ObjectReader, ReadStats

AGGREGATE_ROWS = 256 * 1024


@dataclass
class ObjectResult:
    name: str
    stats: ReadStats
    aggregate: Aggregate


def scan_object(
    stream: IO[bytes], name: str, allowlist: Allowlist, key: str | None = None
) -> ObjectResult:
    """Findings of one object. Raises ``BadObject`` and then contributes nothing."""
    reader = ObjectReader(stream, name, allowlist, key)
    aggregate = Aggregate()
    # Aggregate in few large steps: each step costs Python work per group, not per row.
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        if rows >= AGGREGATE_ROWS:
            aggregate.add_batch(_concat(pending), name)
            pending, rows = [], 0
    if rows:
        aggregate.add_batch(_concat(pending), name)
    return ObjectResult(name, reader.stats, aggregate)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


@dataclass
class Run:
    """One run of the detection over many objects: like one run of the Splunk search."""

    allowlist: Allowlist
    aggregate: Aggregate = field(default_factory=Aggregate)
    objects: int = 0
    rows: int = 0
    matched: int = 0
    trusted: int = 0

    def add(self, result: ObjectResult) -> None:
        # Only whole objects are merged: a failure half-way leaves no partial counts behind,
        # so a retry cannot count the same events twice.
        self.aggregate.merge(result.aggregate)
        self.objects += 1
        self.rows += result.stats.rows
        self.matched += result.stats.matched
        self.trusted += result.stats.trusted

    def findings(self) -> list[Finding]:
        return self.aggregate.findings()
