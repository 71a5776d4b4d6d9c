"""ASL AWS Defense Evasion Delete Cloudtrail (ESCU 1f0b47e5, version 14, TTP).

ESCU: ``api.operation=DeleteTrail``, every call, grouped by caller. Ported as written: failed
calls are reported too (an attempt to blind the account is news even when it was refused).
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "DeleteTrail"
SERVICE = "cloudtrail.amazonaws.com"

DETECTION = _escu.detection(
    id="1f0b47e5-0134-43eb-851c-e3258638945e",
    slug="defense-evasion-delete-cloudtrail",
    name="ASL AWS Defense Evasion Delete Cloudtrail",
    version=14,
    escu_type="TTP",
    mitre={"T1685.002": "Disable or Modify Cloud Logs"},
    description=(
        "A CloudTrail trail was deleted (DeleteTrail). Deleting a trail stops the record of API "
        "calls it delivered: an attacker does it to act unseen."
    ),
    analytic_story=("AWS Defense Evasion",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has deleted CloudTrail logging",
    resource=("trail", "name", "trail"),
    headline="A CloudTrail trail was deleted",
    verdict="TRAIL DELETED",
    known_false_positives="Administrators retiring or replacing a trail.",
    how_to_respond=(
        "Confirm with the principal's owner that the trail was meant to go. If not, recreate "
        "it (or turn on the organization trail), revoke the principal's credentials and review "
        "what it did while the trail was missing."
    ),
    references=(
        "https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_DeleteTrail.html",
    ),
    examples=(
        Example(
            "an IAM user deletes a trail",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"name": "management-events"},
        ),
        Example(
            "a refused DeleteTrail is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"name": f"arn:aws:cloudtrail:us-east-1:{_escu.ACCOUNT}:trail/org"},
        ),
        Example(
            "creating a trail is not deleting one",
            reported=False,
            event=_escu.call("CreateTrail", SERVICE),
            request={"name": "management-events", "s3BucketName": "trail-bucket"},
        ),
    ),
)
