"""The Parquet footer, walked by hand before pyarrow's metadata accessors are trusted.

Some C++ accessors behind pyarrow's Python metadata objects throw without the exception being
translated, which aborts the process (SIGABRT; in Lambda the runtime dies with the whole SQS
batch): ``RowGroupMetaData.column(j)`` when the chunk's size statistics disagree with the
schema's levels, when the chunk is encrypted, or when the row group has fewer chunks than the
schema has columns; ``ColumnChunkMetaData.statistics`` when the chunk's physical type is not
the schema's. Re-encoding the metadata (``write_metadata_file``) can even crash on a parsed
but inconsistent footer. So the reader never calls those: it walks the footer's Thrift
encoding here, checks every column chunk it will read, and takes the ``api.operation``
statistics from here. Reading pages goes through calls that turn C++ exceptions into Python
ones (a chunk pyarrow itself finds inconsistent there fails the object, nothing more).

The fields used are decoded as pyarrow's generated Thrift code decodes them: read only when
the wire type is the declared one (else skipped), list elements by their declared type, a
repeated field replacing or merging as there, a type nibble of 0 ending a struct. So both
read the same values from any footer pyarrow accepts; a footer encoded so oddly that they
could part ways elsewhere fails the walk (BadObject) or, at worst, misjudges statistics.
"""

from __future__ import annotations

from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from detector.core.errors import BadObject
from detector.lake.thrift import (
    _T_BINARY,
    _T_I32,
    _T_I64,
    _T_LIST,
    _T_STRUCT,
    _field_header,
    _list_header,
    _skip_elements,
    _skip_value,
    _varint,
    _zigzag,
)

MAGIC = b"PAR1"

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

# Footers larger than these are refused (``BadObject``) before they are parsed: parsing and
# walking cost time and memory per column chunk (10,000 row groups of 59 columns, a 116 MB
# footer: 25 s and 0.9 GB). Security Lake objects are at most a few hundred MB, in row groups
# of up to ~128 MB: a handful of row groups, 48 (v1) or 59 (v2) leaf columns (70 and 85 schema
# elements), 9-13 KB of footer per row group (tests.lake objects, string statistics included).
# The limits leave a wide margin: 500 row groups would be row groups of 600 KB in a 300 MB
# object. At the limit a footer costs about 0.4 s and 35 MB to parse and walk (5.8 MB).
MAX_FOOTER_BYTES = 16 * 1024 * 1024
MAX_ROW_GROUPS = 500
# Row groups x schema elements (leaves and groups): bounds the column chunks walked however a
# footer spends its bytes (500 row groups of 200 schema elements).
MAX_COLUMN_CHUNKS = 100_000


class Chunk(NamedTuple):
    """What the footer says of one column chunk, as far as the reader needs."""

    physical: int | None  # Thrift ``Type``; None when the chunk carries none
    encrypted: bool
    num_values: int
    compressed: int  # total_compressed_size
    data_offset: int
    dictionary_offset: int  # -1 when not set
    rep_histogram: int  # entries in the repetition-level histogram (0: none)
    def_histogram: int
    unencoded_bytes: bool  # SizeStatistics.unencoded_byte_array_data_bytes is set
    min_value: bytes | None  # Statistics.min_value/max_value, kept for one column only
    max_value: bytes | None
    uncompressed: int = 0  # total_uncompressed_size: the chunk's pages once decompressed
    null_count: int | None = None  # Statistics.null_count, kept for one column only


class RowGroup(NamedTuple):
    num_rows: int
    chunks: list[Chunk]


def _footer_row_groups(buf: bytes, stats_column: int) -> list[RowGroup]:
    """The row groups of a Thrift-encoded ``FileMetaData``, with statistics of one column."""
    groups: list[RowGroup] = []
    pos = fid = 0
    while True:
        fid, t, pos = _field_header(buf, pos, fid)
        if t == 0:
            return groups
        if fid != 4 or t != _T_LIST:  # 4: row_groups
            pos = _skip_value(buf, pos, t, 0)
            continue
        n, _, pos = _list_header(buf, pos)
        groups = []
        for _ in range(n):
            group, pos = _row_group(buf, pos, stats_column)
            groups.append(group)


