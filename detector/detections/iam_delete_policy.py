"""ASL AWS IAM Delete Policy (ESCU 609ced68, version 9, Hunting).

ESCU: ``api.operation=DeletePolicy``, every call, grouped by caller. Ported as written: failed
calls are reported too (ESCU suggests tuning for one outcome; here the email tells them apart).
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "DeletePolicy"
SERVICE = "iam.amazonaws.com"

DETECTION = _escu.detection(
    id="609ced68-d420-4ff7-8164-ae98b4b4018c",
    slug="iam-delete-policy",
    name="ASL AWS IAM Delete Policy",
    version=9,
    escu_type="Hunting",
    mitre={"T1098": "Account Manipulation"},
    description=(
        "A customer-managed IAM policy was deleted (DeletePolicy). Removing a policy can strip "
        "a guardrail (a deny, a permissions boundary) or cover up a policy used for escalation; "
        "it is worth a look when the caller does not usually manage IAM."
    ),
    analytic_story=("AWS IAM Privilege Escalation",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has deleted an IAM policy",
    resource=("policy", "policyArn", "policy"),
    headline="An IAM managed policy was deleted",
    verdict="POLICY DELETED",
    known_false_positives=(
        "Administrators and infrastructure-as-code removing policies no longer needed; stack "
        "deletions in CloudFormation or Terraform."
    ),
    how_to_respond=(
        "Find what the policy granted or denied and what it was attached to (an earlier "
        "CreatePolicy/CreatePolicyVersion, or the infrastructure code). If the deletion was "
        "not planned and removed a restriction, recreate and reattach it, revoke the caller's "
        "credentials and review the IAM changes it made around then."
    ),
    references=("https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeletePolicy.html",),
    examples=(
        Example(
            "an IAM user deletes a managed policy",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"policyArn": f"{_escu.ARN}:policy/deny-s3-delete"},
        ),
        Example(
            "a refused DeletePolicy is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"policyArn": f"{_escu.ARN}:policy/boundary-developers"},
        ),
        Example(
            "deleting a policy version is not deleting the policy",
            reported=False,
            event=_escu.call("DeletePolicyVersion", SERVICE, **_escu.user("mallory")),
            request={"policyArn": f"{_escu.ARN}:policy/deny-s3-delete", "versionId": "v2"},
        ),
        Example(
            "deleting an inline role policy is another operation",
            reported=False,
            event=_escu.call("DeleteRolePolicy", SERVICE),
            request={"roleName": "ci-deployer", "policyName": "inline-s3"},
        ),
    ),
)
