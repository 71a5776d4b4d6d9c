"""ASL AWS Concurrent Sessions From Different Ips (ESCU b3424bbe, version 13, Anomaly).

ESCU takes ``DescribeEventAggregates`` calls (the AWS Health call the console makes on every
page load, so it marks a console session) whose source domain is not ``AWS Internal``, cuts
time into fixed five-minute bins and reports a user seen from more than one source IP within
a bin. Ported as a ``Threshold`` on the distinct count of ``src_ip`` (at least 2), per bucket.

Deviation: in Splunk, ``src_endpoint.domain!="AWS Internal"`` also drops every event without
a source domain, which is every console call from an IP address: the search as written can
hardly fire. The evident intent is to leave out AWS's own calls, so a missing domain is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import Context, Example, Threshold
from detector.detections import _escu

OPERATION = "DescribeEventAggregates"
SERVICE = "health.amazonaws.com"
MINUTE_MS = 60_000
CONSOLE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)


def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    return pc.fill_null(pc.not_equal(rows["src_domain"], "AWS Internal"), True)


def sql_predicate(cols: Mapping[str, str], ctx: Context) -> str | None:
    return f"coalesce({cols['src_domain']} <> 'AWS Internal', true)"


def _console(ip: str, minute: int = 0) -> dict[str, object]:
    return _escu.call(
        OPERATION,
        SERVICE,
        **_escu.user("alice"),
        user_agent=CONSOLE,
        src_ip=ip,
        time_ms=_escu.T0_MS + minute * MINUTE_MS,
    )


REQUEST = {"aggregateField": "eventTypeCategory", "filter": {"eventStatusCodes": ["open"]}}

DETECTION = _escu.detection(
    id="b3424bbe-3204-4469-887b-ec144483a336",
    slug="concurrent-sessions-from-different-ips",
    name="ASL AWS Concurrent Sessions From Different Ips",
    version=13,
    escu_type="Anomaly",
    mitre={"T1185": "Browser Session Hijacking"},
    description=(
        "One user's console was in use from two or more IP addresses within the same five "
        "minutes: a stolen session cookie or shared credentials."
    ),
    analytic_story=(
        "Compromised User Account",
        "AWS Identity and Access Management Account Takeover",
    ),
    operations=(OPERATION,),
    service=SERVICE,
    message=(
        "User {user} has concurrent sessions from more than one unique IP address in the span "
        "of 5 minutes."
    ),
    resource=("operation", "", "operation"),
    predicate=predicate,
    sql_predicate=sql_predicate,
    predicate_columns=("src_domain",),
    threshold=Threshold(bucket_seconds=300, minimum=2, distinct="src_ip", label="source IPs"),
    deviations=(
        "Calls without a source domain are kept (Splunk's != drops them, which leaves almost "
        "nothing to count).",
        "In the Lambda the distinct IPs are counted per alert principal (a role's sessions "
        "together), not per caller ARN.",
    ),
    headline="A console session was used from two IP addresses at once",
    verdict="SEEN FROM SEVERAL IPS",
    known_false_positives=(
        "A user on a VPN that changes exit address, or on two networks (laptop and phone)."
    ),
    how_to_respond=(
        "Ask the user whether both addresses are theirs. If not, revoke the user's sessions, "
        "reset their password and MFA, and review the calls made from the unknown address."
    ),
    references=(
        "https://docs.aws.amazon.com/health/latest/APIReference/API_DescribeEventAggregates.html",
    ),
    examples=(
        Example(
            "two addresses within five minutes",
            reported=True,
            event=_console("198.51.100.7", 1),
            request=REQUEST,
            more=({"src_ip": "203.0.113.9", "time_ms": _escu.T0_MS + 3 * MINUTE_MS},),
        ),
        Example(
            "one address all along",
            reported=False,
            event=_console("198.51.100.7", 1),
            request=REQUEST,
            more=({"time_ms": _escu.T0_MS + 3 * MINUTE_MS},),
        ),
        Example(
            "two addresses in different five-minute bins",
            reported=False,
            event=_console("198.51.100.7", 4),
            request=REQUEST,
            more=({"src_ip": "203.0.113.9", "time_ms": _escu.T0_MS + 6 * MINUTE_MS},),
        ),
        Example(
            "AWS's own calls are left out",
            reported=False,
            event=_console("198.51.100.7", 1) | {"src_domain": "AWS Internal"},
            request=REQUEST,
            more=({"src_ip": "203.0.113.9", "time_ms": _escu.T0_MS + 2 * MINUTE_MS},),
        ),
    ),
)