def _row_group(buf: bytes, pos: int, stats_column: int) -> tuple[RowGroup, int]:
    rows, fid = 0, 0
    chunks: list[Chunk] = []
    while True:
        fid, t, pos = _field_header(buf, pos, fid)
        if t == 0:
            return RowGroup(rows, chunks), pos
        if fid == 1 and t == _T_LIST:  # columns
            n, _, pos = _list_header(buf, pos)
            chunks = []
            for j in range(n):
                chunk, pos = _column_chunk(buf, pos, j == stats_column)
                chunks.append(chunk)
        elif fid == 3 and t == _T_I64:  # num_rows
            v, pos = _varint(buf, pos)
            rows = _zigzag(v)
        else:
            pos = _skip_value(buf, pos, t, 2)


def _column_chunk(buf: bytes, pos: int, want_stats: bool) -> tuple[Chunk, int]:
    """One ``ColumnChunk``: its ``ColumnMetaData`` (3) and whether it is encrypted (8, 9)."""
    physical: int | None = None
    encrypted = False
    num_values = compressed = data_offset = 0
    dictionary_offset = -1
    rep = dfn = 0
    unencoded = False
    lo: bytes | None = None
    hi: bytes | None = None
    nulls: int | None = None
    uncompressed = 0
    fid = 0
    while True:
        b = buf[pos]
        pos += 1
        t = b & 0x0F
        if b >> 4:
            fid += b >> 4
        elif t:
            v, pos = _varint(buf, pos)
            fid = _zigzag(v)
        if not t:
            chunk = Chunk(
                physical,
                encrypted,
                num_values,
                compressed,
                data_offset,
                dictionary_offset,
                rep,
                dfn,
                unencoded,
                lo,
                hi,
                uncompressed,
                nulls,
            )
            return chunk, pos
        if t == _T_I64:  # file_offset, offset and column index places
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
            continue
        if fid != 3 or t != _T_STRUCT:
            if (fid == 8 and t == _T_STRUCT) or (fid == 9 and t == _T_BINARY):
                encrypted = True
            pos = _skip_value(buf, pos, t, 3)
            continue
        mid = 0
        while True:  # ColumnMetaData, the hot loop: headers and scalars decoded inline
            b = buf[pos]
            pos += 1
            t = b & 0x0F
            if not t:
                break
            if b >> 4:
                mid += b >> 4
            else:
                v, pos = _varint(buf, pos)
                mid = _zigzag(v)
            if t in (_T_I64, _T_I32):
                v, pos = _varint(buf, pos)
                v = (v >> 1) ^ -(v & 1)
                if t == _T_I32:
                    if mid == 1:
                        physical = v
                elif mid == 5:
                    num_values = v
                elif mid == 6:
                    uncompressed = v
                elif mid == 7:
                    compressed = v
                elif mid == 9:
                    data_offset = v
                elif mid == 11:
                    dictionary_offset = v
            elif t == _T_BINARY:
                n, pos = _varint(buf, pos)
                pos += n
            elif mid == 12 and t == _T_STRUCT and want_stats:
                sid = 0
                while True:
                    sid, t, pos = _field_header(buf, pos, sid)
                    if t == 0:
                        break
                    if sid in (5, 6) and t == _T_BINARY:  # max_value, min_value
                        n, pos = _varint(buf, pos)
                        if sid == 5:
                            hi = buf[pos : pos + n]
                        else:
                            lo = buf[pos : pos + n]
                        pos += n
                    elif sid == 3 and t == _T_I64:  # null_count
                        v, pos = _varint(buf, pos)
                        nulls = _zigzag(v)
                    else:
                        pos = _skip_value(buf, pos, t, 5)
            elif mid == 16 and t == _T_STRUCT:  # size_statistics
                sid = 0
                while True:
                    sid, t, pos = _field_header(buf, pos, sid)
                    if t == 0:
                        break
                    if sid == 1 and t == _T_I64:
                        unencoded = True
                        pos = _skip_value(buf, pos, t, 5)
                    elif sid in (2, 3) and t == _T_LIST:  # level histograms: list<i64>
                        n, _, pos = _list_header(buf, pos)
                        pos = _skip_elements(buf, pos, _T_I64, n, 5)
                        rep, dfn = (n, dfn) if sid == 2 else (rep, n)
                    else:
                        pos = _skip_value(buf, pos, t, 5)
            else:
                pos = _skip_value(buf, pos, t, 4)


