"""Read one Security Lake Parquet object into normalised rows of untrusted PutImage calls.

Cost model, cheapest first, each step only for what the previous one kept:
1. row-group statistics of ``api.operation`` (footer only, no data read);
2. the ``api.operation`` column alone, dictionary-encoded, compared on dictionary indices;
3. the "trust" columns (caller ARN, session issuer, calling service, and the source domain,
   which decides only for calls with none of the other three) for row groups holding a
   PutImage, in bounded batches, filtered to PutImage rows, then by the allowlist;
4. the "detail" columns (grouping keys, times, request JSON with the image manifest, ids) only
   for row groups where an untrusted PutImage remains, and only those rows kept.
Low-cardinality string columns are read dictionary-encoded, so no string is copied before rows
are filtered. Memory stays bounded by one batch of the needed columns, whatever the object size.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from detector import schema
from detector.allowlist import Allowlist
from detector.errors import BadObject

TARGET_OPERATION = "PutImage"
BATCH_ROWS = 64 * 1024
_MAGIC = b"PAR1"


@dataclass
class ReadStats:
    rows: int = 0
    row_groups: int = 0
    row_groups_read: int = 0
    matched: int = 0
    trusted: int = 0


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
    if size >= 12 and f.read(4) == _MAGIC:
        f.seek(0)
        return size
    f.seek(0)
    if size < 12 or f.read(4) != _MAGIC:
        raise BadObject(name, "not Parquet (no PAR1 magic at the start)")
    raise BadObject(name, f"truncated Parquet ({size} bytes, no footer)")


# --- the footer's column chunks, checked before pyarrow touches them --------------------------
#
# pyarrow's Python bindings call some C++ accessors that throw without translating the
# exception, which aborts the whole process (SIGABRT): ``RowGroupMetaData.column(j)`` when the
# chunk's size statistics disagree with the schema's levels, when the chunk is encrypted or
# when the row group has fewer chunks than the schema has columns; ``.statistics`` when the
# chunk's physical type is not the schema's. No Python code can catch that, so every column
# chunk is checked here first, from the footer's own Thrift encoding. The data path (reading
# pages) turns C++ exceptions into Python ones and needs no such care.

_PHYSICAL_TYPES = (
    "BOOLEAN",
    "INT32",
    "INT64",
    "INT96",
    "FLOAT",
    "DOUBLE",
    "BYTE_ARRAY",
    "FIXED_LEN_BYTE_ARRAY",
)
# Thrift compact protocol type codes (1, 2: bool true/false, held in the field header).
_T_BYTE, _T_DOUBLE, _T_BINARY, _T_LIST, _T_SET, _T_MAP, _T_STRUCT = 3, 7, 8, 9, 10, 11, 12
_MAX_NESTING = 16  # Parquet's FileMetaData nests 5 deep; more means a hostile encoding


class _Chunk(NamedTuple):
    """What the footer says of one column chunk, as far as the checks need."""

    physical: int  # Thrift ``Type``; -1 when the chunk carries no ColumnMetaData
    encrypted: bool
    num_values: int
    compressed: int  # total_compressed_size
    data_offset: int
    dictionary_offset: int  # -1 when not set
    rep_histogram: int  # entries in the repetition-level histogram (0: none)
    def_histogram: int
    unencoded_bytes: bool  # SizeStatistics.unencoded_byte_array_data_bytes is set


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    out, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = buf[pos]
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos + 1
        shift += 7
        if shift > 70:
            raise ValueError("Thrift varint too long")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _skip_fields(buf: bytes, pos: int, depth: int) -> int:
    """Position after the rest of a struct, from its next field header through its end.

    Scalars are skipped inline: they are most fields, and a call per field would double the
    cost of walking a footer (about 15 µs per column chunk as it is).
    """
    while True:
        b = buf[pos]
        pos += 1
        if b == 0:
            return pos
        if not b >> 4:  # long form: the field id follows as a varint
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
        t = b & 0x0F
        if 4 <= t <= 6:  # i16, i32, i64: one varint
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
        elif t == _T_BINARY:
            n, pos = _varint(buf, pos)
            pos += n
        else:
            pos = _skip_value(buf, pos, t, depth)


def _skip_value(buf: bytes, pos: int, t: int, depth: int) -> int:
    """Position after one value of Thrift compact type ``t``."""
    if 4 <= t <= 6:
        while buf[pos] >= 0x80:
            pos += 1
        return pos + 1
    if t == _T_BINARY:
        n, pos = _varint(buf, pos)
        return pos + n
    if t in (1, 2):  # a bool field: its value is in the header
        return pos
    if depth >= _MAX_NESTING:
        raise ValueError("Thrift values nested too deep")
    if t == _T_STRUCT:
        return _skip_fields(buf, pos, depth + 1)
    if t in (_T_LIST, _T_SET):
        size, et, pos = _list_header(buf, pos)
        return _skip_elements(buf, pos, et, size, depth + 1)
    if t == _T_MAP:
        size, pos = _varint(buf, pos)
        if size:
            kv = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip_elements(buf, pos, kv >> 4, 1, depth + 1)
                pos = _skip_elements(buf, pos, kv & 0x0F, 1, depth + 1)
        return pos
    if t == _T_BYTE:
        return pos + 1
    if t == _T_DOUBLE:
        return pos + 8
    raise ValueError(f"unknown Thrift type {t}")


def _skip_elements(buf: bytes, pos: int, t: int, count: int, depth: int) -> int:
    if t <= _T_BYTE:  # in a container a bool takes one byte, as a byte does
        return pos + count
    if t == _T_BINARY:
        for _ in range(count):
            n, pos = _varint(buf, pos)
            pos += n
        return pos
    if t == _T_STRUCT:
        for _ in range(count):
            pos = _skip_fields(buf, pos, depth)
        return pos
    for _ in range(count):
        pos = _skip_value(buf, pos, t, depth)
    return pos


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(size, element type, position after) of a list or set."""
    b = buf[pos]
    if b >> 4 == 15:
        size, pos = _varint(buf, pos + 1)
        return size, b & 0x0F, pos
    return b >> 4, b & 0x0F, pos + 1


