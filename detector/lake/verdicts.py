"""Which rows each active detection keeps: the detections as the reader runs them
(``_Watch``), their predicates judged on the rows of their own operations (``_judge``), then
their request tests on the request documents of the rows they kept (``_request_tests``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector.core import requestjson
from detector.core.allowlist import Allowlist
from detector.core.requestjson import Cond
from detector.core.spec import Active, Context, Predicate
from detector.lake import schema


@dataclass(frozen=True)
class _Watch:
    """One active detection as the reader runs it."""

    id: str
    slug: str
    columns: tuple[str, ...]  # the columns its predicate is given
    predicate: Predicate
    context: Context
    # Indices into the watched operations of the ones it watches; None when every row read
    # is one of its operations (it watches all the watched operations, or any operation).
    codes: pa.Array | None
    # Its test of the request JSON (``Detection.request_test``), judged on the rows it kept.
    test: Cond | None = None
    # It watches every operation (``Detection.operations`` empty).
    every: bool = False


def _watches(
    active: Sequence[Active],
    allowlist: Allowlist,
    operations: Sequence[str],
    every_op: bool,
    names: Collection[str],
) -> tuple[tuple[_Watch, ...], dict[str, None]]:
    """The detections as the reader runs them, and their predicate columns (each once, in the
    order named). ``operations``: the watched operations; ``every_op``: whether a detection
    watches every operation; ``names``: the columns a predicate may be given."""
    wanted: dict[str, None] = {}
    watches = []
    for a in active:
        d = a.detection
        for column in d.predicate_columns:
            if column not in names:
                raise ValueError(f"detection {d.slug}: unknown predicate column {column!r}")
            wanted[column] = None
        codes = sorted({operations.index(op) for op in d.operations})
        every = not d.operations or (len(codes) == len(operations) and not every_op)
        watches.append(
            _Watch(
                d.id,
                d.slug,
                # A predicate without columns still gets one, to know the row count.
                tuple(d.predicate_columns) or ("operation",),
                d.predicate,
                a.context(allowlist),
                None if every else pa.array(codes, pa.int32()),
                d.request_test,
                not d.operations,
            )
        )
    return tuple(watches), wanted


def _judge(
    watches: Sequence[_Watch],
    normal: pa.Schema,
    cols: Mapping[str, pa.Array],
    watched: pa.Array,
    operation: pa.Array,
) -> dict[str, pa.Array]:
    """Detection id -> which of the watched rows it keeps (never null).

    ``cols``: the predicate columns of the watched rows; ``watched``: their operations
    (indices into the watched operations, null for another operation), ``operation``: their
    names. Each predicate sees only its own operations' rows; a column the object lacks is
    all nulls.
    """
    m = len(watched)
    out: dict[str, pa.Array] = {}
    for w in watches:
        selected: pa.Array | None = None
        count = m
        if w.codes is not None:
            selected = pc.fill_null(pc.is_in(watched, value_set=w.codes), False)
            count = pc.sum(selected).as_py() or 0
            if count == 0:
                out[w.id] = _all_false(m)
                continue
            if count == m:
                selected = None
        rows: dict[str, pa.Array] = {}
        for c in w.columns:
            if c == "operation":
                arr = operation
            else:
                arr = cols.get(c)
                if arr is None:
                    arr = pa.nulls(m, normal.field(c).type)
            rows[c] = arr if selected is None else arr.filter(selected)
        result = _verdict(w.predicate(rows, w.context), count, w.slug)
        out[w.id] = (
            result if selected is None else pc.replace_with_mask(_all_false(m), selected, result)
        )
    return out


def _request_tests(
    watches: Sequence[_Watch],
    version: schema.SchemaVersion,
    kept: dict[str, int],
    request: pa.Array,
    judged: dict[str, pa.Array],
) -> dict[str, pa.Array]:
    """``judged`` narrowed by each detection's request test, for the rows it kept.

    Each request is parsed once, whatever the number of detections testing it, and only
    for rows a detection with a test kept; ``request`` is the raw request column (v2 JSON
    text, v1 the ``unmapped`` map) of the same rows as ``judged``. The rows a test drops are
    taken off ``kept`` (detection id -> rows it kept).
    """
    docs: dict[int, list[Any]] = {}
    out = dict(judged)
    for w in watches:
        if w.test is None:
            continue
        rows = pc.indices_nonzero(judged[w.id]).to_pylist()
        if not rows:
            continue
        todo = [r for r in rows if r not in docs]
        if todo:
            values = request.take(pa.array(todo, pa.int64())).to_pylist()
            for r, value in zip(todo, values, strict=True):
                docs[r] = _documents(value, version)
        keep = [r for r in rows if any(requestjson.holds(w.test, d) for d in docs[r])]
        dropped = len(rows) - len(keep)
        if dropped:
            kept[w.id] -= dropped
            mask = [False] * len(judged[w.id])
            for r in keep:
                mask[r] = True
            out[w.id] = pa.array(mask, pa.bool_())
    return out


def _documents(value: Any, version: schema.SchemaVersion) -> list[Any]:
    """The request documents of one row: v2's JSON; v1's whole JSON and its flattened entries
    (either may hold the request). Bytes are read as UTF-8, a bad byte replaced: the text is
    only tested, never shown."""

    def text(v: Any) -> str | None:
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return v if isinstance(v, str) else None

    if version is schema.SchemaVersion.V2:
        doc = requestjson.parse(text(value))
        return [] if doc is None else [doc]
    if not isinstance(value, list):
        return []
    entries: dict[str, str | None] = {}
    for item in value:
        if isinstance(item, tuple) and len(item) == 2 and (k := text(item[0])) is not None:
            entries.setdefault(k, text(item[1]))
    docs = [requestjson.from_flattened(entries)]
    whole = requestjson.parse(entries.get("requestParameters"))
    if whole is not None:
        docs.append(whole)
    return docs


def _all_false(n: int) -> pa.Array:
    return pc.fill_null(pa.nulls(n, pa.bool_()), False)


def _all_true(n: int) -> pa.Array:
    return pc.fill_null(pa.nulls(n, pa.bool_()), True)


def _verdict(result: pa.Array | pa.ChunkedArray, n: int, slug: str) -> pa.Array:
    """A predicate's answer as a boolean array of ``n`` values, null as False."""
    if isinstance(result, pa.ChunkedArray):
        result = result.combine_chunks()
    if not isinstance(result, pa.Array) or not pa.types.is_boolean(result.type):
        raise TypeError(f"detection {slug}: predicate returned {type(result).__name__}")
    if len(result) != n:
        raise TypeError(f"detection {slug}: predicate returned {len(result)} values for {n} rows")
    return pc.fill_null(result, False) if result.null_count else result


def readable(arr: pa.Array) -> pa.Array:
    """Text a predicate can judge: values that are not valid UTF-8 (a writer's bytes, or a
    caller's) with each bad byte replaced (U+FFFD). For the detections of every operation,
    which judge every row: one bad value in a row nobody watches must not fail the object
    (a kept row is still checked whole before it goes on, ``ObjectReader._normalise``)."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr
    try:
        arr.validate(full=True)
        return arr
    except pa.ArrowInvalid:
        raw = arr.view(pa.binary() if pa.types.is_string(arr.type) else pa.large_binary())
        return pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in raw.to_pylist()],
            arr.type,
        )