def read_footer(f: IO[bytes], size: int, name: str) -> tuple[bytes, pq.FileMetaData]:
    """The footer's Thrift bytes and pyarrow's metadata parsed from those same bytes.

    Reading the footer once and handing pyarrow the bytes guarantees the walk and pyarrow see
    one footer, and costs no read beyond the one pyarrow would make.
    """
    f.seek(size - 8)
    trailer = f.read(8)
    length = int.from_bytes(trailer[:4], "little")
    if not 0 < length <= size - 12:
        raise BadObject(
            name, f"corrupt Parquet footer: footer length {length} in a {size}-byte object"
        )
    if length > MAX_FOOTER_BYTES:  # refused before it is read
        raise BadObject(
            name,
            f"Parquet footer too large: {length} bytes, more than the {MAX_FOOTER_BYTES} "
            "a Security Lake object needs",
        )
    f.seek(size - 8 - length)
    footer = f.read(length)
    f.seek(0)
    if len(footer) != length:
        raise BadObject(name, f"corrupt Parquet footer: read {len(footer)} of {length} bytes")
    _check_counts(footer, name)
    try:
        meta = pq.read_metadata(pa.BufferReader(MAGIC + footer + trailer))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadObject(name, f"corrupt Parquet footer: {one_line(exc)}") from exc
    return footer, meta


def _footer_counts(buf: bytes) -> tuple[int | None, int | None]:
    """(schema elements, row groups) as the footer's list headers announce them, reading no
    further into it than it takes to find both (None: not found). A footer repeating a list
    (Thrift keeps the last) may announce fewer here: ``MAX_FOOTER_BYTES`` still bounds it."""
    elements: int | None = None
    groups: int | None = None
    pos = fid = 0
    while True:
        fid, t, pos = _field_header(buf, pos, fid)
        if t == 0:
            return elements, groups
        if fid in (2, 4) and t == _T_LIST:  # 2: schema, 4: row_groups
            n, et, after = _list_header(buf, pos)
            if fid == 2:
                elements = n
            else:
                groups = n
            if groups is not None and (elements is not None or groups > MAX_ROW_GROUPS):
                return elements, groups
            pos = _skip_elements(buf, after, et, n, 1)
        else:
            pos = _skip_value(buf, pos, t, 0)


def _check_counts(footer: bytes, name: str) -> None:
    """Refuse a footer announcing more row groups or column chunks than the limits allow.

    A footer whose lists cannot even be found is left to the parse that follows to name.
    """
    try:
        elements, groups = _footer_counts(footer)
    except (ValueError, IndexError):
        return
    if groups is not None and groups > MAX_ROW_GROUPS:
        raise BadObject(
            name,
            f"Parquet footer too large: {groups} row groups, more than the {MAX_ROW_GROUPS} "
            "a Security Lake object needs",
        )
    if groups is not None and elements is not None and groups * elements > MAX_COLUMN_CHUNKS:
        raise BadObject(
            name,
            f"Parquet footer too large: {groups} row groups of {elements} schema elements, "
            f"more than the {MAX_COLUMN_CHUNKS} a Security Lake object needs",
        )


