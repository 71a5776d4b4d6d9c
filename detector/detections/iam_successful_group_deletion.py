"""ASL AWS IAM Successful Group Deletion (ESCU 1bbe54f1, version 10, Hunting).

ESCU: ``api.operation=DeleteGroup status=Success``, grouped by caller: every IAM group that was
deleted. Ported as written; failed attempts are left to "IAM Failure Group Deletion".
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "DeleteGroup"
SERVICE = "iam.amazonaws.com"
SUCCESS, SUCCESS_SQL = _escu.status_is("Success")

DETECTION = _escu.detection(
    id="1bbe54f1-93d7-4764-8a01-ddaa12ece7ac",
    slug="iam-successful-group-deletion",
    name="ASL AWS IAM Successful Group Deletion",
    version=10,
    escu_type="Hunting",
    mitre={"T1069.003": "Cloud Groups", "T1098": "Account Manipulation"},
    description=(
        "An IAM group was deleted (DeleteGroup succeeded). Removing a group changes who holds "
        "which permissions; on its own it is routine administration, but it can also be an "
        "attacker reshaping access or clearing away a group that would give them away."
    ),
    analytic_story=("AWS IAM Privilege Escalation",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has deleted an IAM group",
    resource=("group", "groupName", "group"),
    predicate=SUCCESS,
    sql_predicate=SUCCESS_SQL,
    predicate_columns=("status",),
    headline="An IAM group was deleted",
    verdict="GROUP DELETED",
    known_false_positives=(
        "Administrators or infrastructure-as-code tools (Terraform, CloudFormation) removing "
        "groups that are no longer used."
    ),
    how_to_respond=(
        "Check the group against change tickets or the infrastructure-as-code repository. If "
        "nobody expected it, ask the principal's owner; if they did not do it, disable the "
        "access key or revoke the role's sessions, recreate the group with its policies and "
        "members from your IaC or records, and review the principal's other IAM calls."
    ),
    references=("https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeleteGroup.html",),
    examples=(
        Example(
            "an IAM user deletes a group",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("alice")),
            request={"groupName": "Developers"},
        ),
        Example(
            "a role deletes a group",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request={"groupName": "Auditors"},
        ),
        Example(
            "a refused group deletion is not a successful one",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"groupName": "Admins"},
        ),
        Example(
            "creating a group is not deleting one",
            reported=False,
            event=_escu.call("CreateGroup", SERVICE),
            request={"groupName": "Developers", "path": "/"},
        ),
    ),
)
