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
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from detector import schema
from detector.allowlist import Allowlist
from detector.errors import BadObject
from detector.parquet_footer import (
    MAGIC,
    Chunk,
    check_chunks,
    column_chunks,
    one_line,
    read_footer,
)

TARGET_OPERATION = "PutImage"
BATCH_ROWS = 64 * 1024
_TARGET_BYTES = TARGET_OPERATION.encode()


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
    if size >= 12 and f.read(4) == MAGIC:
        f.seek(0)
        return size
    f.seek(0)
    if size < 12 or f.read(4) != MAGIC:
        raise BadObject(name, "not Parquet (no PAR1 magic at the start)")
    raise BadObject(name, f"truncated Parquet ({size} bytes, no footer)")


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


def _may_hold_target(chunk: Chunk) -> bool:
    """False only when the chunk's statistics rule out ``PutImage``.

    ``min_value``/``max_value`` compare as unsigned bytes, which for UTF-8 is code point order;
    a chunk with only the legacy ``min``/``max`` (whose order old writers got wrong) is read.
    """
    if chunk.min_value is None or chunk.max_value is None:
        return True
    return chunk.min_value <= _TARGET_BYTES <= chunk.max_value


def _leaf_index(meta: pq.FileMetaData, path: str) -> int:
    """Index of the leaf column ``path``; -1 if there is none."""
    for i in range(meta.num_columns):
        if meta.schema.column(i).path == path:
            return i
    return -1


class ObjectReader:
    """Iterates the untrusted PutImage rows of one object as batches of ``schema.NORMAL``."""

    def __init__(self, f: IO[bytes], name: str, allowlist: Allowlist, key: str | None = None):
        self.name = name
        self.allowlist = allowlist
        self.stats = ReadStats()
        size = _check_magic(f, name)
        footer, meta = read_footer(f, size, name)
        try:
            arrow_schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BadObject(name, f"corrupt Parquet footer: {one_line(exc)}") from exc
        self._op_index = _leaf_index(meta, schema.OPERATION_PATH)
        self._row_groups = column_chunks(footer, meta, self._op_index, name)
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
        # Before any statistics or data are read: see "the footer, walked" above.
        read = [schema.OPERATION_PATH, *self._trust.values(), *self._detail.values()]
        check_chunks(self._row_groups, meta, read, size, name)
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
            raise BadObject(name, f"corrupt Parquet footer: {one_line(exc)}") from exc
        self.stats.row_groups = meta.num_row_groups
        self.stats.rows = meta.num_rows

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._scan()
        except BadObject:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise BadObject(self.name, f"corrupt Parquet data: {one_line(exc)}") from exc

    def _scan(self) -> Iterator[pa.RecordBatch]:
        pf = self._pf
        top = schema.OPERATION_PATH.split(".")
        # Row groups as walked in __init__ (never pyarrow's RowGroupMetaData.column(), which
        # can abort the process: see "the footer, walked" above).
        for i, group in enumerate(self._row_groups):
            if group.num_rows == 0 or (
                self._op_index >= 0 and not _may_hold_target(group.chunks[self._op_index])
            ):
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
