"""Objects that are not readable CloudTrail OCSF Parquet: each kind raises ``BadObject`` with a
one-line message naming the object, and a failing object contributes nothing to a run."""

from __future__ import annotations

import gzip
import io
import json
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.analysis import engine
from detector.core.allowlist import Allowlist
from detector.core.errors import BadObject
from detector.lake.reader import ObjectReader
from tests.fuzz_child import replace_in_footer, varint
from tests.lake import ACCOUNT, CI_ROLE, event
from tests.unit.helpers import (
    NOBODY,
    canonical,
    drop_path,
    nested,
    parquet_bytes,
    scan,
    table_bytes,
)

VERSIONS = pytest.mark.parametrize("version", [1, 2])
NAME = "s3://lake-bucket/aws/CLOUD_TRAIL_MGMT/2.0/region=us-east-1/accountId=1/x.gz.parquet"


def events(n: int = 30) -> list[dict]:
    return [
        event(
            arn=f"arn:aws:iam::{ACCOUNT}:user/u{i % 4}",
            session_issuer=None,
            time_ms=1_000 * i,
            operation="PutImage" if i % 3 else "GetObject",
        )
        for i in range(n)
    ]


def bad(data: bytes, name: str = NAME, allowlist: Allowlist = NOBODY) -> BadObject:
    """Scan ``data``: it must raise BadObject (and nothing else) with a one-line message."""
    with pytest.raises(BadObject) as info:
        engine.scan_object(io.BytesIO(data), name, allowlist)
    exc = info.value
    message = str(exc)
    assert message.startswith(f"{name}: "), message
    assert "\n" not in message and "\r" not in message, message
    assert exc.name == name
    return exc


def footer_start(data: bytes) -> int:
    (length,) = struct.unpack("<i", data[-8:-4])
    return len(data) - 8 - length


def chunk_range(data: bytes, row_group: int, path: str) -> tuple[int, int]:
    """Byte range of one column chunk."""
    md = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(row_group)
    for j in range(md.num_columns):
        col = md.column(j)
        if col.path_in_schema == path:
            start = col.dictionary_page_offset or col.data_page_offset
            return start, start + col.total_compressed_size
    raise KeyError(path)


def flip(data: bytes, at: int, n: int = 8) -> bytes:
    out = bytearray(data)
    for j in range(at, at + n):
        out[j] ^= 0xFF
    return bytes(out)


def user_path(version: int) -> str:
    return "actor.user.uuid" if version == 1 else "actor.user.uid"


# --- one test per kind -----------------------------------------------------------------------


def test_empty_object():
    assert "empty" in bad(b"").reason


@VERSIONS
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.99])
def test_truncated_object(version, fraction):
    data = parquet_bytes(events(), version)
    assert "truncated" in bad(data[: int(len(data) * fraction)]).reason


@pytest.mark.parametrize(
    "data",
    [
        b"time,api.operation\n1,PutImage\n",
        gzip.compress(parquet_bytes(events(), 2)),
        b"{}",
        b"PAR1",
        b"\x00" * 100,
    ],
    ids=["csv", "gzipped-parquet", "json", "magic-only", "zeros"],
)
def test_not_parquet(data):
    assert "not Parquet" in bad(data).reason


def test_magic_at_both_ends_but_garbage_footer():
    bad(b"PAR1" + b"\x07" * 64 + b"PAR1")
    bad(b"PAR1" + b"\x00" * 64 + struct.pack("<i", 40) + b"PAR1")


@pytest.mark.parametrize(
    "table",
    [
        pa.table({"a": [1, 2], "b": ["x", "y"]}),
        pa.table({"api": pa.array([{"service": "ecr"}]), "time": [1]}),
    ],
    ids=["a-b", "api-without-operation"],
)
def test_parquet_of_another_schema(table):
    assert "not a CloudTrail OCSF table" in bad(table_bytes(table)).reason


@VERSIONS
def test_ocsf_table_without_api_operation(version):
    table = drop_path(nested([event()], version), "api.operation")
    exc = bad(table_bytes(table))
    assert "not a CloudTrail OCSF table" in exc.reason
    assert "api.operation" in exc.reason


def test_flat_column_named_api_operation():
    table = pa.table({"api.operation": ["PutImage"], "time": pa.array([1], pa.int64())})
    bad(table_bytes(table))


@VERSIONS
def test_api_operation_but_no_time_column(version):
    table = drop_path(nested([event()], version), "time")
    exc = bad(table_bytes(table))
    assert "time" in exc.reason
    assert "not a CloudTrail OCSF table" in exc.reason


@VERSIONS
def test_time_column_not_integer(version):
    table = nested([event()], version)
    idx = table.schema.get_field_index("time")
    table = table.set_column(idx, "time", table.column("time").cast(pa.string()))
    exc = bad(table_bytes(table))
    assert "time" in exc.reason


