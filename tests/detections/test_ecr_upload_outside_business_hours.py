"""ecr-upload-outside-business-hours: the Arrow predicate at its boundaries, its options, and its
SQL predicate run on DuckDB against the Arrow predicate over random times.

DuckDB lacks two Trino functions the named-zone SQL uses; they are macros here:
``from_unixtime(seconds, zone)`` (DuckDB's ``timezone(zone, to_timestamp(seconds))``, a local
timestamp) and ``day_of_week`` (ISO, 1 = Monday: DuckDB's ``isodow``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from detector import detections
from detector.core.allowlist import Allowlist
from detector.core.errors import ConfigError
from detector.core.spec import Active, Context
from detector.detections import _hours
from detector.detections import ecr_upload_outside_business_hours as bh
from detector.detections._hours import MAX_MS, MIN_MS

SLUG = "ecr-upload-outside-business-hours"
ACCOUNT = "111122223333"
CI_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"
CI_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/build-1"
CONTRACTOR = f"arn:aws:iam::{ACCOUNT}:user/old-contractor"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ALL_DAY = {bh.START: "00:00", bh.END: "24:00"}


def ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, milli: int = 0
) -> int:
    when = datetime(year, month, day, hour, minute, second, milli * 1000, tzinfo=UTC)
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def active(options: Mapping[str, str] | None = None) -> Active:
    (one,) = detections.activate([SLUG], dict(options or {}))
    return one


def reported(
    times: Sequence[int | None],
    options: Mapping[str, str] | None = None,
    *,
    users: Sequence[str | None] | None = None,
    issuers: Sequence[str | None] | None = None,
    allowlist: Allowlist | None = None,
    typ: pa.DataType | None = None,
) -> list[bool]:
    one = active(options)
    n = len(times)
    rows = {
        "time_ms": pa.array(times, typ or pa.int64()),
        "user": pa.array(users or [CI_SESSION] * n, pa.string()),
        "session_issuer": pa.array(issuers or [CI_ROLE] * n, pa.string()),
        "invoked_by": pa.nulls(n, pa.string()),
        "src_domain": pa.nulls(n, pa.string()),
    }
    ctx = one.context(allowlist or Allowlist(()))
    out = one.detection.predicate(rows, ctx)
    assert out.null_count == 0
    return list(out.to_pylist())


def test_registered_with_escu_metadata():
    d = detections.get(SLUG)
    assert d.id == "739ed682-27e9-4ba0-80e5-a91b97698213"
    assert d.risk_score == 49 and d.severity == "medium"
    assert d.predicate_columns == ("time_ms", "user", "session_issuer", "invoked_by", "src_domain")
    assert d.message("arn:x") == "Container uploaded outside business hours from arn:x"
    assert [o.env for o in d.options] == [bh.TIMEZONE, bh.START, bh.END, bh.EXCEPTIONS]
    assert len(d.examples) >= 6


def test_defaults_are_escus_rule():
    opts = active().options
    assert opts[bh.TIMEZONE] == bh.Zone("UTC", 0)
    assert (opts[bh.START], opts[bh.END]) == (8 * 60, 20 * 60)
    assert opts[bh.EXCEPTIONS].empty


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "+00:00"])
def test_boundaries_of_the_day(zone):
    wed = (2026, 11, 18)
    times = [
        ms(*wed, 7, 59, 59, 999),
        ms(*wed, 8, 0, 0, 0),
        ms(*wed, 19, 59, 59, 999),
        ms(*wed, 20, 0, 0, 0),
        ms(*wed, 0, 0),
        ms(*wed, 23, 59, 59, 999),
    ]
    assert reported(times, {bh.TIMEZONE: zone}) == [True, False, False, True, True, True]


def test_minutes_of_the_hours_count():
    wed = (2026, 11, 18)
    times = [ms(*wed, 9, 29, 59, 999), ms(*wed, 9, 30), ms(*wed, 17, 14, 59, 999), ms(*wed, 17, 15)]
    options = {bh.START: "09:30", bh.END: "17:15"}
    assert reported(times, options) == [True, False, False, True]


@pytest.mark.parametrize("zone", ["UTC", "Europe/London"])
def test_weekend_boundaries_utc(zone):
    # Europe/London is UTC in November.
    times = [
        ms(2026, 11, 20, 23, 59, 59, 999),  # Friday
        ms(2026, 11, 21, 0, 0),  # Saturday
        ms(2026, 11, 21, 12, 0),
        ms(2026, 11, 22, 23, 59, 59, 999),  # Sunday
        ms(2026, 11, 23, 0, 0),  # Monday
    ]
    assert reported(times, {bh.TIMEZONE: zone, **ALL_DAY}) == [False, True, True, True, False]


def test_weekend_and_hours_across_a_dst_change():
    # Europe/Berlin: CET (+01:00) until 2026-03-29 01:00 UTC (a Sunday), CEST (+02:00) after.
    berlin = {bh.TIMEZONE: "Europe/Berlin"}
    times = [
        ms(2026, 3, 27, 22, 59, 59, 999),  # Friday 23:59:59.999 CET
        ms(2026, 3, 27, 23, 0),  # Saturday 00:00 CET
        ms(2026, 3, 29, 21, 59, 59, 999),  # Sunday 23:59:59.999 CEST
        ms(2026, 3, 29, 22, 0),  # Monday 00:00 CEST
    ]
    assert reported(times, {**berlin, **ALL_DAY}) == [False, True, True, False]
    times = [
        ms(2026, 3, 27, 6, 59, 59, 999),  # Friday 07:59:59.999 CET
        ms(2026, 3, 27, 7, 0),  # 08:00 CET
        ms(2026, 3, 30, 5, 59, 59, 999),  # Monday 07:59:59.999 CEST
        ms(2026, 3, 30, 6, 0),  # 08:00 CEST
        ms(2026, 3, 30, 17, 59, 59, 999),  # 19:59:59.999 CEST
        ms(2026, 3, 30, 18, 0),  # 20:00 CEST
    ]
    assert reported(times, berlin) == [True, False, True, False, False, True]
    # The same UTC times judged in UTC.
    assert reported(times) == [True, True, True, True, False, False]
    # Back to CET on 2026-10-25: Monday 26 October 08:00 CET is 07:00 UTC.
    times = [ms(2026, 10, 26, 6, 59, 59, 999), ms(2026, 10, 26, 7, 0)]
    assert reported(times, berlin) == [True, False]


@pytest.mark.parametrize(
    ("zone", "offset_h"), [("+05:30", 5.5), ("-03:00", -3), ("-09:30", -9.5), ("+14:00", 14)]
)
def test_fixed_offsets(zone, offset_h):
    local_8 = ms(2026, 11, 18, 8) - int(offset_h * 3_600_000)
    local_20 = ms(2026, 11, 18, 20) - int(offset_h * 3_600_000)
    times = [local_8 - 1, local_8, local_20 - 1, local_20]
    assert reported(times, {bh.TIMEZONE: zone}) == [True, False, False, True]
    # Saturday 00:00 local.
    sat = ms(2026, 11, 21) - int(offset_h * 3_600_000)
    assert reported([sat - 1, sat], {bh.TIMEZONE: zone, **ALL_DAY}) == [False, True]


def test_fixed_offset_and_named_zone_agree():
    rng = random.Random(11)
    times = [rng.randrange(ms(2026, 1, 1), ms(2027, 1, 1)) for _ in range(2000)]
    assert reported(times, {bh.TIMEZONE: "+05:30"}) == reported(
        times, {bh.TIMEZONE: "Asia/Kolkata"}
    )


@pytest.mark.parametrize("zone", ["UTC", "+05:30", "Europe/Berlin"])
def test_times_before_1970(zone):
    times = [
        ms(1969, 12, 31, 12, 0),  # a Wednesday
        ms(1969, 12, 31, 22, 30),
        ms(1969, 12, 27, 12, 0),  # a Saturday
        ms(1900, 3, 7, 13, 0),  # a Wednesday
        ms(1, 1, 1, 12, 0),  # a Monday
        ms(1, 1, 6, 12, 0),  # a Saturday
        -1,  # Wednesday 1969-12-31 23:59:59.999 UTC
    ]
    assert reported(times, {bh.TIMEZONE: zone}) == [False, True, True, False, False, True, True]


@pytest.mark.parametrize("zone", ["UTC", "+05:30", "-09:30", "Europe/Berlin", "Pacific/Kiritimati"])
def test_null_and_out_of_range_times_are_reported(zone):
    times = [
        None,
        INT64_MIN,
        INT64_MAX,
        MIN_MS - 1,
        MAX_MS + 1,
        INT64_MIN + 1,
        INT64_MAX - 1,
        -(10**18),
        10**18,
    ]
    assert reported(times, {bh.TIMEZONE: zone, **ALL_DAY}) == [True] * len(times)


def test_first_and_last_judged_times():
    # 0001-01-01 is a Monday, 9999-12-31 a Friday: inside a whole-day business day in UTC.
    assert reported([MIN_MS, MAX_MS], ALL_DAY) == [False, False]
    assert reported([MIN_MS, MAX_MS], {bh.TIMEZONE: "+00:00", **ALL_DAY}) == [False, False]


def test_after_2037_a_zone_with_summer_time_is_not_judged():
    """pyarrow loses summer time after its zone file's table (2037): such times are reported in
    a zone that still changes its clocks; a zone that does not is judged to year 9999."""
    wed_2037 = ms(2037, 7, 15, 10)  # 12:00 CEST, 19:00 JST
    wed_2040 = ms(2040, 7, 18, 10)
    assert bh.parse_zone("Europe/Berlin").until_ms == ms(2038, 1, 1) - 1
    assert reported([wed_2037, wed_2040], {bh.TIMEZONE: "Europe/Berlin"}) == [False, True]
    assert bh.parse_zone("Asia/Tokyo").until_ms == MAX_MS
    assert reported([wed_2037, wed_2040], {bh.TIMEZONE: "Asia/Tokyo"}) == [False, False]
    assert reported([wed_2040], {bh.TIMEZONE: "+02:00"}) == [False]


def test_a_zone_pyarrow_reads_wrongly_before_2038_is_refused(monkeypatch):
    # As if the zone file had no table (a "slim" file): pyarrow and zoneinfo then disagree now.
    real = _hours.ZoneInfo
    monkeypatch.setattr(_hours, "ZoneInfo", lambda name: real("Asia/Tokyo"))
    with pytest.raises(ValueError, match=r"pyarrow's local time at .* use a fixed offset"):
        bh.parse_zone("Europe/Berlin")


def test_other_integer_types_and_a_null_column():
    wed = (2026, 11, 18)
    seconds = [ms(*wed, 9) // 1000, ms(*wed, 21) // 1000]
    # A time that fits int32 is 1970; still judged as epoch ms.
    assert reported([0, 12 * 3_600_000], typ=pa.int32()) == [True, False]
    assert reported([s * 1000 for s in seconds], typ=pa.uint64()) == [False, True]
    assert reported([None, None], typ=pa.null()) == [True, True]


def test_empty_rows():
    assert reported([]) == []


def test_exceptions_silence_only_their_principals():
    night = ms(2026, 11, 18, 23, 30)
    options = {bh.EXCEPTIONS: f"{CI_ROLE}, arn:aws:iam::{ACCOUNT}:user/night-*"}
    users = [CI_SESSION, CONTRACTOR, f"arn:aws:iam::{ACCOUNT}:user/night-builder", CI_SESSION]
    issuers = [CI_ROLE, None, None, CI_ROLE]
    times = [night, night, night, ms(2026, 11, 18, 10)]
    assert reported(times, options, users=users, issuers=issuers) == [False, True, False, False]


def test_the_shared_allowlist_is_not_used():
    night = ms(2026, 11, 18, 23, 30)
    assert reported([night], allowlist=Allowlist.of([CI_ROLE])) == [True]


def test_options_read_with_blanks_and_defaults():
    one = active({bh.TIMEZONE: "  Asia/Tokyo ", bh.START: " 9:05", bh.END: "", bh.EXCEPTIONS: " "})
    assert one.options[bh.TIMEZONE] == bh.Zone("Asia/Tokyo", None)
    assert (one.options[bh.START], one.options[bh.END]) == (9 * 60 + 5, 20 * 60)
    assert one.options[bh.EXCEPTIONS].empty
    assert active({bh.TIMEZONE: "-03:30"}).options[bh.TIMEZONE].offset_ms == -210 * 60_000


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        (bh.TIMEZONE, "Nope/Zone", "unknown time zone 'Nope/Zone'"),
        (bh.TIMEZONE, "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        (bh.TIMEZONE, "../../etc/passwd", "is not a time zone"),
        (bh.TIMEZONE, "/etc/localtime", "is not a time zone"),
        (bh.TIMEZONE, "localtime", "is not a time zone"),
        (bh.TIMEZONE, "utc+2", "unknown time zone 'utc+2'"),
        (bh.TIMEZONE, "Factory", "unknown time zone 'Factory'"),
        (bh.TIMEZONE, "Europe/Berlin'--", "is not a time zone"),
        (bh.TIMEZONE, "+25:00", "not between -18:00 and +18:00"),
        (bh.TIMEZONE, "+05:60", "not between -18:00 and +18:00"),
        (bh.TIMEZONE, "+5:30", "is not a time zone"),
        (bh.START, "8am", "not a time of day"),
        (bh.START, "24:01", "not a time of day"),
        (bh.START, "12:60", "not a time of day"),
        (bh.START, "08:00:00", "not a time of day"),
        (bh.END, "\u0660\u0668:\u0660\u0660", "not a time of day"),  # Arabic-Indic digits
        (bh.EXCEPTIONS, "*", "would trust principals of any account"),
        (bh.EXCEPTIONS, f"{CI_ROLE}, arn:aws:iam::*:role/x", "any account"),
        (bh.EXCEPTIONS, "ci-deployer", "is not an ARN"),
    ],
)
def test_bad_options_are_refused_naming_the_variable(env, value, message):
    with pytest.raises(ConfigError) as err:
        active({env: value})
    text = str(err.value)
    assert text.startswith(f"{env} ({SLUG}): ")
    assert message in text


@pytest.mark.parametrize(("start", "end"), [("20:00", "08:00"), ("08:00", "08:00")])
def test_start_not_before_end_is_refused(start, end):
    # At activation (the Lambda's cold start, the CLI's usage check), naming the variables.
    with pytest.raises(ConfigError, match=r"BUSINESS_HOURS_START.*must be before"):
        active({bh.START: start, bh.END: end})
    # And by the predicates themselves, should options reach them unchecked.
    options = dict(active().options)
    options[bh.START] = bh.parse_clock(start)
    options[bh.END] = bh.parse_clock(end)
    one = Active(bh.DETECTION, options)
    with pytest.raises(ValueError, match="must be before"):
        bh.check_options(one.options)
    ctx = one.context(Allowlist(()))
    with pytest.raises(ValueError, match="must be before"):
        one.detection.predicate({"time_ms": pa.array([0], pa.int64())}, ctx)
    with pytest.raises(ValueError, match="must be before"):
        one.detection.sql_predicate(SQL_COLS, ctx)


def test_a_context_without_options_uses_the_defaults():
    ctx = Context(Allowlist(()))
    rows = {"time_ms": pa.array([ms(2026, 11, 18, 7, 59), ms(2026, 11, 18, 8)], pa.int64())}
    assert bh.predicate(rows, ctx).to_pylist() == [True, False]


# --- the SQL predicate on DuckDB ------------------------------------------------------------

SQL_COLS = {
    "time_ms": '"time_ms"',
    "user": '"user"',
    "session_issuer": '"session_issuer"',
    "invoked_by": '"invoked_by"',
    "src_domain": '"src_domain"',
}


def duck() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE MACRO from_unixtime(s, z) AS timezone(z, to_timestamp(s))")
    con.execute("CREATE MACRO day_of_week(t) AS isodow(t)")
    return con


def random_times(seed: int, n: int = 5000) -> list[int | None]:
    """Times of every kind: near the boundaries of business minutes, anywhere in the years
    1..9999, before 1970, out of range, the int64 extremes, null."""
    rng = random.Random(seed)
    out: list[int | None] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.45:  # a whole minute (or a millisecond before one) in 2020..2030
            t = rng.randrange(ms(2020, 1, 1), ms(2030, 1, 1)) // 60_000 * 60_000
            out.append(t - rng.choice((0, 0, 1)))
        elif kind < 0.75:
            out.append(rng.randrange(ms(1900, 1, 1), ms(2100, 1, 1)))
        elif kind < 0.9:
            out.append(rng.randrange(MIN_MS, MAX_MS + 1))
        elif kind < 0.97:
            out.append(
                rng.choice((INT64_MIN, INT64_MAX, MIN_MS - 1, MAX_MS + 1, -1, 0))
                if rng.random() < 0.5
                else rng.randrange(INT64_MIN, INT64_MAX)
            )
        else:
            out.append(None)
    return out


def sql_and_arrow(options: Mapping[str, str], seed: int) -> tuple[list[Any], list[bool]]:
    one = active(options)
    times = random_times(seed)
    rng = random.Random(seed + 1)
    n = len(times)
    principals = [
        (CI_SESSION, CI_ROLE),
        (CONTRACTOR, None),
        (f"arn:aws:iam::{ACCOUNT}:user/o'brien", None),
        (None, None),
    ]
    picked = [rng.choice(principals) for _ in range(n)]
    table = pa.table(
        {
            "i": pa.array(range(n), pa.int64()),
            "time_ms": pa.array(times, pa.int64()),
            "user": pa.array([p[0] for p in picked], pa.string()),
            "session_issuer": pa.array([p[1] for p in picked], pa.string()),
            "invoked_by": pa.nulls(n, pa.string()),
            "src_domain": pa.nulls(n, pa.string()),
        }
    )
    ctx = one.context(Allowlist(()))
    arrow = one.detection.predicate({c: table.column(c).combine_chunks() for c in SQL_COLS}, ctx)
    condition = one.detection.sql_predicate(SQL_COLS, ctx)
    assert condition is not None
    con = duck()
    con.register("calls", table)
    sql = f"SELECT i, {condition} AS reported FROM calls ORDER BY i"
    got = [r[1] for r in con.execute(sql).fetchall()]
    return got, arrow.to_pylist()


ZONES = [
    {},
    {bh.TIMEZONE: "+05:30"},
    {bh.TIMEZONE: "-09:30", bh.START: "07:45", bh.END: "18:10"},
    {bh.TIMEZONE: "+14:00", **ALL_DAY},
    {
        bh.TIMEZONE: "UTC",
        bh.EXCEPTIONS: f"{CI_ROLE}\n# comment\narn:aws:iam::{ACCOUNT}:user/o'brien",
    },
    {bh.TIMEZONE: "Europe/Berlin"},
    {bh.TIMEZONE: "America/New_York", bh.START: "09:30", bh.END: "17:15"},
    {bh.TIMEZONE: "Asia/Kolkata", bh.EXCEPTIONS: CI_ROLE},
]


@pytest.mark.parametrize("options", ZONES, ids=lambda o: ",".join(o.values())[:40] or "defaults")
def test_sql_on_duckdb_equals_arrow(options):
    got, want = sql_and_arrow(options, seed=len(ZONES) + ZONES.index(options))
    assert None not in got
    mismatches = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not mismatches, mismatches[:10]
    # Both outcomes occur, so the comparison means something.
    assert True in want and False in want


def test_sql_literal_zone_and_no_catch_all():
    one = active({bh.TIMEZONE: "America/Argentina/Buenos_Aires"})
    sql = one.detection.sql_predicate(SQL_COLS, one.context(Allowlist(())))
    assert sql is not None
    assert "from_unixtime((CASE WHEN" in sql and "'America/Argentina/Buenos_Aires'" in sql
    assert sql.startswith("coalesce(NOT (")
    # No exceptions: no trust test at all.
    assert "NOT (" in sql and '"user"' not in sql
