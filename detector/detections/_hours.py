"""Time arithmetic for business hours: time zones (UTC, fixed offsets, IANA names pyarrow and
``zoneinfo`` agree on, and until when), clock times, the time of the week at a fixed offset in
integer milliseconds, and local time as the email shows it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
# Epoch ms of 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the times judged at all.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999
# 1970-01-01 was a Thursday: three days after the Monday a week is counted from here.
_THURSDAY = 3 * DAY_MS

_OFFSET = re.compile(r"([+-])([0-9]{2}):([0-9]{2})")
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")
# An IANA name (Europe/Berlin, America/Argentina/Buenos_Aires, Etc/GMT+5, EST5EDT): letters
# first, no dots, so a name can never become a path outside the time zone database.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,30}(?:/[A-Za-z0-9_+-]{1,30}){0,2}")
# Names that mean the machine's own zone: the Lambda's and Athena's would differ.
_MACHINE_ZONES = frozenset({"localtime", "posixrules"})
_ZONEINFO = Path("/usr/share/zoneinfo")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_Y2038 = 2_145_916_800_000  # 2038-01-01T00:00:00Z
# pyarrow is checked against zoneinfo weekly (at a time of day that moves) over 1900..2099.
_PROBE_FROM = -2_208_988_800_000  # 1900-01-01T00:00:00Z
_PROBE_TO = 4_102_444_800_000  # 2100-01-01T00:00:00Z
_PROBE_STEP = 7 * DAY_MS + 61 * 60_000


@dataclass(frozen=True)
class Zone:
    """A time zone: an IANA name (``offset_ms`` None) or a fixed offset from UTC.

    ``until_ms`` is the last time judged in it (later ones are reported): the end of year 9999,
    or of 2037 for a named zone whose clock changes pyarrow cannot follow past its zone file's
    table of transitions (see ``_judged_until``).
    """

    name: str
    offset_ms: int | None
    until_ms: int = MAX_MS


def parse_zone(text: str) -> Zone:
    """``UTC``, a fixed offset ``+05:30`` / ``-03:00``, or an IANA name pyarrow can use here."""
    name = text.strip()
    if name == "UTC":
        return Zone("UTC", 0)
    fixed = _OFFSET.fullmatch(name)
    if fixed:
        sign, hours, minutes = fixed.group(1), int(fixed.group(2)), int(fixed.group(3))
        if minutes > 59 or hours * 60 + minutes > 18 * 60:
            raise ValueError(f"offset {name!r} is not between -18:00 and +18:00")
        offset = (hours * 60 + minutes) * 60_000
        return Zone(name, -offset if sign == "-" else offset)
    if not _ZONE_NAME.fullmatch(name) or name in _MACHINE_ZONES:
        raise ValueError(
            f"{name[:80]!r} is not a time zone: use UTC, an IANA name such as Europe/Berlin, or "
            "a fixed offset such as +05:30"
        )
    try:
        # What the predicate does with it: an unusable zone fails here, not in a scan.
        probe = pa.array([0, MIN_MS, MAX_MS], pa.int64()).cast(pa.timestamp("ms", tz=name))
        pc.hour(probe)
        pc.day_of_week(probe)
    except (pa.ArrowException, ValueError) as exc:
        where = (
            f"the time zone database ({_ZONEINFO})"
            if _ZONEINFO.is_dir()
            else f"a time zone database: this system has none ({_ZONEINFO} is missing), so "
            "only UTC and fixed offsets such as +05:30 can be used"
        )
        raise ValueError(f"unknown time zone {name!r}: not in {where}") from exc
    return Zone(name, None, _judged_until(name))


def _judged_until(name: str) -> int:
    """The last time pyarrow converts correctly into zone ``name``, checked against Python's
    ``zoneinfo`` (which applies the rule a zone file states for the years after its table).

    pyarrow reads only the table of a zone file (apache/arrow#36110): past it, usually after
    2037, it keeps the last offset, so a zone that still changes its clocks loses summer time.
    Those later times are then reported, in SQL too, rather than judged an hour off. A zone
    pyarrow gets wrong before 2038 (a "slim" zone file, without the table) is refused.
    """
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}: Python's zoneinfo has no such zone") from exc
    probes = list(range(_PROBE_FROM, _PROBE_TO, _PROBE_STEP))
    local = pa.array(probes, pa.int64()).cast(pa.timestamp("ms", tz=name))
    fields = [f(local).to_pylist() for f in (pc.year, pc.month, pc.day, pc.hour, pc.minute)]
    for t, *got in zip(probes, *fields, strict=True):
        want = (_EPOCH + timedelta(milliseconds=t)).astimezone(zone)
        if got != [want.year, want.month, want.day, want.hour, want.minute]:
            if t < _Y2038:
                raise ValueError(
                    f"time zone {name!r}: pyarrow's local time at {want.isoformat()} is "
                    f"{got[3]:02d}:{got[4]:02d}, not {want.hour:02d}:{want.minute:02d} (a zone "
                    f"file without its table of transitions?); use a fixed offset such as +05:30"
                )
            return _Y2038 - 1
    return MAX_MS


def parse_clock(text: str) -> int:
    """``HH:MM`` -> minutes after midnight; ``24:00`` is the end of the day."""
    clock = _CLOCK.fullmatch(text.strip())
    if clock:
        hours, minutes = int(clock.group(1)), int(clock.group(2))
        if (hours < 24 and minutes < 60) or (hours, minutes) == (24, 0):
            return hours * 60 + minutes
    raise ValueError(f"{text.strip()[:80]!r} is not a time of day HH:MM (00:00 to 24:00)")


def _mod(values: pa.Array, divisor: int) -> pa.Array:
    """``values % divisor`` as Trino and DuckDB compute it: the sign of ``values`` (int64
    ``divide`` truncates toward zero; ``q * divisor`` never exceeds ``values`` in size)."""
    return pc.subtract(values, pc.multiply(pc.divide(values, divisor), divisor))


def _week_ms(t: pa.Array, offset_ms: int) -> pa.Array:
    """Milliseconds since local Monday 00:00 of epoch ms ``t`` at a fixed offset, for every
    int64 (no overflow: ``t % week`` is first brought into one week)."""
    shift = WEEK_MS + (_THURSDAY + offset_ms) % WEEK_MS
    return _mod(pc.add(_mod(t, WEEK_MS), shift), WEEK_MS)


def _local(ms: int | None, zone: Zone) -> str:
    """``ms`` as local time in ``zone``: ``Sat 2026-11-21 07:30 (+01:00)``."""
    if ms is None:
        return "(time not recorded)"
    try:
        when = datetime.fromtimestamp(ms / 1000, tz=UTC)
        if zone.offset_ms is not None:
            local = when.astimezone(timezone(timedelta(milliseconds=zone.offset_ms)))
        else:
            local = when.astimezone(ZoneInfo(zone.name))
    except (ValueError, OverflowError, OSError, KeyError):
        return "(out of range)"
    offset = local.strftime("%z")
    return f"{local.strftime('%a %Y-%m-%d %H:%M')} ({offset[:3]}:{offset[3:]})"
