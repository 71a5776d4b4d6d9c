"""ASL AWS Defense Evasion Update Cloudtrail (ESCU f3eb471c, version 12, TTP).

ESCU: ``api.operation=UpdateTrail``, every call, grouped by caller; it does not look at what
the update changed. Ported as written: every update is reported, failed calls too.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "UpdateTrail"
SERVICE = "cloudtrail.amazonaws.com"

DETECTION = _escu.detection(
    id="f3eb471c-16d0-404d-897c-7653f0a78cba",
    slug="defense-evasion-update-cloudtrail",
    name="ASL AWS Defense Evasion Update Cloudtrail",
    version=12,
    escu_type="TTP",
    mitre={"T1685.002": "Disable or Modify Cloud Logs"},
    description=(
        "A CloudTrail trail's settings were changed (UpdateTrail). An attacker can blind a "
        "trail without deleting it: narrow it to one region, drop global service events, "
        "turn off log file validation, or point delivery at a bucket they control."
    ),
    analytic_story=("AWS Defense Evasion",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has updated a cloudtrail logging",
    resource=("trail", "name", "trail"),
    headline="A CloudTrail trail's settings were changed",
    verdict="TRAIL UPDATED",
    known_false_positives=(
        "Administrators or infrastructure-as-code changing a trail's bucket, KMS key, SNS "
        "topic or scope as planned."
    ),
    how_to_respond=(
        "Compare the request with the trail now (aws cloudtrail describe-trails / "
        "get-trail-status): multi-region off, global events off, validation off or a new "
        "bucket are the telling changes. If the change was not planned, put the settings back, "
        "revoke the principal's credentials and review what it did after the change."
    ),
    references=(
        "https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_UpdateTrail.html",
    ),
    remedy=_escu.Remedy(
        "The trail as it is now (where it delivers, whether it logs every region):",
        ("aws", "cloudtrail", "get-trail"),
        "--name",
        r"[A-Za-z0-9:/._-]{3,256}",
    ),
    examples=(
        Example(
            "an IAM user narrows a trail to one region",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={
                "name": "management-events",
                "isMultiRegionTrail": False,
                "includeGlobalServiceEvents": False,
            },
        ),
        Example(
            "a refused UpdateTrail is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"name": "management-events", "s3BucketName": "attacker-owned-bucket"},
        ),
        Example(
            "creating a trail is not updating one",
            reported=False,
            event=_escu.call("CreateTrail", SERVICE, **_escu.user("alice")),
            request={"name": "data-events", "s3BucketName": "trail-bucket"},
        ),
    ),
)
