"""ASL AWS ECR Container Upload Outside Business Hours (Splunk ESCU, version 4, 2024-09-30).

The id is the one ESCU publishes; the version and date are assumed to match the ESCU release
the unknown-user port is taken from (version 4, 2024-09-30).

``PutImage`` calls made outside business hours: ESCU reports an event whose hour is 20 or later
or before 8, or that falls on a Saturday or Sunday. Here the hours and the time zone are options
(``BUSINESS_HOURS_START``, ``BUSINESS_HOURS_END``, ``BUSINESS_HOURS_TIMEZONE``; defaults 08:00,
20:00 and UTC, ESCU's rule) and minutes count: with the defaults 07:59:59 and 20:00:00 are
outside, 08:00:00 and 19:59:59.999 inside. A call is inside business hours when its local time
is Monday to Friday, at or after the start and before the end; every other call is reported.

A call whose time is missing, or lies outside the years 1 to 9999 (UTC), cannot be shown to be
inside business hours: it is reported. So is, in a named zone that still changes its clocks, a
time after 2037, where pyarrow no longer applies summer time (``_hours._judged_until``; the SQL
does the same, so ``scan`` and Athena agree). Event times are written by whoever writes the
object, so nothing here runs Python per row or per distinct time, and no time value can raise.

A named zone is read from the system's time zone database (/usr/share/zoneinfo) by pyarrow and
checked against Python's ``zoneinfo`` when the option is parsed; a zone that cannot be used
fails then, not in a scan. Athena converts with its own (Java) zone rules.

ESCU's search has no allowlist, and neither has this detection: the shared allowlist
(``ALLOWLIST_PARAMETER``) is not consulted. Principals expected to push at night (scheduled
builds) go in ``BUSINESS_HOURS_EXCEPTIONS``, under the allowlist's entry rules and matching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.allowlist import Allowlist
from detector.core.errors import AllowlistInvalid
from detector.core.spec import Context, Detection, Example, Option, Step
from detector.core.sqlparts import literal, trusted_sql
from detector.detections import _ecr, _principal
from detector.detections._hours import (
    _THURSDAY,
    DAY_MS,
    MIN_MS,
    WEEK_MS,
    Zone,
    _local,
    _mod,
    _week_ms,
    parse_clock,
    parse_zone,
)

TIMEZONE = "BUSINESS_HOURS_TIMEZONE"
START = "BUSINESS_HOURS_START"
END = "BUSINESS_HOURS_END"
EXCEPTIONS = "BUSINESS_HOURS_EXCEPTIONS"


def parse_exceptions(text: str) -> Allowlist:
    try:
        return Allowlist.parse(text, source=EXCEPTIONS)
    except AllowlistInvalid as exc:
        raise ValueError(exc.reason) from None


@dataclass(frozen=True)
class Hours:
    zone: Zone
    start: int  # minutes after local midnight, inclusive
    end: int  # exclusive
    exceptions: Allowlist


def hours(options: Mapping[str, Any]) -> Hours:
    """The business hours of parsed ``options`` (defaults for any not given).

    Raises ``ValueError`` when the start is not before the end: each option is parsed on its
    own, so this is where the two meet.
    """
    zone = options.get(TIMEZONE) or _DEFAULTS[TIMEZONE]
    start = options.get(START, _DEFAULTS[START])
    end = options.get(END, _DEFAULTS[END])
    exceptions = options.get(EXCEPTIONS) or _DEFAULTS[EXCEPTIONS]
    if start >= end:
        raise ValueError(
            f"{START} ({start // 60:02d}:{start % 60:02d}) must be before "
            f"{END} ({end // 60:02d}:{end % 60:02d})"
        )
    return Hours(zone, start, end, exceptions)


def check_options(options: Mapping[str, Any]) -> None:
    """Checks of the options together (start before end), for a caller that parses options."""
    hours(options)


def _inside_fixed(t: pa.Array, h: Hours, offset_ms: int) -> pa.Array:
    week = _week_ms(t, offset_ms)
    day = _mod(week, DAY_MS)
    return pc.and_(
        pc.less(week, 5 * DAY_MS),
        pc.and_(
            pc.greater_equal(day, h.start * 60_000),
            pc.less(day, h.end * 60_000),
        ),
    )


def _inside_named(t: pa.Array, h: Hours) -> pa.Array:
    local = t.cast(pa.timestamp("ms", tz=h.zone.name))
    minute = pc.add(pc.multiply(pc.hour(local), 60), pc.minute(local))
    return pc.and_(
        pc.less(pc.day_of_week(local), 5),  # Monday is 0
        pc.and_(pc.greater_equal(minute, h.start), pc.less(minute, h.end)),
    )


def outside(time_ms: pa.Array, h: Hours) -> pa.Array:
    """True where the time is not shown to be inside business hours (never null)."""
    n = len(time_ms)
    if pa.types.is_null(time_ms.type):
        return pa.array([True] * n, pa.bool_()) if n < 1024 else pa.repeat(True, n)
    t = time_ms.cast(pa.int64())
    in_range = pc.and_(pc.greater_equal(t, MIN_MS), pc.less_equal(t, h.zone.until_ms))
    # Out-of-range times become null before any arithmetic or zone conversion sees them.
    t = pc.if_else(in_range, t, pa.scalar(None, pa.int64()))
    offset = h.zone.offset_ms
    inside = _inside_named(t, h) if offset is None else _inside_fixed(t, h, offset)
    return pc.fill_null(pc.invert(inside), True)


def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    h = hours(ctx.options)
    reported = outside(rows["time_ms"], h)
    if h.exceptions.empty:
        return reported
    return pc.and_(reported, pc.invert(_ecr.trusted(rows, h.exceptions)))


def _sql_inside(t: str, h: Hours) -> str:
    """SQL true where epoch ms ``t`` (known in range) is inside business hours."""
    start, end = h.start, h.end
    if h.zone.offset_ms is not None:
        shift = WEEK_MS + (_THURSDAY + h.zone.offset_ms) % WEEK_MS
        # Only % on non-negative bigints (or on t, where Trino and DuckDB agree on the sign).
        week = f"((({t}) % {WEEK_MS} + {shift}) % {WEEK_MS})"
        return (
            f"{week} < {5 * DAY_MS} AND ({week} % {DAY_MS} "
            f"BETWEEN {start * 60_000} AND {end * 60_000 - 1})"
        )
    local = f"from_unixtime(({t}) / 1000e0, {literal(h.zone.name)})"
    # Trino: day_of_week 1 = Monday.
    return (
        f"day_of_week({local}) <= 5 AND (hour({local}) * 60 + minute({local}) "
        f"BETWEEN {start} AND {end - 1})"
    )


def sql_predicate(cols: Mapping[str, str], ctx: Context) -> str | None:
    h = hours(ctx.options)
    col = cols["time_ms"]
    # Out-of-range times become null before any function sees them: no row can fail a query.
    t = f"CASE WHEN {col} BETWEEN {MIN_MS} AND {h.zone.until_ms} THEN {col} END"
    reported = f"coalesce(NOT ({_sql_inside(t, h)}), true)"
    trusted = trusted_sql([cols[c] for c in _ecr.IDENTITY], h.exceptions)
    return reported if trusted is None else f"{reported} AND NOT {trusted}"


# Pushes whose local time the email shows, at the most (the busiest groups first).
REASON_TIMES = 5


def reason(alert: Any, options: Mapping[str, Any]) -> list[str]:
    """The window, its zone, and each push's local time: why the alert fired."""
    h = hours(options)
    window = f"{h.start // 60:02d}:{h.start % 60:02d}-{h.end // 60:02d}:{h.end % 60:02d}"
    lines = [f"Business hours: Monday to Friday {window}, {h.zone.name}. Local times:"]
    for f in alert.ordered()[:REASON_TIMES]:
        first, last = _local(f.first_ms, h.zone), _local(f.last_ms, h.zone)
        span = first if first == last else f"{first} to {last}"
        lines.append(f"  {span}: {f.count} call(s)")
    if alert.groups > REASON_TIMES:
        lines.append(f"  (and {alert.groups - REASON_TIMES} more group(s) of calls)")
    return lines


