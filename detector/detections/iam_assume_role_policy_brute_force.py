"""ASL AWS IAM Assume Role Policy Brute Force (ESCU 726959fe, version 8, TTP).

ESCU counts ``AssumeRole`` calls refused with ``AccessDenied`` per caller in one-hour buckets
(``bucket _time span=1h``) and reports a caller with at least three in a bucket. Ported as a
``Threshold``: across objects and invocations in the Lambda (the state table keeps each bucket's
count, exactly once per object), per caller ARN in ``scan`` and SQL. Splunk compares field
values without regard to case, so the error code is matched the same way here.

Where the Lambda differs from the search: its key is the alert principal, so the sessions of one
role count together (a caller cannot stay under the threshold by changing its session name).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import Context, Example, Threshold
from detector.detections import _escu

OPERATION = "AssumeRole"
SERVICE = "sts.amazonaws.com"
ROLE = f"{_escu.ARN}:role/admin"
MINUTE_MS = 60_000


def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    return pc.fill_null(pc.equal(pc.utf8_lower(rows["error_code"]), "accessdenied"), False)


def sql_predicate(cols: Mapping[str, str], ctx: Context) -> str | None:
    return f"coalesce(lower({cols['error_code']}) = 'accessdenied', false)"


def _denied(**fields: object) -> dict[str, object]:
    return _escu.call(
        OPERATION,
        SERVICE,
        **_escu.user("scanner"),
        status="Failure",
        error_code="AccessDenied",
        **fields,
    )


REQUEST = {"roleArn": ROLE, "roleSessionName": "probe"}

DETECTION = _escu.detection(
    id="726959fe-316d-445c-a584-fa187d64e295",
    slug="iam-assume-role-policy-brute-force",
    name="ASL AWS IAM Assume Role Policy Brute Force",
    version=8,
    escu_type="TTP",
    mitre={"T1580": "Cloud Infrastructure Discovery", "T1110": "Brute Force"},
    description=(
        "A caller was refused AssumeRole (AccessDenied) at least three times within one hour: "
        "someone is guessing which roles trust them, or probing role names in other accounts."
    ),
    analytic_story=("AWS IAM Privilege Escalation",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has caused multiple failures with errorCode AccessDenied",
    resource=("role_arn", "roleArn", "role"),
    predicate=predicate,
    sql_predicate=sql_predicate,
    predicate_columns=("error_code",),
    threshold=Threshold(bucket_seconds=3600, minimum=3, label="refused AssumeRole calls"),
    deviations=(
        "In the Lambda the count is per alert principal (a role's sessions together), not per "
        "caller ARN; scan and SQL count per caller ARN as ESCU does.",
    ),
    headline="Repeated AssumeRole refusals: role guessing or brute force",
    verdict="ROLE ASSUMED",
    known_false_positives=(
        "A misconfigured trust policy or pipeline retrying an AssumeRole it is not allowed."
    ),
    how_to_respond=(
        "Find who owns the caller and whether it should assume the roles named. If not, treat "
        "the caller's credentials as compromised: disable its keys, and check whether any "
        "AssumeRole by it succeeded (sts lookup-events) and what that session did."
    ),
    references=("https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html",),
    examples=(
        Example(
            "three refusals within the hour",
            reported=True,
            event=_denied(),
            request=REQUEST,
            more=({"time_ms": _escu.T0_MS + MINUTE_MS}, {"time_ms": _escu.T0_MS + 2 * MINUTE_MS}),
        ),
        Example(
            "two refusals are below the threshold",
            reported=False,
            event=_denied(),
            request=REQUEST,
            more=({"time_ms": _escu.T0_MS + MINUTE_MS},),
        ),
        Example(
            "three refusals split over two hours are two buckets below the threshold",
            reported=False,
            event=_denied(time_ms=_escu.T0_MS + 58 * MINUTE_MS),
            request=REQUEST,
            more=(
                {"time_ms": _escu.T0_MS + 59 * MINUTE_MS},
                {"time_ms": _escu.T0_MS + 61 * MINUTE_MS},
            ),
        ),
        Example(
            "three successful AssumeRole calls are not refusals",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("scanner")),
            request=REQUEST,
            more=({"time_ms": _escu.T0_MS + MINUTE_MS}, {"time_ms": _escu.T0_MS + 2 * MINUTE_MS}),
        ),
    ),
)
