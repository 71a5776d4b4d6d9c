"""Footers larger than a Security Lake object needs are refused before they are parsed
("Trust under attack, round two", item B3).

A footer of 10,000 row groups cost 25 s and 1.2 GB to parse and walk. The limits
(``parquet_footer.MAX_FOOTER_BYTES``, ``MAX_ROW_GROUPS``, ``MAX_COLUMN_CHUNKS``) leave a wide
margin over real objects (a handful of row groups); past them the object is a ``BadObject``
named in one line, before pyarrow or the walk sees the footer.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import pyarrow.parquet as pq
import pytest

from detector.analysis import engine
from detector.core.errors import BadObject
from detector.lake import parquet_footer
from tests import lake
from tests.unit.helpers import NOBODY, parquet_bytes

NAME = "s3://lake/aws/CLOUD_TRAIL_MGMT/2.0/region=us-east-1/accountId=1/x.gz.parquet"
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


def events(n: int) -> list[dict[str, Any]]:
    return [
        lake.event(time_ms=lake.T0_MS + i, arn=INTRUDER, session_issuer=None, event_uid=f"e{i}")
        for i in range(n)
    ]


def many_row_groups(n: int, version: int = 2) -> bytes:
    """``n`` row groups of one PutImage each."""
    return parquet_bytes(events(n), version, row_group_size=1)


class Reads(io.BytesIO):
    """A file that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.sizes.append(len(out))
        return out


def refused(data: bytes) -> BadObject:
    with pytest.raises(BadObject) as info:
        engine.scan_object(io.BytesIO(data), NAME, NOBODY)
    message = str(info.value)
    assert message.startswith(f"{NAME}: Parquet footer too large: ") and "\n" not in message
    return info.value


def footer_length(data: bytes) -> int:
    return int(struct.unpack("<i", data[-8:-4])[0])


@pytest.mark.parametrize("version", [1, 2])
def test_more_row_groups_than_the_limit_are_refused_before_parsing(
    version: int, monkeypatch: pytest.MonkeyPatch
):
    data = many_row_groups(parquet_footer.MAX_ROW_GROUPS + 1, version)
    parsed: list[str] = []
    real = pq.read_metadata
    monkeypatch.setattr(pq, "read_metadata", lambda *a, **k: parsed.append("pyarrow") or real(*a))
    monkeypatch.setattr(parquet_footer, "_footer_row_groups", lambda *a: parsed.append("walk"))
    exc = refused(data)
    assert f"{parquet_footer.MAX_ROW_GROUPS + 1} row groups" in exc.reason
    assert parsed == []


def test_the_limit_itself_is_read():
    # One row group fewer: the footer is parsed and walked, every push found.
    data = many_row_groups(parquet_footer.MAX_ROW_GROUPS)
    result = engine.scan_object(io.BytesIO(data), NAME, NOBODY)
    assert result.stats.row_groups == parquet_footer.MAX_ROW_GROUPS
    assert sum(f.count for f in result.findings()) == parquet_footer.MAX_ROW_GROUPS


def test_a_footer_over_the_byte_limit_is_not_even_read(monkeypatch: pytest.MonkeyPatch):
    data = many_row_groups(20)
    length = footer_length(data)
    monkeypatch.setattr(parquet_footer, "MAX_FOOTER_BYTES", length - 1)
    f = Reads(data)
    with pytest.raises(BadObject) as info:
        engine.scan_object(f, NAME, NOBODY)
    assert info.value.reason == (
        f"Parquet footer too large: {length} bytes, more than the {length - 1} a Security "
        "Lake object needs"
    )
    assert max(f.sizes) < length  # only the trailer and the magic were read
    monkeypatch.setattr(parquet_footer, "MAX_FOOTER_BYTES", length)
    assert sum(x.count for x in engine.scan_object(io.BytesIO(data), NAME, NOBODY).findings()) == 20


def test_row_groups_times_schema_elements_over_the_limit_are_refused(
    monkeypatch: pytest.MonkeyPatch,
):
    data = many_row_groups(20)
    elements, groups = parquet_footer._footer_counts(data[-8 - footer_length(data) : -8])
    assert groups == 20 and elements is not None and elements > 50  # every schema element
    monkeypatch.setattr(parquet_footer, "MAX_COLUMN_CHUNKS", 20 * elements - 1)
    exc = refused(data)
    assert exc.reason == (
        f"Parquet footer too large: 20 row groups of {elements} schema elements, more than "
        f"the {20 * elements - 1} a Security Lake object needs"
    )
    monkeypatch.setattr(parquet_footer, "MAX_COLUMN_CHUNKS", 20 * elements)
    assert engine.scan_object(io.BytesIO(data), NAME, NOBODY).stats.row_groups == 20


def test_limits_leave_a_wide_margin_over_a_real_object():
    # A 128 MB object in row groups of 32 MB: 4 row groups; its footer is tens of KB.
    data = many_row_groups(4)
    elements, groups = parquet_footer._footer_counts(data[-8 - footer_length(data) : -8])
    assert groups == 4 and elements is not None
    assert groups * 100 <= parquet_footer.MAX_ROW_GROUPS
    assert groups * elements * 100 <= parquet_footer.MAX_COLUMN_CHUNKS
    assert footer_length(data) * 100 <= parquet_footer.MAX_FOOTER_BYTES
