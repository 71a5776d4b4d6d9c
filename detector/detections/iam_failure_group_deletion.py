"""ASL AWS IAM Failure Group Deletion (ESCU 8d12f268, version 12, Anomaly).

ESCU: ``api.operation=DeleteGroup status=Failure http_request.user_agent!=*.amazonaws.com``,
grouped by caller: refused attempts to delete an IAM group (access denied, a group that still
has members or policies, a group that does not exist), leaving out the calls AWS services make
on their own behalf (their user agent is a ``*.amazonaws.com`` host name).

Deviation: in Splunk, ``field!=value`` also drops events that have no such field, so ESCU
drops a failed DeleteGroup without a user agent. The evident intent of the test is to leave
out AWS services' own calls, not calls whose agent went unrecorded; here a missing user agent
is reported. The ESCU message speaks of "multiple failures", but its search has no threshold:
ported as searched, one failure is enough.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import Context, Example
from detector.core.sqlparts import literal
from detector.detections import _escu

OPERATION = "DeleteGroup"
SERVICE = "iam.amazonaws.com"
FAILURE = "Failure"
AWS_AGENT_SUFFIX = ".amazonaws.com"


def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    failed = pc.fill_null(pc.equal(rows["status"], FAILURE), False)
    by_aws = pc.fill_null(pc.ends_with(rows["user_agent"], AWS_AGENT_SUFFIX), False)
    return pc.and_(failed, pc.invert(by_aws))


def sql_predicate(cols: Mapping[str, str], ctx: Context) -> str | None:
    failed = f"coalesce({cols['status']} = {literal(FAILURE)}, false)"
    by_aws = f"coalesce({cols['user_agent']} LIKE {literal('%' + AWS_AGENT_SUFFIX)}, false)"
    return f"({failed} AND NOT {by_aws})"


DETECTION = _escu.detection(
    id="8d12f268-c567-4557-9813-f8389e235c06",
    slug="iam-failure-group-deletion",
    name="ASL AWS IAM Failure Group Deletion",
    version=12,
    escu_type="Anomaly",
    mitre={"T1098": "Account Manipulation"},
    description=(
        "An attempt to delete an IAM group failed (DeleteGroup refused: access denied, the "
        "group still has members or policies, or it does not exist), and the call did not come "
        "from an AWS service. Someone probing or tearing down the account's access structure "
        "with credentials that lack the right, or without knowing what exists, fails this way."
    ),
    analytic_story=("AWS IAM Privilege Escalation",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has had failures while attempting to delete groups",
    resource=("group", "groupName", "group"),
    predicate=predicate,
    sql_predicate=sql_predicate,
    predicate_columns=("status", "user_agent"),
    deviations=(
        "A failed DeleteGroup without a recorded user agent is reported (Splunk's `!=` drops "
        "it); only agents ending in .amazonaws.com, AWS services' own calls, are left out.",
    ),
    headline="An attempt to delete an IAM group failed",
    verdict="GROUP DELETED",
    known_false_positives=(
        "Administrators or infrastructure-as-code tools deleting a group that still has "
        "members or attached policies, or one already deleted (DeleteConflict, NoSuchEntity)."
    ),
    how_to_respond=(
        "Look at the error code of each failed call: AccessDenied means the principal tried "
        "something it is not allowed to do; DeleteConflict or NoSuchEntity usually means a "
        "clumsy clean-up. Ask the principal's owner whether the deletion was intended. If not, "
        "treat the credentials as stolen: disable the access key or revoke the role's sessions, "
        "and review the principal's other IAM calls (group membership, policy changes) around "
        "the same time and from the same source IP."
    ),
    references=("https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeleteGroup.html",),
    examples=(
        Example(
            "an IAM user is refused deleting a group",
            reported=True,
            event=_escu.call(
                OPERATION,
                SERVICE,
                status=FAILURE,
                error_code="AccessDenied",
                **_escu.user("mallory"),
            ),
            request={"groupName": "Admins"},
        ),
        Example(
            "a role fails to delete a group that still has members",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status=FAILURE, error_code="DeleteConflict"),
            request={"groupName": "Developers"},
        ),
        Example(
            "a failure without a recorded user agent is reported (deviation)",
            reported=True,
            event=_escu.call(
                OPERATION, SERVICE, status=FAILURE, error_code="NoSuchEntity", user_agent=None
            ),
            request={"groupName": "Contractors"},
        ),
        Example(
            "a failure by an AWS service's own call is not reported",
            reported=False,
            event=_escu.call(
                OPERATION,
                SERVICE,
                status=FAILURE,
                error_code="DeleteConflict",
                user_agent="iam.amazonaws.com",
            ),
            request={"groupName": "Developers"},
        ),
        Example(
            "a successful group deletion is not a failure",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("alice")),
            request={"groupName": "Developers"},
        ),
        Example(
            "a failed group creation is not a deletion",
            reported=False,
            event=_escu.call(
                "CreateGroup", SERVICE, status=FAILURE, error_code="EntityAlreadyExists"
            ),
            request={"groupName": "Developers", "path": "/"},
        ),
    ),
)