def check_next(alert: Any, region: str, window: tuple[str, str] | None) -> list[Step]:
    return [
        *_ecr.images_steps(alert, region, window),
        *_principal.steps(alert),
        _ecr.entry_step(
            alert, f"If pushing at that hour is expected, add it to {EXCEPTIONS} (see end):"
        ),
    ]


def trust_steps(context: Mapping[str, str]) -> list[Step]:
    return [
        Step(
            f"Principals expected to push outside business hours (scheduled night builds, teams "
            f"in other time zones) go in the function's {EXCEPTIONS} environment variable: "
            "template parameter BusinessHoursExceptions, or --option "
            f"{EXCEPTIONS}=... for scan. It is a comma-separated list of ARNs with their "
            "account, under the same rules as the allowlist; a role ARN covers all its sessions.",
            notes=(
                "(the shared allowlist is not consulted by this detection; the hours and time "
                f"zone are {START}, {END} and {TIMEZONE})",
            ),
        )
    ]


def _ms(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> int:
    """Epoch ms of a UTC date and time (for the examples)."""
    when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


_DEFAULTS: dict[str, Any] = {
    TIMEZONE: parse_zone("UTC"),
    START: parse_clock("08:00"),
    END: parse_clock("20:00"),
    EXCEPTIONS: Allowlist((), EXCEPTIONS),
}

ARN = "arn:aws:iam::111122223333"
NIGHT = _ms(2026, 11, 18, 23, 30)  # a Wednesday
DETECTION = Detection(
    id="739ed682-27e9-4ba0-80e5-a91b97698213",
    slug="ecr-upload-outside-business-hours",
    name="ASL AWS ECR Container Upload Outside Business Hours",
    version=4,
    date="2024-09-30",
    author="Patrick Bareiss, Splunk (detection); this project (port)",
    description=(
        "A container image was pushed to Amazon ECR (PutImage) at night or on a weekend, in "
        "the configured business-hours time zone. Releases are normally pushed by people and "
        "pipelines at work; a push at an unusual hour can be an intruder using stolen "
        "credentials while nobody watches, planting an image that workloads will pull and run."
    ),
    mitre_attack_ids=_ecr.MITRE_IDS,
    mitre_names=_ecr.MITRE_NAMES,
    analytic_story=("Dev Sec Ops",),
    confidence=70,
    impact=70,
    # Splunk bands risk 41-60 as medium.
    severity="medium",
    message_template="Container uploaded outside business hours from {user}",
    references=(
        _ecr.MITRE_URL,
        "https://research.splunk.com/cloud/739ed682-27e9-4ba0-80e5-a91b97698213/",
        _ecr.CLOUDTRAIL_URL,
    ),
    observables=_ecr.OBSERVABLES,
    known_false_positives=(
        "When your development is spread in different time zones, applying this rule can be "
        "difficult. Scheduled night builds push at night by design: add their principals to "
        f"{EXCEPTIONS}."
    ),
    how_to_respond=(
        "Ask the owner of the principal whether a push at that hour was planned (an on-call "
        "fix, a release in another time zone, a scheduled build). If nobody expected it: treat "
        "the credentials as compromised, inspect the pushed image digest and tags, hold "
        "deployments from the repository, revoke the principal's sessions and keys, and review "
        "everything else done from the source IP. If it was expected and will recur, add the "
        f"principal to {EXCEPTIONS} or adjust the business hours."
    ),
    operations=(_ecr.OPERATION,),
    predicate_columns=("time_ms", *_ecr.IDENTITY),
    predicate=predicate,
    sql_predicate=sql_predicate,
    request_fields=_ecr.REQUEST_FIELDS,
    samples=_ecr.SAMPLES,
    extra_samples=_ecr.EXTRA_SAMPLES,
    escalate_on=_ecr.ESCALATE_ON,
    shape="time",
    deviations=(
        "The business hours and their time zone are options (default 08:00-20:00 UTC, ESCU's "
        "hours); ESCU renders the hour in the search head's zone.",
        "Weekends are outside business hours: ESCU compares the weekday with unquoted Saturday "
        "and Sunday, which eval reads as field names, so its weekend test probably never holds.",
        "Principals expected to push at night can be listed (BUSINESS_HOURS_EXCEPTIONS); ESCU "
        "has no such list.",
    ),
    new_value_reason=_ecr.NEW_VALUE_REASON,
    metric="PutImageOutsideBusinessHours",
    uses_allowlist=False,
    check_options=check_options,
    options=(
        Option(
            TIMEZONE,
            "UTC",
            "Time zone of business hours: UTC, an IANA name (Europe/Berlin) or a fixed offset "
            "(+05:30).",
            parse_zone,
        ),
        Option(
            START,
            "08:00",
            "Start of business hours, HH:MM local time (a push at this minute is inside).",
            parse_clock,
        ),
        Option(
            END,
            "20:00",
            "End of business hours, HH:MM local time (a push at this minute is outside); after "
            f"{START}.",
            parse_clock,
        ),
        Option(
            EXCEPTIONS,
            "",
            "Principals expected to push outside business hours: ARNs with their account, "
            "comma-separated, under the allowlist's rules. Empty: none.",
            parse_exceptions,
        ),
    ),
    email=_ecr.email(
        reason=reason,
        headline="ECR image push outside business hours",
        subject="ECR push outside business hours: ",
        summary=(
            "{calls} PutImage call(s) by {principals} principal(s) outside business hours; "
            "{succeeded} succeeded."
        ),
        check_next=check_next,
        trust_title="How to except a principal that pushes at night",
        trust_steps=trust_steps,
        none_found="No findings: no PutImage outside business hours (or none was seen).",
        found="{findings} finding(s), {calls} PutImage call(s) outside business hours.",
    ),
    asff=_ecr.asff(
        "{count} PutImage call(s) ({succeeded} succeeded, {failed} failed) by {who} outside "
        "business hours."
    ),
    examples=(
        Example(
            "a push at noon on a Saturday",
            reported=True,
            event={"time_ms": _ms(2026, 11, 21, 12, 0)},
            request=_ecr.request("payments/api", "latest"),
        ),
        Example(
            "a push at 21:00 UTC on a Wednesday",
            reported=True,
            event={"time_ms": _ms(2026, 11, 18, 21, 0)},
        ),
        Example(
            "a push at 10:00 UTC on a Wednesday is inside business hours",
            reported=False,
            event={"time_ms": _ms(2026, 11, 18, 10, 0)},
        ),
        Example(
            "a push at 07:59:59 is before business hours start",
            reported=True,
            event={"time_ms": _ms(2026, 11, 18, 7, 59, 59)},
        ),
        Example(
            "a push at 08:00:00 is inside",
            reported=False,
            event={"time_ms": _ms(2026, 11, 18, 8, 0, 0)},
        ),
        Example(
            "10:00 UTC is 19:00 in Tokyo: inside Tokyo's business hours",
            reported=False,
            event={"time_ms": _ms(2026, 11, 18, 10, 0)},
            options={TIMEZONE: "Asia/Tokyo"},
        ),
        Example(
            "12:00 UTC is 21:00 in Tokyo: outside Tokyo's business hours",
            reported=True,
            event={"time_ms": _ms(2026, 11, 18, 12, 0)},
            options={TIMEZONE: "Asia/Tokyo"},
        ),
        Example(
            "15:00 UTC is 20:30 at +05:30: outside",
            reported=True,
            event={"time_ms": _ms(2026, 11, 18, 15, 0)},
            options={TIMEZONE: "+05:30"},
        ),
        Example(
            "a session of an excepted role pushes at night",
            reported=False,
            event={"time_ms": NIGHT},
            options={EXCEPTIONS: f"{ARN}:role/ci-deployer"},
        ),
        Example(
            "a principal that is not excepted pushes at night",
            reported=True,
            event={"arn": f"{ARN}:user/old-contractor", "session_issuer": None, "time_ms": NIGHT},
            options={EXCEPTIONS: f"{ARN}:role/ci-deployer"},
        ),
        Example(
            "the shared allowlist does not silence this detection",
            reported=True,
            event={"time_ms": NIGHT},
            allowlist=(f"{ARN}:role/ci-deployer",),
        ),
        Example(
            "another operation at night is not this detection's",
            reported=False,
            event={"operation": "BatchGetImage", "time_ms": NIGHT},
        ),
    ),
)
