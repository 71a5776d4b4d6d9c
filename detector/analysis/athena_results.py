"""The result of a detection's Athena statement (``athena_sql``): its columns, its rows read back
as findings, and what the query costs.

The result columns carry the ``scan --format jsonl`` names, in order (``result_columns``); a
row (every value as text, None for SQL NULL) becomes a ``Finding`` of the detection, its
samples given back from their JSON arrays, and the rows of one statement become findings in
``scan``'s order. A row of another shape raises ``ResultInvalid``. The cost is Athena's price
for the bytes a query scanned (``cost_line``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence

from detector import detections
from detector.analysis.aggregate import Aggregate
from detector.analysis.findings import KEY_NAMES, Finding
from detector.core.errors import DetectorError
from detector.core.spec import Detection
from detector.lake.schema import GROUP_KEYS

__all__ = [
    "RESULT_COLUMNS",
    "ResultInvalid",
    "billed_bytes",
    "check_columns",
    "cost_line",
    "cost_usd",
    "finding",
    "findings",
    "human_bytes",
    "result_columns",
]

# Athena's price for SQL queries: per TB scanned, each query billed at least 10 MB, rounded up to
# the next MB. (Most regions; a few charge more.)
PRICE_PER_TB_USD = 5.0
MB = 1024**2
TB = 1024**4
MIN_BILLED_BYTES = 10 * MB


# Result columns after the seven grouping keys, in order.
_AGGREGATES = ("count", "firstTime", "lastTime", "succeeded", "failed")
# Samples every detection keeps after its own: (result column and sample name, inner column).
_GENERIC_SAMPLES = (
    ("session_issuers", "session_issuer"),
    ("principal_ids", "principal_id"),
    ("invoked_by", "invoked_by"),
)


def result_columns(detection: Detection | None = None) -> tuple[str, ...]:
    """The statement's result columns for ``detection`` (None: the default), in order: the
    grouping keys, the aggregates, the detection's samples, the generic samples, then the
    detection's samples over successful calls."""
    detection = detection or detections.get(detections.DEFAULT)
    names = (
        *(KEY_NAMES[k] for k in GROUP_KEYS),
        *_AGGREGATES,
        *(s.name for s in detection.samples),
        *(name for name, _ in _GENERIC_SAMPLES),
        *(s.succeeded_key for s in detection.samples),
        # Added after the contract's columns.
        *(s.name for s in detection.extra_samples),
        *(s.succeeded_key for s in detection.extra_samples),
        # A threshold detection's time bucket (epoch ms of its start).
        *(("bucket",) if detection.threshold is not None else ()),
    )
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise ValueError(f"{detection.slug}: a sample name repeats a result column: {names}")
    return names


RESULT_COLUMNS: tuple[str, ...] = result_columns()


class ResultInvalid(DetectorError):
    """A result row that does not have the shape the statement produces."""


# --- results -----------------------------------------------------------------------------------


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ResultInvalid(f"column {name}: {value[:40]!r} is not an integer") from None


def _strings(value: str | None, name: str) -> list[str]:
    if value is None:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        raise ResultInvalid(f"column {name}: not a JSON array") from None
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ResultInvalid(f"column {name}: not a JSON array of strings")
    return data


def check_columns(names: Sequence[str], detection: Detection | None = None) -> None:
    """The result's column names, compared case-insensitively (Athena lowercases them)."""
    got = [n.lower() for n in names]
    want = [n.lower() for n in result_columns(detection)]
    if got != want:
        raise ResultInvalid(f"unexpected result columns {got[:20]}, expected {want}")


def finding(row: Sequence[str | None], detection: Detection | None = None) -> Finding:
    """One result row of ``detection``'s statement (every value as text, None for SQL NULL) as
    a ``Finding`` of that detection (None: the default)."""
    detection = detection or detections.get(detections.DEFAULT)
    names = result_columns(detection)
    if len(row) != len(names):
        raise ResultInvalid(f"a result row has {len(row)} values, expected {len(names)}")
    values = dict(zip(names, row, strict=True))
    key = tuple(values[KEY_NAMES[k]] for k in GROUP_KEYS)
    out = Finding(
        key=key,
        detection=detection,
        count=_int(values["count"], "count") or 0,
        first_ms=_int(values["firstTime"], "firstTime"),
        last_ms=_int(values["lastTime"], "lastTime"),
        succeeded=_int(values["succeeded"], "succeeded") or 0,
        failed=_int(values["failed"], "failed") or 0,
        bucket=_int(values["bucket"], "bucket") if detection.threshold is not None else None,
    )
    # Values of successful calls first, with priority, so failed calls cannot evict them.
    every = (*detection.samples, *detection.extra_samples)
    for spec in every:
        name = spec.succeeded_key
        out.sample(spec.name).add(_strings(values[name], name), priority=True)
    for name in (*(s.name for s in every), *(n for n, _ in _GENERIC_SAMPLES)):
        out.sample(name).add(_strings(values[name], name))
    if out.user is None:
        # The statement groups callers without an ARN by principal id too (``k_anon``), so
        # such a row holds one id at most: the finding's hidden key, as ``scan`` makes it.
        ids = out.sample("principal_ids").sorted()
        out.anon = ids[0] if len(ids) == 1 else None
    return out


def findings(
    rows: Iterable[Sequence[str | None]], detection: Detection | None = None
) -> list[Finding]:
    """Findings of ``detection`` from its statement's result rows, in ``scan``'s order (most
    recent activity first)."""
    aggregate = Aggregate(detection)
    for row in rows:
        f = finding(row, aggregate.detection)
        key = (f.key, f.anon, f.bucket)
        if key in aggregate.groups:  # not from this statement, but never lose counts
            aggregate.groups[key].merge(f)
        else:
            aggregate.groups[key] = f
    return aggregate.findings()


# --- cost --------------------------------------------------------------------------------------


def billed_bytes(scanned: int) -> int:
    """Bytes Athena bills for a query that scanned ``scanned``: whole MB, at least 10 MB."""
    return max(MIN_BILLED_BYTES, math.ceil(max(scanned, 0) / MB) * MB)


def cost_usd(scanned: int) -> float:
    return billed_bytes(scanned) / TB * PRICE_PER_TB_USD


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def cost_line(scanned: int) -> str:
    return (
        f"Athena scanned {human_bytes(scanned)}: about ${cost_usd(scanned):.4f} "
        f"(${PRICE_PER_TB_USD:g} per TB, at least 10 MB per query)"
    )
