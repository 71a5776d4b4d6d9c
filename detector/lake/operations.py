"""The ``api.operation`` column and what the active detections watch, taken together: their
operations, matched per row on dictionary indices (``_operation_codes``) and per row group
against the footer's statistics (``_may_hold``), and the union of their request fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import Active, RequestField
from detector.lake import schema
from detector.lake.parquet_footer import Chunk


def _operation_codes(ops: pa.ChunkedArray | pa.Array, watched: pa.Array) -> pa.Array:
    """Per row, the index of its operation in ``watched`` (int32; null: not watched).

    A dictionary-encoded column is compared on its (few) dictionary values once, then gathered
    by index: no string work per row. A dictionary may repeat a value, so no single index is
    assumed.
    """
    chunks = ops.chunks if isinstance(ops, pa.ChunkedArray) else [ops]
    parts = []
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            parts.append(pc.take(_index_in(chunk.dictionary, watched), chunk.indices))
        else:
            parts.append(_index_in(chunk, watched))
    if not parts:
        return pa.array([], pa.int32())
    return pa.concat_arrays(parts) if len(parts) > 1 else parts[0]


def _index_in(values: pa.Array, watched: pa.Array) -> pa.Array:
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.int32())
    return pc.index_in(values, value_set=watched)


# What an operation name (CloudTrail ``eventName``) looks like: ``GetCallerIdentity``,
# ``GetFunction20150331v2``, ``UpdateDistribution2020_05_31``. Statistics are trusted to skip a
# row group only when their min and max look like one (a name of another shape only costs
# reading the column).
_OPERATION_NAME = re.compile(rb"[A-Z][A-Za-z0-9_]{0,127}")


def _may_hold(chunk: Chunk, watched: Sequence[bytes], num_rows: int) -> bool:
    """False only when the chunk's statistics rule out every watched operation.

    ``min_value``/``max_value`` compare as unsigned bytes, which for UTF-8 is code point order;
    a chunk with only the legacy ``min``/``max`` (whose order old writers got wrong) is read.
    So is a chunk whose statistics are implausible, as a flipped bit makes them: a min or max
    that is no operation name, a min above the max, more nulls than rows.
    """
    lo, hi = chunk.min_value, chunk.max_value
    if lo is None or hi is None:
        return True
    if lo > hi or not _OPERATION_NAME.fullmatch(lo) or not _OPERATION_NAME.fullmatch(hi):
        return True
    nulls = chunk.null_count
    if nulls is not None and not 0 <= nulls <= min(num_rows, chunk.num_values):
        return True
    return any(lo <= op <= hi for op in watched)


def watched_operations(active: Sequence[Active]) -> tuple[str, ...]:
    """The union of the detections' operations, each once, in the order first named."""
    return tuple(dict.fromkeys(op for a in active for op in a.detection.operations))


def every_operation(active: Sequence[Active]) -> bool:
    """Whether a detection watches every operation (its ``operations`` are empty): then every
    row is judged, and row groups are not skipped by their operation statistics."""
    return any(not a.detection.operations for a in active)


def union_request_fields(active: Sequence[Active]) -> tuple[RequestField, ...]:
    """The union of the detections' request fields, each column once, in the order named.

    Two detections may share a column only when they cut it from the same key.
    """
    generic = set(schema.GENERIC.names)
    by_column: dict[str, RequestField] = {}
    for a in active:
        for f in a.detection.request_fields:
            if f.column in generic:
                raise ValueError(
                    f"detection {a.detection.slug}: request field column {f.column!r} "
                    "is a column of the engine's"
                )
            other = by_column.setdefault(f.column, f)
            if other.key != f.key:
                raise ValueError(
                    f"detection {a.detection.slug}: request field column {f.column!r} is cut "
                    f"from {f.key!r}, another detection cuts it from {other.key!r}"
                )
    return tuple(by_column.values())


def _decoded(names: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Operation names as one plain ``string`` array."""
    arr = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if arr.type == pa.string() else arr.cast(pa.string())
