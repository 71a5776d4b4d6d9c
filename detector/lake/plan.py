"""What a read of one object decides before any data is read: the object checked as Parquet,
its footer walked and the chunks it will read checked, its layout, and the columns of each
pass (the predicate columns, read for every row of a watched operation; the detail columns,
read only for the rows kept), with which of them are read dictionary-encoded.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from detector.core.errors import BadObject
from detector.core.spec import RequestField
from detector.lake import schema
from detector.lake.parquet_footer import (
    MAGIC,
    RowGroup,
    check_chunks,
    column_chunks,
    leaf_indices,
    one_line,
    read_footer,
)


class Plan(NamedTuple):
    meta: pq.FileMetaData
    layout: schema.Layout
    row_groups: list[RowGroup]  # as walked, a chunk per leaf column
    op_index: int  # the leaf column of ``api.operation``; -1 if there is none
    predicate: dict[str, str]  # internal name -> path of the columns read for every watched row
    detail: dict[str, str]  # internal name -> path of the columns read only for kept rows
    tests_first: bool  # request tests judged with the predicates (else with the details)
    as_dictionary: list[str]  # paths read dictionary-encoded
    # Leaves read by each pass, to size its batches and choose how to read a row group.
    predicate_leaves: list[int]
    detail_leaves: list[int]


def plan_read(
    f: IO[bytes],
    name: str,
    key: str | None,
    wanted: Collection[str],
    fields: Sequence[RequestField],
    tested: bool,
) -> Plan:
    """The plan of a read of ``f`` (object ``name``, S3 ``key``). ``wanted``: the detections'
    predicate columns; ``fields``: their request fields; ``tested``: whether a detection has a
    request test. Raises ``BadObject`` for an object that cannot be read as planned."""
    size = _check_magic(f, name)
    footer, meta = read_footer(f, size, name)
    try:
        arrow_schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadObject(name, f"corrupt Parquet footer: {one_line(exc)}") from exc
    op_index = _leaf_index(meta, schema.OPERATION_PATH)
    row_groups = column_chunks(footer, meta, op_index, name)
    layout = schema.detect(arrow_schema, key if key is not None else name)
    if layout is None:
        raise BadObject(name, "not a CloudTrail OCSF table (no api.operation column)")
    predicate, detail, tests_first, as_dictionary = _passes(
        layout, arrow_schema, wanted, fields, tested, name
    )
    # Before any statistics or data are read: see "the footer, walked" (``parquet_footer``).
    read = [schema.OPERATION_PATH, *predicate.values(), *detail.values()]
    check_chunks(row_groups, meta, read, size, name)
    return Plan(
        meta,
        layout,
        row_groups,
        op_index,
        predicate,
        detail,
        tests_first,
        as_dictionary,
        leaf_indices(meta, list(predicate.values())),
        leaf_indices(meta, list(detail.values())),
    )


def _passes(
    layout: schema.Layout,
    arrow_schema: pa.Schema,
    wanted: Collection[str],
    fields: Sequence[RequestField],
    tested: bool,
    name: str,
) -> tuple[dict[str, str], dict[str, str], bool, list[str]]:
    """(predicate columns, detail columns, request tests first, dictionary-encoded paths)."""
    # Which columns are read for every row of a watched operation (what the predicates
    # judge) and which only for kept rows (the rest a finding needs), in layout order.
    # The request column is a predicate column only when a predicate judges a request
    # field; it is read at all only when a detection cuts fields out of it.
    judged_request = any(f.column in wanted for f in fields)
    # Request tests are judged where the request text is read: with the predicates when a
    # predicate needs a request field, else with the details (for kept rows only).
    tests_first = tested and judged_request
    first = [
        c
        for c in layout.columns
        if c != "operation" and (c in wanted or (c == "request" and judged_request))
    ]
    # v2 keeps the response in its own column, read only for a field cut out of it.
    from_response = any(f.source == "response" for f in fields)
    rest = [
        c
        for c in layout.columns
        if c != "operation"
        and c not in first
        and (c != "request" or fields or tested)
        and (c != "response" or from_response)
    ]
    predicate = schema.present(layout, arrow_schema, first)
    detail = schema.present(layout, arrow_schema, rest)
    found = predicate | detail
    missing = [c for c in schema.REQUIRED if c not in found and c != "operation"]
    if missing:
        paths = ", ".join(layout.columns[c] for c in missing)
        raise BadObject(name, f"not a CloudTrail OCSF table (no {paths} column)")
    types = schema.leaf_paths(arrow_schema)
    time_path = layout.columns["time_ms"]
    if not pa.types.is_integer(types[time_path]):
        raise BadObject(name, f"column {time_path} is {types[time_path]}, expected epoch ms")
    as_dictionary = [schema.OPERATION_PATH] + [
        path
        for name_, path in found.items()
        if name_ not in layout.unique
        and (pa.types.is_string(types[path]) or pa.types.is_large_string(types[path]))
    ]
    return predicate, detail, tests_first, as_dictionary


def _check_magic(f: IO[bytes], name: str) -> int:
    """Name the common failure precisely before pyarrow gives a generic message; the size.

    The end is read first: it comes with the footer (for an S3 object, from the first GET).
    The start is read only to tell "not Parquet" from "truncated", so a good object costs no
    extra request for it (pyarrow does not check the leading magic either).
    """
    f.seek(0, 2)
    size = f.tell()
    if size == 0:
        raise BadObject(name, "empty object (0 bytes)")
    f.seek(max(size - 4, 0))
    if size >= 12 and f.read(4) == MAGIC:
        f.seek(0)
        return size
    f.seek(0)
    if size < 12 or f.read(4) != MAGIC:
        raise BadObject(name, "not Parquet (no PAR1 magic at the start)")
    raise BadObject(name, f"truncated Parquet ({size} bytes, no footer)")


def _leaf_index(meta: pq.FileMetaData, path: str) -> int:
    """Index of the leaf column ``path``; -1 if there is none."""
    for i in range(meta.num_columns):
        if meta.schema.column(i).path == path:
            return i
    return -1
