"""Row-group statistics of ``api.operation`` are trusted to skip a row group only when they are
plausible ("Trust under attack, round two", item B2).

A flipped bit in a min or max used to skip a row group holding pushes, silently: the pushes
were never read. A min or max that is no operation name, a min above the max, or a null count
above the row count now means the column is read.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.lake.operations import _may_hold
from detector.lake.parquet_footer import Chunk
from tests.fuzz_child import binary, footer_spans, replace_in_footer, varint
from tests.lake import ACCOUNT, event
from tests.unit.helpers import NOBODY, canonical, parquet_bytes, scan

VERSIONS = pytest.mark.parametrize("version", [1, 2])
INTRUDER = f"arn:aws:iam::{ACCOUNT}:user/intruder"


def lake_object(version: int) -> bytes:
    """Row group 0: AssumeRole, PutImage by an unknown caller, ZeroOp (min ``AssumeRole``, max
    ``ZeroOp``); row group 1: no PutImage (min ``AssumeRole``, max ``Decrypt``)."""
    ops = ["AssumeRole"] * 3 + ["PutImage"] * 4 + ["ZeroOp"] * 3
    ops += ["AssumeRole"] * 5 + ["Decrypt"] * 5
    evs = [
        event(operation=op, time_ms=1000 * i, arn=INTRUDER, session_issuer=None)
        for i, op in enumerate(ops)
    ]
    return parquet_bytes(evs, version, row_group_size=10)


def stat_path(data: bytes, row_group: int, field: int) -> tuple[int, ...]:
    """Footer path of api.operation's Statistics field ``field`` (3 null_count, 5 max_value,
    6 min_value) in ``row_group``."""
    meta = pq.read_metadata(pa.BufferReader(data))
    j = [meta.schema.column(k).path for k in range(meta.num_columns)].index("api.operation")
    path = (4, row_group, 1, j, 3, 12, field)
    assert path in footer_spans(data)
    return path


def with_stat(data: bytes, row_group: int, field: int, value: bytes) -> bytes:
    return replace_in_footer(data, stat_path(data, row_group, field), value)


MIN, MAX, NULLS = 6, 5, 3


@VERSIONS
@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        (MIN, b"\xc1ssumeRole", "min 'A' with its high bit flipped: not ASCII"),
        (MIN, b"assumeRole", "min 'A' with bit 5 flipped: lower case"),
        (MIN, b"Assume\x00Role", "a NUL byte"),
        (MAX, b"\x1aeroOp", "max 'Z' with bit 6 flipped: a control character"),
        (MAX, b"AAA", "max below the min"),
        (MAX, b"", "an empty max"),
    ],
    ids=["min-high-bit", "min-lower-case", "min-nul", "max-control", "max-below-min", "empty"],
)
def test_implausible_statistics_do_not_skip_a_row_group_holding_pushes(
    version: int, field: int, value: bytes, what: str
):
    data = lake_object(version)
    good = scan(data, NOBODY)
    assert sum(f.count for f in good.aggregate.findings()) == 4
    assert good.stats.row_groups_read == 1  # row group 1 skipped by its statistics
    damaged = with_stat(data, 0, field, binary(value))
    result = scan(damaged, NOBODY)
    assert canonical(result.aggregate.findings()) == canonical(good.aggregate.findings()), what
    assert result.stats.row_groups_read == 1


@VERSIONS
@pytest.mark.parametrize("nulls", [11, 2**40, -1])
def test_a_null_count_above_the_rows_means_the_column_is_read(version: int, nulls: int):
    data = lake_object(version)
    damaged = with_stat(data, 1, NULLS, varint(nulls))
    result = scan(damaged, NOBODY)
    assert result.stats.row_groups_read == 2  # row group 1 is no longer skipped
    assert canonical(result.aggregate.findings()) == canonical(scan(data).aggregate.findings())


@VERSIONS
def test_plausible_statistics_still_skip(version: int):
    data = lake_object(version)
    # A plausible max below PutImage: trusted, as real statistics are.
    damaged = with_stat(data, 1, MAX, binary(b"GetObject"))
    assert scan(damaged).stats.row_groups_read == 1
    assert scan(with_stat(data, 1, NULLS, varint(10))).stats.row_groups_read == 1


def chunk(lo: bytes | None, hi: bytes | None, nulls: int | None = 0, values: int = 10) -> Chunk:
    return Chunk(6, False, values, 100, 4, -1, 0, 0, False, lo, hi, 200, nulls)


@pytest.mark.parametrize(
    ("lo", "hi", "nulls", "may"),
    [
        (b"AssumeRole", b"Decrypt", 0, False),
        (b"AssumeRole", b"ZeroOp", 0, True),
        (b"GetFunction20150331v2", b"ListBuckets", None, False),  # versioned names
        (b"UpdateDistribution2020_05_31", b"ZeroOp", 0, False),
        (b"AssumeRole", b"Decrypt", 10, False),  # every value null
        (b"AssumeRole", b"Decrypt", 11, True),
        (b"AssumeRole", b"Decrypt", -1, True),
        (b"Decrypt", b"AssumeRole", 0, True),  # min above max
        (b"assumeRole", b"Decrypt", 0, True),
        (b"Assume Role", b"Decrypt", 0, True),
        (b"A" * 129, b"Decrypt", 0, True),
        (None, b"Decrypt", 0, True),
        (b"AssumeRole", None, 0, True),
    ],
)
def test_may_hold(lo: bytes | None, hi: bytes | None, nulls: int | None, may: bool):
    assert _may_hold(chunk(lo, hi, nulls), (b"PutImage",), 10) is may