def column_chunks(
    footer: bytes, meta: pq.FileMetaData, stats_column: int, name: str
) -> list[RowGroup]:
    """The walked row groups, as many as pyarrow counts, each with a chunk per leaf."""
    try:
        groups = _footer_row_groups(footer, stats_column)
    except (ValueError, IndexError) as exc:  # IndexError: ran past the end of the footer
        raise BadObject(name, f"corrupt Parquet footer: {one_line(exc)}") from exc
    if len(groups) != meta.num_row_groups:
        raise BadObject(
            name,
            f"corrupt Parquet footer: {len(groups)} row groups found, "
            f"pyarrow counts {meta.num_row_groups}",
        )
    for r, group in enumerate(groups):
        if len(group.chunks) != meta.num_columns:
            raise BadObject(
                name,
                f"corrupt Parquet footer: row group {r} has {len(group.chunks)} column "
                f"chunks, the schema {meta.num_columns} columns",
            )
        if group.num_rows < 0:
            raise BadObject(
                name, f"corrupt Parquet footer: row group {r} has {group.num_rows} rows"
            )
    return groups


def check_chunks(
    groups: list[RowGroup], meta: pq.FileMetaData, paths: list[str], size: int, name: str
) -> None:
    """Every chunk of the leaves under ``paths``, in every row group, agrees with the schema.

    Raises ``BadObject`` naming the column and the row group otherwise. Columns the reader does
    not read are not judged: damage there does not change what the reader finds.
    """
    leaves = []
    for j in leaf_indices(meta, paths):
        c = meta.schema.column(j)
        leaves.append((j, c.path, c.physical_type, c.max_repetition_level, c.max_definition_level))
    for r, group in enumerate(groups):
        for j, path, physical, max_rep, max_def in leaves:
            chunk = group.chunks[j]
            problem = _chunk_problem(chunk, physical, max_rep, max_def, size)
            # Every row puts at least one entry (a value or a null) in every leaf, so a row
            # group cannot have more rows than a chunk has values. pyarrow sizes buffers by the
            # row group's row count: a count altered to 2^40 made it allocate until killed.
            if not problem and group.num_rows > chunk.num_values:
                problem = f"has {chunk.num_values} values for {group.num_rows} rows"
            if problem:
                raise BadObject(
                    name, f"corrupt Parquet footer: column {path} in row group {r} {problem}"
                )


def leaf_indices(meta: pq.FileMetaData, paths: list[str]) -> list[int]:
    """Indices of the leaf columns at or under ``paths`` (a struct or map path: its leaves)."""
    prefixes = tuple(p + "." for p in paths)
    return [
        j
        for j in range(meta.num_columns)
        if (path := meta.schema.column(j).path) in paths or path.startswith(prefixes)
    ]


def _chunk_problem(c: Chunk, physical: str, max_rep: int, max_def: int, size: int) -> str | None:
    """What is wrong with one column chunk (None: nothing), as the end of a sentence.

    ``physical`` is the schema's type as pyarrow names it (``UNKNOWN`` for none valid).
    """
    if c.encrypted:
        return "is encrypted"
    if c.physical is None:
        return "has no column metadata"
    stored = (
        _PHYSICAL_TYPES[c.physical]
        if 0 <= c.physical < len(_PHYSICAL_TYPES)
        else f"type {c.physical}"
    )
    if stored != physical:
        return f"is stored as {stored}, the schema says {physical}"
    for what, entries, levels in (
        ("repetition", c.rep_histogram, max_rep + 1),
        ("definition", c.def_histogram, max_def + 1),
    ):
        if entries and entries != levels:
            return f"has a {what}-level histogram of {entries} entries, expected {levels}"
    if c.unencoded_bytes and physical != "BYTE_ARRAY":
        return f"has byte-array size statistics for a {physical} column"
    if c.num_values < 0:
        return f"has {c.num_values} values"
    # Where pyarrow places the chunk: from its dictionary page when that comes first. A chunk
    # claiming bytes beyond the object is refused before any buffer is sized by its claim.
    start = c.data_offset
    if 0 < c.dictionary_offset < start:
        start = c.dictionary_offset
    if start < 0 or c.compressed < 0 or start + c.compressed > size:
        return f"claims bytes {start}..{start + c.compressed} of a {size}-byte object"
    return None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
