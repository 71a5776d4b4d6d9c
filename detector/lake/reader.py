"""Read one Security Lake Parquet object into normalised rows the active detections report.

One read serves every active detection. Cost model, cheapest first, each step only for what
the previous one kept:
1. row-group statistics of ``api.operation`` (footer only, no data read) against the union of
   the detections' operations: a row group is skipped when none of them can be in it;
2. the ``api.operation`` column alone, dictionary-encoded, compared on dictionary indices;
3. the "predicate" columns (the union of the detections' ``predicate_columns``; for the
   allowlist detections the caller identities and the source domain) for row groups holding a
   watched operation, in bounded batches, filtered to those rows; each detection's predicate
   judges the rows of its own operations, and a row is kept when any detection keeps it;
4. the "detail" columns (whatever else a finding needs: grouping keys, times, status, ids, the
   request JSON with everything a caller sent) only for row groups where a kept row remains,
   and only those rows kept.
Low-cardinality string columns are read dictionary-encoded, so no string is copied before rows
are filtered. Memory stays bounded by one batch of the needed columns, whatever the object size
or the size of its values: a batch is cut by bytes (``BATCH_BYTES``), not only by rows, and the
column chunks of a pass too large to hold at once are streamed instead of pre-buffered
(``PREBUFFER_BYTES``). A batch's request values are cut into the detections' fields and dropped
before the next batch is read, so only the rows kept hold anything beyond one batch.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from detector import detections
from detector.core.allowlist import Allowlist
from detector.core.errors import BadObject
from detector.core.spec import Active
from detector.lake import schema
from detector.lake.operations import (
    _decoded,
    _may_hold,
    _operation_codes,
    every_operation,
    union_request_fields,
    watched_operations,
)
from detector.lake.parquet_footer import one_line
from detector.lake.plan import plan_read
from detector.lake.verdicts import (
    _all_false,
    _judge,
    _request_tests,
    _verdict,
    _watches,
    readable,
)

# Rows per batch, at most: what bounds a batch of small values (the columns of 64K rows of a
# typical object decode to about 8 MB).
BATCH_ROWS = 64 * 1024
# Bytes per batch, about: a caller sizes its request (an image push carries the whole image
# manifest, tens of KB; a stack its template), so rows alone do not bound memory (3,000 calls
# with 95 KB requests peaked at 1.25 GB). Each pass (predicate columns, detail
# columns) reads a row group in batches of as many rows as fit in this budget, going by the
# footer's uncompressed size of the pass's column chunks in that row group (its average per
# row: values crowded into a part of a row group can make a batch larger than this). A batch
# is held about twice (decoded, then the rows kept), so 16 MiB costs ~32-48 MB at the peak:
# small beside the 1024 MB Lambda scanning 4 objects at once, large enough that the 64K-row
# batches of typical objects (~125 bytes per row) are unchanged.
BATCH_BYTES = 16 * 1024 * 1024
MIN_BATCH_ROWS = 16
# Pre-buffering reads a row group's column chunks for a pass whole (compressed) before the
# first batch: a few coalesced ranged GETs, but memory for all of them at once. Chunks of a
# pass holding more than this are streamed instead, ``STREAM_BUFFER_BYTES`` at a time per
# column (the 128 MB benchmark object's passes hold at most ~15 MB per row group, so it keeps
# pre-buffering: same GETs and bytes as before).
PREBUFFER_BYTES = 32 * 1024 * 1024
STREAM_BUFFER_BYTES = 4 * 1024 * 1024
# Pages are the writer's: a reader holds at least one decompressed (pyarrow also a dictionary
# page, for the whole column chunk), whatever its batches. pyarrow's writer puts 1,024 rows in
# a page, so 95 KB requests make 115 MB pages and a pass needs ~350 MB however it is batched.
# Row groups whose values average this much per row in a pass are read one at a time in the
# process (``_LARGE_VALUES``), so the objects scanned in parallel (pipeline.py) cannot each
# hold such pages at once; typical CloudTrail rows (~125 bytes a pass) are far below it.
LARGE_ROW_BYTES = 16 * 1024
_LARGE_VALUES = threading.Lock()


@dataclass
class ReadStats:
    rows: int = 0
    row_groups: int = 0
    row_groups_read: int = 0
    matched: int = 0  # rows of a watched operation
    trusted: int = 0  # matched rows no detection kept
    kept: dict[str, int] = field(default_factory=dict)  # detection id -> rows it kept


class KeptRows(NamedTuple):
    """One batch of normalised rows, each kept by at least one detection, and which.

    ``masks``: detection id -> a boolean array over the batch, True where that detection
    reports the row (every active detection has one, never null).
    """

    batch: pa.RecordBatch
    masks: dict[str, pa.Array]


class ObjectReader:
    """Iterates the rows of one object the active detections keep, as ``KeptRows``: batches
    of ``schema.normal(<their request fields>)`` and, per detection, which rows it keeps.

    ``active``: the detections to run (None: the default one).
    """

    def __init__(
        self,
        f: IO[bytes],
        name: str,
        allowlist: Allowlist,
        key: str | None = None,
        active: Sequence[Active] | None = None,
    ):
        self.name = name
        self.allowlist = allowlist
        self.active = tuple(active) if active is not None else detections.default()
        if not self.active:
            raise ValueError("no detection to run")
        if len({a.detection.id for a in self.active}) != len(self.active):
            raise ValueError("a detection is active twice")
        self.stats = ReadStats(kept={a.detection.id: 0 for a in self.active})
        operations = watched_operations(self.active)
        self._every = every_operation(self.active)
        self._watched = pa.array(operations, pa.string())
        self._watched_bytes = tuple(op.encode() for op in operations)
        self._fields = union_request_fields(self.active)
        self.normal = schema.normal(self._fields)
        self._watches, wanted = _watches(
            self.active, allowlist, operations, self._every, self.normal.names
        )
        tested = any(w.test is not None for w in self._watches)

        plan = plan_read(f, name, key, wanted, self._fields, tested)
        meta = plan.meta
        self.layout = plan.layout
        self._op_index, self._row_groups = plan.op_index, plan.row_groups
        self._predicate, self._detail = plan.predicate, plan.detail
        self._tests_first = plan.tests_first
        self._predicate_leaves, self._detail_leaves = plan.predicate_leaves, plan.detail_leaves
        try:
            # One file for both readers below: its reads are serialised (seek and read under
            # one lock), whichever reader makes them.
            self._source = pa.PythonFile(f, mode="r")
            # pre_buffer: pyarrow reads the needed column chunks of a row group as a few
            # coalesced ranges (adjacent chunks merged), so an S3 object costs few ranged GETs:
            # the 4-row-group benchmark object with the CI allowlist, 41 GETs instead of 57
            # without pre-buffering and 106 with 1 MiB reads, for the same 61 MB (47 %).
            self._pf = pq.ParquetFile(
                self._source,
                metadata=meta,
                read_dictionary=plan.as_dictionary,
                buffer_size=1 << 20,
                pre_buffer=True,
            )
            # Without pre-buffering, for passes whose chunks are too large to hold at once.
            self._streamed = pq.ParquetFile(
                self._source,
                metadata=meta,
                read_dictionary=plan.as_dictionary,
                buffer_size=STREAM_BUFFER_BYTES,
                pre_buffer=False,
            )
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise BadObject(name, f"corrupt Parquet footer: {one_line(exc)}") from exc
        self.stats.row_groups = meta.num_row_groups
        self.stats.rows = meta.num_rows

    @property
    def predicate_columns(self) -> dict[str, str]:
        """Internal name -> path of the columns read for every watched row (pass 3)."""
        return dict(self._predicate)

    @property
    def detail_columns(self) -> dict[str, str]:
        """Internal name -> path of the columns read only for kept rows (pass 4)."""
        return dict(self._detail)

    def __iter__(self) -> Iterator[KeptRows]:
        try:
            yield from self._scan()
        except BadObject:
            raise
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise BadObject(self.name, f"corrupt Parquet data: {one_line(exc)}") from exc

    def _scan(self) -> Iterator[KeptRows]:
        pf = self._pf
        top = schema.OPERATION_PATH.split(".")
        # Row groups as walked in __init__ (never pyarrow's RowGroupMetaData.column(), which
        # can abort the process: see "the footer, walked" above).
        for i, group in enumerate(self._row_groups):
            if group.num_rows == 0 or (
                self._op_index >= 0
                and not self._every
                and not _may_hold(group.chunks[self._op_index], self._watched_bytes, group.num_rows)
            ):
                continue
            self.stats.row_groups_read += 1
            ops = pf.read_row_group(i, columns=[schema.OPERATION_PATH], use_threads=False)
            names = pc.struct_field(ops.column(top[0]), top[1:])
            codes = _operation_codes(names, self._watched)
            hits = len(codes) if self._every else len(codes) - codes.null_count
            if hits == 0:
                continue
            if not self._every:  # with every operation watched, counted batch by batch
                self.stats.matched += hits
            # The operation names themselves, when rows of unwatched operations are judged.
            every = _decoded(names) if self._every else None
            yield from self._scan_row_group(i, codes, every)
            # Hand freed buffers back to the OS between row groups: the allocator otherwise
            # keeps them, and peak memory grows with the object instead of one row group.
            pa.default_memory_pool().release_unused()

    def _batches(
        self, i: int, columns: dict[str, str], leaves: list[int]
    ) -> Iterator[pa.RecordBatch]:
        """The ``columns`` of row group ``i`` (``leaves``: their leaf columns), in batches of
        about ``BATCH_BYTES`` (see there), pre-buffered or streamed (``PREBUFFER_BYTES``).

        A batch the caller has let go of is freed before the next one is decoded: the only
        reference left is dropped here first.
        """
        per_row, stored = self._pass_bytes(i, leaves)
        rows = min(BATCH_ROWS, max(MIN_BATCH_ROWS, BATCH_BYTES // per_row))
        pf = self._streamed if stored > PREBUFFER_BYTES else self._pf
        batches = pf.iter_batches(
            batch_size=rows, row_groups=[i], columns=list(columns.values()), use_threads=False
        )
        for batch in batches:
            yield batch
            del batch

    def _pass_bytes(self, i: int, leaves: list[int]) -> tuple[int, int]:
        """(decoded bytes per row, about; compressed bytes) of the ``leaves`` in row group
        ``i``, from the footer. A footer understating sizes makes batches of at most
        ``BATCH_ROWS`` rows, as before batches were cut by bytes."""
        group = self._row_groups[i]
        decoded = stored = 0
        for j in leaves:
            chunk = group.chunks[j]
            decoded += max(chunk.uncompressed, chunk.compressed)
            stored += chunk.compressed
        return decoded // max(group.num_rows, 1) + 1, stored

    def _predicate_batches(
        self, i: int, num_rows: int
    ) -> Iterator[tuple[int, int, pa.RecordBatch | None]]:
        """(first row, rows, batch of the predicate columns) of row group ``i``; without
        predicate columns in the object, slices of the row group and no batch."""
        if not self._predicate:
            for start in range(0, num_rows, BATCH_ROWS):
                yield start, min(BATCH_ROWS, num_rows - start), None
            return
        offset = 0
        for batch in self._batches(i, self._predicate, self._predicate_leaves):
            n = batch.num_rows
            yield offset, n, batch
            del batch
            offset += n

    def _scan_row_group(
        self, i: int, codes: pa.Array, names: pa.Array | None = None
    ) -> Iterator[KeptRows]:
        """Kept rows of row group ``i``: predicate columns first, details after.

        A row group of large values (``LARGE_ROW_BYTES``) is read under ``_LARGE_VALUES``, one
        at a time in the process, and its (small, normalised) kept rows handed on after.
        """
        large = any(
            self._pass_bytes(i, leaves)[0] >= LARGE_ROW_BYTES
            for leaves in (self._predicate_leaves, self._detail_leaves)
            if leaves
        )
        if not large:
            yield from self._read_row_group(i, codes, names)
            return
        with _LARGE_VALUES:
            parts = list(self._read_row_group(i, codes, names))
        yield from parts

    def _read_row_group(
        self, i: int, codes: pa.Array, names: pa.Array | None = None
    ) -> Iterator[KeptRows]:
        """``names``: every row's operation, when a detection watches every operation."""
        op_mask = pc.is_valid(codes)
        carried: list[dict[str, pa.Array]] = []  # predicate columns and operation, kept rows
        masks: list[dict[str, pa.Array]] = []  # per detection, over the kept rows
        kept_rows: list[int] = []  # row numbers within the row group, ascending
        for start, n, batch in self._predicate_batches(i, len(codes)):
            mask = op_mask.slice(start, n)
            if names is not None:
                # Rows of any operation a detection of every operation keeps, judged first on
                # that detection's own (few, small) columns: the others' columns are then
                # decoded for the rows of their operations and those rows only.
                mask = pc.or_(mask, self._any_operation(batch, n, names.slice(start, n)))
                self.stats.matched += pc.sum(mask).as_py() or 0
            hit = pc.any(mask).as_py()
            rows = batch.filter(mask) if hit and batch is not None else None
            del batch  # freed before the next batch is decoded
            if not hit:
                continue
            watched = pc.filter(codes.slice(start, n), mask)
            m = len(watched)
            operation = (
                pc.take(self._watched, watched)
                if names is None
                else pc.filter(names.slice(start, n), mask)
            )
            cols: dict[str, pa.Array] = {}
            raw_request = None
            if rows is not None:
                raw = {k: schema.column(rows, p) for k, p in self._predicate.items()}
                raw_request = raw.get("request") if self._tests_first else None
                cols = self._columns(raw)
                rows = None
            judged = _judge(self._watches, self.normal, cols, watched, operation)
            if raw_request is not None:
                judged = _request_tests(
                    self._watches, self.layout.version, self.stats.kept, raw_request, judged
                )
            kept = None
            for w in self._watches:
                mine = judged[w.id]
                self.stats.kept[w.id] += pc.sum(mine).as_py() or 0
                kept = mine if kept is None else pc.or_(kept, mine)
            assert kept is not None  # there is at least one detection
            n_kept = pc.sum(kept).as_py() or 0
            self.stats.trusted += m - n_kept
            if n_kept == 0:
                continue
            everything = n_kept == m
            positions = pc.indices_nonzero(mask)
            kept_rows.extend(
                pc.add(positions if everything else pc.filter(positions, kept), start).to_pylist()
            )
            cols["operation"] = operation
            carried.append({k: v if everything else v.filter(kept) for k, v in cols.items()})
            masks.append({k: v if everything else v.filter(kept) for k, v in judged.items()})
        if kept_rows:
            yield from self._with_detail(i, kept_rows, _chunked(carried), _chunked(masks))

    def _any_operation(self, batch: pa.RecordBatch | None, n: int, names: pa.Array) -> pa.Array:
        """Which of a batch's ``n`` rows (``names``: their operations) the detections that watch
        every operation keep, by their predicates alone (their request tests come later, as
        for the others)."""
        out = _all_false(n)
        fields = {f.column for f in self._fields}
        for w in self._watches:
            if not w.every:
                continue
            wanted = {c for c in w.columns if c in self._predicate}
            if any(c in fields for c in w.columns) and "request" in self._predicate:
                wanted.add("request")
            raw = {}
            if batch is not None:
                raw = {c: schema.column(batch, self._predicate[c]) for c in wanted}
            got = {k: readable(v) for k, v in self._columns(raw).items()}
            cols = {
                c: names if c == "operation" else got.get(c, pa.nulls(n, self.normal.field(c).type))
                for c in w.columns
            }
            out = pc.or_(out, _verdict(w.predicate(cols, w.context), n, w.slug))
        return out

    def _columns(self, cols: dict[str, pa.Array]) -> dict[str, pa.Array]:
        """Columns as read, in their internal types; the request cut into its fields."""
        request = cols.pop("request", None)
        response = cols.pop("response", None)
        if request is not None or response is not None:
            cols |= schema.request_fields(request, self.layout, self._fields, response)
        return {k: self._cast(v, k) for k, v in cols.items()}

    def _cast(self, arr: pa.Array, name: str) -> pa.Array:
        typ = self.normal.field(name).type
        if arr.type == typ:
            return arr
        try:
            return arr.cast(typ)
        except pa.ArrowException as exc:
            raise BadObject(
                self.name, f"column for {name} has type {arr.type}, expected {typ}"
            ) from exc

    def _with_detail(
        self,
        i: int,
        kept_rows: list[int],
        carried: dict[str, pa.ChunkedArray],
        masks: dict[str, pa.ChunkedArray],
    ) -> Iterator[KeptRows]:
        """Add the detail columns for exactly the kept rows, reading them batch by batch.

        Rows are matched by their number within the row group, so this does not depend on the
        reader cutting batches at the same places in both passes.
        """

        def part(lo: int, n: int) -> tuple[dict[str, pa.Array], dict[str, pa.Array]]:
            return (
                {k: v.slice(lo, n).combine_chunks() for k, v in carried.items()},
                {k: v.slice(lo, n).combine_chunks() for k, v in masks.items()},
            )

        if not self._detail:
            for lo in range(0, len(kept_rows), BATCH_ROWS):
                n = min(BATCH_ROWS, len(kept_rows) - lo)
                cols, kept = part(lo, n)
                out = self._tested(cols, kept, None, n)
                if out is not None:
                    yield out
            return
        offset = done = 0
        for batch in self._batches(i, self._detail, self._detail_leaves):
            start, end = offset, offset + batch.num_rows
            offset = end
            lo, hi = bisect_left(kept_rows, start), bisect_left(kept_rows, end)
            if lo == hi:
                del batch  # freed before the next batch is decoded
                continue
            if hi - lo == batch.num_rows:  # every row kept: no copy
                rows = batch
            else:
                rows = batch.take(pa.array([r - start for r in kept_rows[lo:hi]], pa.int64()))
            del batch
            # The request is cut into its fields here: its text is let go with ``rows``.
            raw = {k: schema.column(rows, p) for k, p in self._detail.items()}
            del rows
            request = raw.get("request")
            detail = self._columns(raw)
            del raw
            cols, kept = part(lo, hi - lo)
            done += hi - lo
            out = self._tested(cols | detail, kept, request, hi - lo)
            del request
            if out is not None:
                yield out
        if done != len(kept_rows):
            raise BadObject(
                self.name,
                f"row group {i}: {len(kept_rows) - done} matching rows vanished on re-read",
            )

    def _tested(
        self,
        cols: dict[str, pa.Array],
        kept: dict[str, pa.Array],
        request: pa.Array | None,
        n: int,
    ) -> KeptRows | None:
        """The rows with the request tests judged (when not judged with the predicates): rows
        no detection keeps any more are dropped (and counted as not reported); None if none
        is left."""
        if self._tests_first or all(w.test is None for w in self._watches):
            return KeptRows(self._normalise(cols, n), kept)
        if request is None:  # no request column in this object: no test can hold
            request = pa.nulls(n, pa.string())
        kept = _request_tests(self._watches, self.layout.version, self.stats.kept, request, kept)
        anyone = None
        for mask in kept.values():
            anyone = mask if anyone is None else pc.or_(anyone, mask)
        assert anyone is not None
        left = pc.sum(anyone).as_py() or 0
        self.stats.trusted += n - left
        if left == 0:
            return None
        if left < n:
            cols = {k: v.filter(anyone) for k, v in cols.items()}
            kept = {k: v.filter(anyone) for k, v in kept.items()}
        return KeptRows(self._normalise(cols, left), kept)

    def _normalise(self, cols: dict[str, pa.Array], n: int) -> pa.RecordBatch:
        arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in self.normal]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.normal)
        batch.validate(full=True)  # e.g. invalid UTF-8, which Parquet reading does not check
        return batch


def _chunked(parts: list[dict[str, pa.Array]]) -> dict[str, pa.ChunkedArray]:
    """Per-batch columns of the same names joined, without copying."""
    if not parts:
        return {}
    return {k: pa.chunked_array([p[k] for p in parts], parts[0][k].type) for k in parts[0]}