@VERSIONS
@pytest.mark.parametrize("compression", ["gzip", "zstd", "snappy"])
@pytest.mark.parametrize("column", ["api.operation", "user", "time"])
def test_corrupted_data_page_in_the_middle(version, compression, column):
    data = parquet_bytes(events(), version, compression=compression, row_group_size=10)
    path = user_path(version) if column == "user" else column
    start, end = chunk_range(data, 1, path)
    corrupt = flip(data, (start + end) // 2 - 4)
    assert corrupt[:4] == corrupt[-4:] == b"PAR1"
    bad(corrupt)


@VERSIONS
def test_corrupted_footer_names_invalid_utf8(version):
    # A column name in the footer's schema no longer valid UTF-8.
    data = parquet_bytes(events(), version)
    start = footer_start(data)
    at = data.index(b"user_agent", start)
    corrupt = data[:at] + b"\xff" + data[at + 1 :]
    bad(corrupt)


@VERSIONS
def test_invalid_utf8_in_a_string_value(version):
    # Uncompressed, so the bytes of the caller ARN can be spoiled in the data pages themselves.
    evs = [event(arn=f"arn:aws:iam::{ACCOUNT}:user/attacker", session_issuer=None)] * 3
    data = parquet_bytes(evs, version, compression="none")
    cut = footer_start(data)
    needle = b"user/attacker"
    body = data[:cut].replace(needle, b"user/\xff\xfetacker")
    assert body != data[:cut]
    bad(body + data[cut:])


@VERSIONS
@pytest.mark.parametrize("compression", ["gzip", "snappy", "none"])
def test_byte_flips_anywhere_raise_only_bad_object(version, compression):
    data = parquet_bytes(events(24), version, compression=compression, row_group_size=8)
    stride = max(1, len(data) // 120)
    escaped = []
    for at in range(4, len(data) - 12, stride):
        corrupt = flip(data, at, 4)
        try:
            result = engine.scan_object(io.BytesIO(corrupt), NAME, Allowlist.of([]))
            for f in result.aggregate.findings():
                f.to_record()
        except BadObject as exc:
            assert str(exc).startswith(f"{NAME}: ") and "\n" not in str(exc)
        except Exception as exc:
            escaped.append((at, type(exc).__name__, str(exc)[:80]))
    assert escaped == []


# --- a failing object leaves the run unchanged -----------------------------------------------


@VERSIONS
def test_failure_mid_object_leaves_run_unchanged(version):
    allowlist = Allowlist.of([])
    good1 = parquet_bytes(events(12), version)
    good2 = parquet_bytes(events(9), 3 - version)
    whole = parquet_bytes(events(30), version, row_group_size=10)
    start, end = chunk_range(whole, 2, "api.operation")
    broken = flip(whole, (start + end) // 2 - 4)

    # The broken object yields findings from its first row groups before it fails.
    rows_before_failure = 0
    reader = ObjectReader(io.BytesIO(broken), "broken", allowlist)
    with pytest.raises(BadObject):
        for kept in reader:
            rows_before_failure += kept.batch.num_rows
    assert rows_before_failure > 0

    run = engine.Run(allowlist)
    failed = []
    for name, data in [("good1", good1), ("broken", broken), ("good2", good2)]:
        try:
            run.add(engine.scan_object(io.BytesIO(data), name, allowlist))
        except BadObject:
            failed.append(name)
    assert failed == ["broken"]

    clean = engine.Run(allowlist)
    for name, data in [("good1", good1), ("good2", good2)]:
        clean.add(engine.scan_object(io.BytesIO(data), name, allowlist))
    assert canonical(run.findings()) == canonical(clean.findings())
    assert (run.objects, run.rows, run.matched, run.trusted) == (
        clean.objects,
        clean.rows,
        clean.matched,
        clean.trusted,
    )
    assert all("broken" not in f.objects.values for f in run.findings())


def test_failed_scan_after_a_good_one_changes_nothing():
    allowlist = Allowlist.of([])
    run = engine.Run(allowlist)
    run.add(scan(parquet_bytes(events(), 2), allowlist, "good"))
    before = (canonical(run.findings()), run.objects, run.rows, run.matched, run.trusted)
    for data in (b"", b"not parquet", parquet_bytes(events(), 1)[:100]):
        with pytest.raises(BadObject):
            run.add(scan(data, allowlist, "bad"))
    assert (canonical(run.findings()), run.objects, run.rows, run.matched, run.trusted) == before


@VERSIONS
def test_good_object_is_not_bad(version):
    # The negative case of every test above: an intact object of either version scans.
    result = scan(parquet_bytes(events(), version, row_group_size=10), name=NAME)
    assert sum(f.count for f in result.aggregate.findings()) == 20


# --- footer fields that made pyarrow abort the process or allocate without bound ------------
#
# Each object below is an intact one with one footer field of one column chunk rewritten (see
# tests.fuzz_child.replace_in_footer). pyarrow's metadata accessors aborted the process
# (SIGABRT, exit 134) on the first two while the reader looked at row-group statistics, and
# sized buffers by the third's row count until the kernel killed it. So they are scanned in a
# child process, beside a good object, as an operator would: the good object's findings must
# be printed and the bad one named (exit 1), whatever pyarrow does.

ROOT = Path(__file__).resolve().parents[2]
CHILD_MEMORY = 6 << 30  # without the checks, the row-count case would take the whole machine


def leaf(data: bytes, path: str) -> int:
    meta = pq.read_metadata(pa.BufferReader(data))
    return [meta.schema.column(j).path for j in range(meta.num_columns)].index(path)


def op_chunk_type(data: bytes, physical: int) -> bytes:
    """api.operation in row group 0 claims physical type ``physical`` (1: INT32)."""
    return replace_in_footer(data, (4, 0, 1, leaf(data, "api.operation"), 3, 1), varint(physical))


def op_chunk_histogram(data: bytes, entries: int) -> bytes:
    """api.operation in row group 0 with a definition-level histogram of ``entries`` zeros."""
    path = (4, 0, 1, leaf(data, "api.operation"), 3, 16, 3)
    return replace_in_footer(data, path, bytes([entries << 4 | 6]) + bytes(entries))


def row_group_rows(data: bytes, rows: int) -> bytes:
    """Row group 0 claims ``rows`` rows."""
    return replace_in_footer(data, (4, 0, 3), varint(rows))


def cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, resource.RLIM_INFINITY))


def scan_cli(tmp_path: Path, *objects: Path) -> subprocess.CompletedProcess[str]:
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{CI_ROLE}\n")
    argv = [sys.executable, "-m", "detector", "scan", "--allowlist", str(allowlist)]
    return subprocess.run(
        [*argv, "--format", "jsonl", *map(str, objects)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=cap_memory,
    )


@VERSIONS
@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: op_chunk_type(d, 1), "api.operation in row group 0 is stored as INT32"),
        (lambda d: op_chunk_type(d, 0), "api.operation in row group 0 is stored as BOOLEAN"),
        (lambda d: op_chunk_histogram(d, 5), "api.operation in row group 0 has a definition"),
        (lambda d: op_chunk_histogram(d, 1), "api.operation in row group 0 has a definition"),
        (lambda d: row_group_rows(d, 2**40), "in row group 0 has 10 values for 1099511627776"),
    ],
    ids=["type-int32", "type-boolean", "histogram-5", "histogram-1", "rows-2^40"],
)
def test_scan_beside_a_good_object_names_the_bad_one(tmp_path, version, damage, named):
    good = tmp_path / "good.parquet"
    good.write_bytes(parquet_bytes(events(), version, row_group_size=10))
    bad_path = tmp_path / "bad.parquet"
    bad_path.write_bytes(damage(parquet_bytes(events(), 3 - version, row_group_size=10)))

    alone = scan_cli(tmp_path, good)
    both = scan_cli(tmp_path, good, bad_path)

    assert alone.returncode == 0, alone.stderr
    assert [json.loads(line) for line in alone.stdout.splitlines()]  # findings to compare
    assert both.returncode == 1, both.stderr  # 134 (SIGABRT) or -9 before
    assert both.stdout == alone.stdout
    [error] = [line for line in both.stderr.splitlines() if line.startswith("error:")]
    assert str(bad_path) in error and named in error, error