def _field_header(buf: bytes, pos: int, last: int) -> tuple[int, int, int]:
    """(field id, type, position after) of a struct's next field; type 0 at its end."""
    b = buf[pos]
    if b == 0:
        return 0, 0, pos + 1
    if b >> 4:
        return last + (b >> 4), b & 0x0F, pos + 1
    n, pos = _varint(buf, pos + 1)
    return _zigzag(n), b & 0x0F, pos


def _footer_row_groups(buf: bytes) -> list[tuple[int, list[_Chunk]]]:
    """(num_rows, column chunks) of each row group of a Thrift-encoded ``FileMetaData``."""
    groups: list[tuple[int, list[_Chunk]]] = []
    pos = fid = 0
    while True:
        fid, t, pos = _field_header(buf, pos, fid)
        if t == 0:
            return groups
        if fid != 4 or t != _T_LIST:  # 4: row_groups
            pos = _skip_value(buf, pos, t, 0)
            continue
        n, et, pos = _list_header(buf, pos)
        if et != _T_STRUCT:
            pos = _skip_elements(buf, pos, et, n, 1)
            continue
        for _ in range(n):
            rows, chunks, gid = 0, [], 0
            while True:
                gid, t, pos = _field_header(buf, pos, gid)
                if t == 0:
                    break
                if gid == 1 and t == _T_LIST:  # columns
                    m, et, pos = _list_header(buf, pos)
                    if et != _T_STRUCT:
                        pos = _skip_elements(buf, pos, et, m, 2)
                        continue
                    for _ in range(m):
                        chunk, pos = _column_chunk(buf, pos)
                        chunks.append(chunk)
                elif gid == 3 and t == 6:  # num_rows
                    v, pos = _varint(buf, pos)
                    rows = _zigzag(v)
                else:
                    pos = _skip_value(buf, pos, t, 2)
            groups.append((rows, chunks))


