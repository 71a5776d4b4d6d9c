"""Small helpers shared by the unit tests. Objects are always built with ``tests.lake``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from detector.analysis import engine
from detector.analysis.findings import Finding
from detector.core.allowlist import Allowlist
from tests.lake import columns_from_events, nest, write_object

NOBODY = Allowlist.of([])


def parquet_bytes(
    events: Sequence[Mapping[str, Any]] | Mapping[str, pa.Array],
    version: int,
    compression: str = "gzip",
    row_group_size: int | None = None,
) -> bytes:
    """One Security Lake object of ``version`` holding ``events``, as bytes."""
    buf = io.BytesIO()
    write_object(buf, events, version, compression=compression, row_group_size=row_group_size)
    return buf.getvalue()


def table_bytes(
    table: pa.Table, compression: str = "gzip", row_group_size: int | None = None
) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression, row_group_size=row_group_size)
    return buf.getvalue()


def scan(
    data: bytes,
    allowlist: Allowlist = NOBODY,
    name: str = "obj.gz.parquet",
    key: str | None = None,
) -> engine.ObjectResult:
    return engine.scan_object(io.BytesIO(data), name, allowlist, key)


def run_over(objects: Iterable[tuple[str, bytes]], allowlist: Allowlist = NOBODY) -> engine.Run:
    run = engine.Run(allowlist)
    for name, data in objects:
        run.add(scan(data, allowlist, name))
    return run


def records(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    return [f.to_record() for f in findings]


def summary(findings: Iterable[Finding]) -> set[tuple[Any, ...]]:
    """(group key, count, first_ms, last_ms) of each finding: what the Splunk search computes."""
    return {(f.key, f.count, f.first_ms, f.last_ms) for f in findings}


def canonical(findings: Iterable[Finding]) -> list[str]:
    """Every finding's full record, order-independent, for comparing two runs exactly."""
    return sorted(json.dumps(r, sort_keys=True) for r in records(findings))


def _drop(arr: pa.Array, names: list[str]) -> pa.Array:
    head, *rest = names
    typ = arr.type
    if not pa.types.is_struct(typ):
        raise KeyError(head)
    fields, kept = [], []
    for i, f in enumerate(typ):
        child = arr.field(i)
        if f.name == head:
            if rest:
                sub = _drop(child, rest)
                fields.append(pa.field(f.name, sub.type))
                kept.append(sub)
            continue
        fields.append(f)
        kept.append(child)
    if len(kept) == len(typ) and not rest:
        raise KeyError(head)
    return pa.StructArray.from_arrays(kept, fields=fields, mask=arr.is_null())


def drop_path(table: pa.Table, path: str) -> pa.Table:
    """``table`` without the (possibly nested) column ``path``; parent nulls are kept."""
    top, *rest = path.split(".")
    if not rest:
        return table.drop_columns([top])
    idx = table.schema.get_field_index(top)
    if idx < 0:
        raise KeyError(top)
    arr = table.column(top).combine_chunks()
    new = _drop(arr, rest)
    return table.set_column(idx, pa.field(top, new.type), new)


def nested(events: Sequence[Mapping[str, Any]], version: int) -> pa.Table:
    """The nested table ``write_object`` would write, to alter before writing."""
    return nest(columns_from_events(events), version)
