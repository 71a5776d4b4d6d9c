"""ASL AWS IAM AccessDenied Discovery Events (ESCU a4f39755, version 7, Anomaly).

ESCU reads every call (no operation filter) refused with ``AccessDenied``,
``OperationNotPermittedException`` or an error containing ``Unauthorized``, made by an IAM user,
and reports a user with at least five in a one-hour bucket (its ``dc_operation >= 1`` and
``dc_service >= 1`` always hold). In Splunk's ``search`` OR binds tighter than the implied AND,
so the user-type test applies to all three errors; field values compare without regard to case,
as here. Ported as a ``Threshold`` that watches every operation: the only detection that reads
rows of any operation, judged on two small dictionary-encoded columns.

Not counted, as in ESCU: ``AccessDeniedException`` (the code of KMS, Lambda and other JSON
APIs), which is neither ``AccessDenied`` nor contains ``Unauthorized``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import Context, Example, Threshold
from detector.detections import _escu

ERRORS = ("accessdenied", "operationnotpermittedexception")
MINUTE_MS = 60_000


def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    code = pc.utf8_lower(rows["error_code"])
    denied = pc.or_(
        pc.is_in(code, value_set=pa.array(ERRORS, pa.string())),
        pc.match_substring(code, "unauthorized"),
    )
    return pc.fill_null(pc.and_(denied, pc.equal(rows["user_type"], "IAMUser")), False)


def sql_predicate(cols: Mapping[str, str], ctx: Context) -> str | None:
    code = f"lower({cols['error_code']})"
    listed = ", ".join(f"'{e}'" for e in ERRORS)
    return (
        f"coalesce(({code} IN ({listed}) OR {code} LIKE '%unauthorized%') "
        f"AND {cols['user_type']} = 'IAMUser', false)"
    )


def _denied(operation: str, service: str, minute: int, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        **_escu.user("intern"),
        "status": "Failure",
        "error_code": "AccessDenied",
        "time_ms": _escu.T0_MS + minute * MINUTE_MS,
    }
    return _escu.call(operation, service, **(base | fields))


_PROBES = (
    ("ListRoles", "iam.amazonaws.com"),
    ("GetAccountAuthorizationDetails", "iam.amazonaws.com"),
    ("DescribeInstances", "ec2.amazonaws.com"),
    ("ListSecrets", "secretsmanager.amazonaws.com"),
)


def _more(code: str = "AccessDenied") -> tuple[dict[str, object], ...]:
    return tuple(
        {"operation": op, "service": svc, "time_ms": _escu.T0_MS + (i + 1) * MINUTE_MS}
        | {"error_code": code}
        for i, (op, svc) in enumerate(_PROBES)
    )


DETECTION = _escu.detection(
    id="a4f39755-b1e2-40bb-b2dc-4449c45b0bf2",
    slug="iam-accessdenied-discovery-events",
    name="ASL AWS IAM AccessDenied Discovery Events",
    version=7,
    escu_type="Anomaly",
    mitre={"T1580": "Cloud Infrastructure Discovery"},
    description=(
        "An IAM user was refused at least five calls within one hour (AccessDenied, "
        "OperationNotPermittedException or an Unauthorized error): stolen keys being tried "
        "against services to learn what they may do."
    ),
    analytic_story=("Suspicious Cloud User Activities",),
    operations=(),
    service="*",
    message="User {user} is seen to perform excessive number of discovery related api calls",
    resource=("operation", "", "operation"),
    predicate=predicate,
    sql_predicate=sql_predicate,
    predicate_columns=("error_code", "user_type"),
    threshold=Threshold(bucket_seconds=3600, minimum=5, label="refused calls"),
    deviations=(
        "In the Lambda the count is per alert principal, not per caller ARN (the same for an "
        "IAM user).",
    ),
    headline="An IAM user was refused many calls: its keys may be probed",
    verdict="REFUSED",
    known_false_positives="A new script or tool run by a user without the permissions it needs.",
    how_to_respond=(
        "Ask the user's owner whether they ran something that was refused. If not, disable the "
        "access key the calls were signed with, and check for any call by the key that "
        "succeeded."
    ),
    references=(
        "https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html",
    ),
    examples=(
        Example(
            "five refused calls to four services within the hour",
            reported=True,
            event=_denied("ListUsers", "iam.amazonaws.com", 0),
            request={"maxItems": 100},
            more=_more(),
        ),
        Example(
            "EC2's UnauthorizedOperation counts too",
            reported=True,
            event=_denied(
                "DescribeVolumes", "ec2.amazonaws.com", 0, error_code="Client.UnauthorizedOperation"
            ),
            request={},
            more=_more("Client.UnauthorizedOperation"),
        ),
        Example(
            "four refusals are below the threshold",
            reported=False,
            event=_denied("ListUsers", "iam.amazonaws.com", 0),
            request={"maxItems": 100},
            more=_more()[:3],
        ),
        Example(
            "five refusals of an assumed role are not an IAM user's",
            reported=False,
            event=_escu.call(
                "ListUsers",
                "iam.amazonaws.com",
                status="Failure",
                error_code="AccessDenied",
            ),
            request={"maxItems": 100},
            more=_more(),
        ),
        Example(
            "AccessDeniedException is not one of ESCU's codes",
            reported=False,
            event=_denied("Decrypt", "kms.amazonaws.com", 0, error_code="AccessDeniedException"),
            request={},
            more=_more("AccessDeniedException"),
        ),
    ),
)