def _column_chunk(buf: bytes, pos: int) -> tuple[_Chunk, int]:
    """One ``ColumnChunk``: its ``ColumnMetaData`` (3) and whether it is encrypted (8, 9)."""
    physical, encrypted = -1, False
    num_values = compressed = data_offset = 0
    dictionary_offset = -1
    rep = dfn = 0
    unencoded = False
    fid = 0
    while True:
        fid, t, pos = _field_header(buf, pos, fid)
        if t == 0:
            chunk = _Chunk(
                physical,
                encrypted,
                num_values,
                compressed,
                data_offset,
                dictionary_offset,
                rep,
                dfn,
                unencoded,
            )
            return chunk, pos
        if fid != 3 or t != _T_STRUCT:
            encrypted = encrypted or fid in (8, 9)
            pos = _skip_value(buf, pos, t, 3)
            continue
        mid = 0
        while True:
            mid, t, pos = _field_header(buf, pos, mid)
            if t == 0:
                break
            if t in (5, 6):  # i32, i64
                v, pos = _varint(buf, pos)
                if mid == 1:
                    physical = _zigzag(v)
                elif mid == 5:
                    num_values = _zigzag(v)
                elif mid == 7:
                    compressed = _zigzag(v)
                elif mid == 9:
                    data_offset = _zigzag(v)
                elif mid == 11:
                    dictionary_offset = _zigzag(v)
            elif mid == 16 and t == _T_STRUCT:  # size_statistics
                sid = 0
                while True:
                    sid, t, pos = _field_header(buf, pos, sid)
                    if t == 0:
                        break
                    if sid == 1:
                        unencoded = True
                    elif sid in (2, 3) and t == _T_LIST:
                        size = _list_header(buf, pos)[0]
                        rep, dfn = (size, dfn) if sid == 2 else (rep, size)
                    pos = _skip_value(buf, pos, t, 5)
            else:
                pos = _skip_value(buf, pos, t, 4)


def _check_column_chunks(meta: pq.FileMetaData, size: int, name: str) -> None:
    """Every column chunk of every row group agrees with the schema and lies in the object.

    Raises ``BadObject`` naming the row group and column otherwise. Walks the footer as
    pyarrow parsed it (re-encoded, so it is read exactly as the C++ reader sees it).
    """
    try:
        sink = pa.BufferOutputStream()
        meta.write_metadata_file(sink)
        encoded = sink.getvalue().to_pybytes()[4:-8]  # between "PAR1" and length + "PAR1"
        groups = _footer_row_groups(encoded)
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise BadObject(name, f"corrupt Parquet footer: {_one_line(exc)}") from exc
    if len(groups) != meta.num_row_groups:
        raise BadObject(
            name,
            f"corrupt Parquet footer: {len(groups)} row groups encoded, "
            f"{meta.num_row_groups} counted",
        )
    leaves = [meta.schema.column(j) for j in range(meta.num_columns)]
    expected = [
        (c.path, c.physical_type, c.max_repetition_level + 1, c.max_definition_level + 1)
        for c in leaves
    ]
    for r, (rows, chunks) in enumerate(groups):
        if len(chunks) != len(expected):
            raise BadObject(
                name,
                f"corrupt Parquet footer: row group {r} has {len(chunks)} column chunks, "
                f"the schema {len(expected)} columns",
            )
        if rows < 0:
            raise BadObject(name, f"corrupt Parquet footer: row group {r} has {rows} rows")
        for (path, physical, rep_levels, def_levels), c in zip(expected, chunks, strict=True):
            problem = _chunk_problem(c, physical, rep_levels, def_levels, size)
            if problem:
                raise BadObject(
                    name, f"corrupt Parquet footer: column {path} in row group {r} {problem}"
                )


def _chunk_problem(
    c: _Chunk, physical: str, rep_levels: int, def_levels: int, size: int
) -> str | None:
    """What is wrong with one column chunk (None: nothing), as the end of a sentence.

    ``physical`` is the schema's type as pyarrow names it (``UNKNOWN`` for no valid type).
    """
    if c.encrypted:
        return "is encrypted"
    if c.physical == -1:
        return "has no column metadata"
    stored = (
        _PHYSICAL_TYPES[c.physical]
        if 0 <= c.physical < len(_PHYSICAL_TYPES)
        else f"type {c.physical}"
    )
    if stored != physical:
        return f"is stored as {stored}, the schema says {physical}"
    for what, entries, levels in (
        ("repetition", c.rep_histogram, rep_levels),
        ("definition", c.def_histogram, def_levels),
    ):
        if entries and entries != levels:
            return f"has a {what}-level histogram of {entries} entries, expected {levels}"
    if c.unencoded_bytes and physical != "BYTE_ARRAY":
        return f"has byte-array size statistics for a {physical} column"
    if c.num_values < 0:
        return f"has {c.num_values} values"
    # As pyarrow places a chunk: from its dictionary page when one comes first.
    start = c.data_offset
    if 0 < c.dictionary_offset < start:
        start = c.dictionary_offset
    if start < 0 or c.compressed < 0 or start + c.compressed > size:
        return (
            f"claims bytes {start}..{start + c.compressed} (size {c.compressed}) "
            f"of a {size}-byte object"
        )
    return None