@VERSIONS
def test_chunk_claiming_bytes_beyond_the_object(version):
    data = parquet_bytes(events(), version, row_group_size=10)
    j = leaf(data, user_path(version))
    corrupt = replace_in_footer(data, (4, 1, 1, j, 3, 7), varint(2**40))  # total_compressed_size
    reason = bad(corrupt).reason
    assert f"column {user_path(version)} in row group 1 claims bytes" in reason, reason
    corrupt = replace_in_footer(data, (4, 2, 1, j, 3, 9), varint(-5))  # data_page_offset
    reason = bad(corrupt).reason
    assert f"column {user_path(version)} in row group 2 claims bytes -5.." in reason, reason


@VERSIONS
def test_damaged_chunk_of_a_column_the_reader_does_not_read(version):
    # A chunk the reader never reads does not change what it finds: the object still scans.
    data = parquet_bytes(events(), version, row_group_size=10)
    j = leaf(data, "metadata.product.name")
    damaged = replace_in_footer(data, (4, 0, 1, j, 3, 1), varint(1))  # INT32, not BYTE_ARRAY
    assert canonical(scan(damaged).aggregate.findings()) == canonical(
        scan(data).aggregate.findings()
    )


@VERSIONS
def test_row_group_statistics_still_skip_row_groups(version):
    # api.operation statistics are taken from the walked footer: a row group whose min..max
    # excludes PutImage is not read; one whose statistics are gone is read.
    ops = ["AssumeRole"] * 10 + ["PutImage"] * 10 + ["ZeroOp"] * 10
    evs = [event(operation=op, time_ms=i, session_issuer=None) for i, op in enumerate(ops)]
    data = parquet_bytes(evs, version, row_group_size=10)
    result = scan(data)
    assert (result.stats.row_groups, result.stats.row_groups_read) == (3, 1)
    assert sum(f.count for f in result.aggregate.findings()) == 10
    j = leaf(data, "api.operation")
    no_min = replace_in_footer(data, (4, 2, 1, j, 3, 12, 6), b"\x00")  # min_value: ""
    assert scan(no_min).stats.row_groups_read == 2