def _operation_mask(ops: pa.ChunkedArray | pa.Array) -> pa.Array:
    """PutImage mask, comparing dictionary indices instead of decoded strings."""
    chunks = ops.chunks if isinstance(ops, pa.ChunkedArray) else [ops]
    parts = []
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            # Compare the (few) dictionary values once, then gather by index: no string work
            # per row. A dictionary may repeat a value, so no single index is assumed.
            hit = pc.equal(chunk.dictionary, TARGET_OPERATION)
            parts.append(pc.fill_null(pc.take(hit, chunk.indices), False))
        else:
            parts.append(pc.fill_null(pc.equal(chunk, TARGET_OPERATION), False))
    if not parts:
        return pa.array([], pa.bool_())
    return pa.concat_arrays(parts) if len(parts) > 1 else parts[0]


def _may_hold_target(rg: Any, col_index: int) -> bool:
    stats = rg.column(col_index).statistics
    if stats is None or not stats.has_min_max:
        return True
    try:
        return bool(stats.min <= TARGET_OPERATION <= stats.max)
    except TypeError:
        return True


def _leaf_index(pf: pq.ParquetFile, path: str) -> int | None:
    for i in range(pf.metadata.num_columns):
        if pf.schema.column(i).path == path:
            return i
    return None


class ObjectReader:
    """Iterates the untrusted PutImage rows of one object as batches of ``schema.NORMAL``."""

    def __init__(self, f: IO[bytes], name: str, allowlist: Allowlist, key: str | None = None):
        self.name = name
        self.allowlist = allowlist
        self.stats = ReadStats()
        size = _check_magic(f, name)
        try:
            meta = pq.read_metadata(f)
            arrow_schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BadObject(name, f"corrupt Parquet footer: {_one_line(exc)}") from exc
        # Before anything looks at a row group's statistics or data: see _check_column_chunks.
        _check_column_chunks(meta, size, name)
        layout = schema.detect(arrow_schema, key if key is not None else name)
        if layout is None:
            raise BadObject(name, "not a CloudTrail OCSF table (no api.operation column)")
        self.layout = layout
        self._trust = schema.present(layout, arrow_schema, list(layout.trust))
        self._detail = schema.present(layout, arrow_schema, list(layout.detail))
        missing = [c for c in schema.REQUIRED if c not in self._detail and c != "operation"]
        if missing:
            paths = ", ".join(layout.columns[c] for c in missing)
            raise BadObject(name, f"not a CloudTrail OCSF table (no {paths} column)")
        types = schema.leaf_paths(arrow_schema)
        time_path = layout.columns["time_ms"]
        if not pa.types.is_integer(types[time_path]):
            raise BadObject(name, f"column {time_path} is {types[time_path]}, expected epoch ms")
        as_dictionary = [schema.OPERATION_PATH] + [
            path
            for name_, path in (self._trust | self._detail).items()
            if name_ not in layout.unique
            and (pa.types.is_string(types[path]) or pa.types.is_large_string(types[path]))
        ]
        try:
            # pre_buffer: pyarrow reads the needed column chunks of a row group as a few
            # coalesced ranges (adjacent chunks merged), so an S3 object costs few ranged GETs:
            # the 4-row-group benchmark object with the CI allowlist, 41 GETs instead of 57
            # without pre-buffering and 106 with 1 MiB reads, for the same 61 MB (47 %).
            self._pf = pq.ParquetFile(
                f,
                metadata=meta,
                read_dictionary=as_dictionary,
                buffer_size=1 << 20,
                pre_buffer=True,
            )
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise BadObject(name, f"corrupt Parquet footer: {_one_line(exc)}") from exc
        self.stats.row_groups = meta.num_row_groups
        self.stats.rows = meta.num_rows

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._scan()
        except BadObject:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise BadObject(self.name, f"corrupt Parquet data: {_one_line(exc)}") from exc

    def _scan(self) -> Iterator[pa.RecordBatch]:
        pf = self._pf
        meta = pf.metadata
        op_index = _leaf_index(pf, schema.OPERATION_PATH)
        top = schema.OPERATION_PATH.split(".")
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            if rg.num_rows == 0 or (op_index is not None and not _may_hold_target(rg, op_index)):
                continue
            self.stats.row_groups_read += 1
            ops = pf.read_row_group(i, columns=[schema.OPERATION_PATH], use_threads=False)
            op_mask = _operation_mask(pc.struct_field(ops.column(top[0]), top[1:]))
            hits = pc.sum(op_mask).as_py() or 0
            if hits == 0:
                continue
            self.stats.matched += hits
            yield from self._scan_row_group(i, op_mask)
            # Hand freed buffers back to the OS between row groups: the allocator otherwise
            # keeps them, and peak memory grows with the object instead of one row group.
            pa.default_memory_pool().release_unused()

    def _scan_row_group(self, i: int, op_mask: pa.Array) -> Iterator[pa.RecordBatch]:
        """Untrusted PutImage rows of row group ``i``: trust columns first, details after."""
        trust_cols: list[pa.RecordBatch] = []
        kept_rows: list[int] = []  # row numbers within the row group, ascending
        if not self._trust:
            # No identity columns at all: nothing can be trusted, every PutImage is reported.
            kept_rows = pc.indices_nonzero(op_mask).to_pylist()
        offset = 0
        batches = (
            self._pf.iter_batches(
                batch_size=BATCH_ROWS,
                row_groups=[i],
                columns=list(self._trust.values()),
                use_threads=False,
            )
            if self._trust
            else iter(())
        )
        for batch in batches:
            start, n = offset, batch.num_rows
            offset += n
            mask = op_mask.slice(start, n)
            if not pc.any(mask).as_py():
                continue
            rows = batch.filter(mask)
            cols = {k: schema.column(rows, p) for k, p in self._trust.items()}
            # A column the object lacks is all nulls: for the three identities that means "no
            # caller identity", which is when the source domain decides (see trust_mask).
            trusted = self.allowlist.trust_mask(
                *(
                    cols.get(k, pa.nulls(rows.num_rows, pa.string()))
                    for k in ("user", "session_issuer", "invoked_by", "src_domain")
                )
            )
            n_trusted = pc.sum(trusted).as_py() or 0
            self.stats.trusted += n_trusted
            if n_trusted == rows.num_rows:
                continue
            untrusted = pc.invert(trusted)
            kept_rows.extend(
                pc.add(pc.filter(pc.indices_nonzero(mask), untrusted), start).to_pylist()
            )
            trust_cols.append(
                pa.RecordBatch.from_pydict({k: v.filter(untrusted) for k, v in cols.items()})
            )
        if kept_rows:
            trust = pa.Table.from_batches(trust_cols) if trust_cols else None
            yield from self._with_detail(i, kept_rows, trust)

    def _with_detail(
        self, i: int, kept_rows: list[int], trust: pa.Table | None
    ) -> Iterator[pa.RecordBatch]:
        """Add the detail columns for exactly the kept rows, reading them batch by batch.

        Rows are matched by their number within the row group, so this does not depend on the
        reader cutting batches at the same places in both passes.
        """
        offset = done = 0
        for batch in self._pf.iter_batches(
            batch_size=BATCH_ROWS,
            row_groups=[i],
            columns=list(self._detail.values()),
            use_threads=False,
        ):
            start, end = offset, offset + batch.num_rows
            offset = end
            lo, hi = bisect_left(kept_rows, start), bisect_left(kept_rows, end)
            if lo == hi:
                continue
            rows = batch.take(pa.array([r - start for r in kept_rows[lo:hi]], pa.int64()))
            detail = {k: schema.column(rows, p) for k, p in self._detail.items()}
            part = (
                {
                    name: trust.column(name).slice(lo, hi - lo).combine_chunks()
                    for name in trust.column_names
                }
                if trust is not None
                else {}
            )
            done += hi - lo
            yield self._normalise(part | detail, hi - lo)
        if done != len(kept_rows):
            raise BadObject(
                self.name,
                f"row group {i}: {len(kept_rows) - done} matching rows vanished on re-read",
            )

    def _normalise(self, cols: dict[str, pa.Array], n: int) -> pa.RecordBatch:
        cols = dict(cols)
        cols["operation"] = (
            pa.repeat(pa.scalar(TARGET_OPERATION), n)
            if n >= 1024
            else pa.array([TARGET_OPERATION] * n, pa.string())
        )
        request = cols.pop("request", None)
        if request is not None:
            cols["repository"], cols["image_tag"] = schema.request_fields(request, self.layout)
        arrays = []
        for field in schema.NORMAL:
            arr = cols.get(field.name)
            if arr is None:
                arr = pa.nulls(n, field.type)
            elif arr.type != field.type:
                try:
                    arr = arr.cast(field.type)
                except pa.ArrowException as exc:
                    raise BadObject(
                        self.name,
                        f"column for {field.name} has type {arr.type}, expected {field.type}",
                    ) from exc
            arrays.append(arr)
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema.NORMAL)
        batch.validate(full=True)  # e.g. invalid UTF-8, which Parquet reading does not check
        return batch


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
