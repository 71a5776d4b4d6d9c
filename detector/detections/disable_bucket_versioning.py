"""ASL AWS Disable Bucket Versioning (ESCU f32598bb, version 7, Anomaly).

ESCU: ``api.operation=PutBucketVersioning``, the request JSON's
``VersioningConfiguration.Status`` read with ``spath`` and kept when it is ``Suspended``,
grouped by caller and bucket. Ported as written: failed calls are reported too (ESCU has no
status filter), and an MFA-delete change that leaves versioning ``Enabled`` is not.
"""

from __future__ import annotations

from detector.core.requestjson import eq
from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "PutBucketVersioning"
SERVICE = "s3.amazonaws.com"
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _request(bucket: str, status: str, mfa_delete: str | None = None) -> dict[str, object]:
    """PutBucketVersioning's requestParameters as CloudTrail records them."""
    config: dict[str, str] = {"Status": status, "xmlns": XMLNS}
    if mfa_delete is not None:
        config["MfaDelete"] = mfa_delete
    return {
        "bucketName": bucket,
        "Host": f"{bucket}.s3.us-east-1.amazonaws.com",
        "versioning": "",
        "VersioningConfiguration": config,
    }


DETECTION = _escu.detection(
    id="f32598bb-fa5f-4afd-8ab3-0263cc28efbc",
    slug="disable-bucket-versioning",
    name="ASL AWS Disable Bucket Versioning",
    version=7,
    escu_type="Anomaly",
    mitre={"T1490": "Inhibit System Recovery"},
    description=(
        "Versioning was suspended on an S3 bucket (PutBucketVersioning with Status "
        "Suspended). Without versioning, an overwritten or deleted object cannot be brought "
        "back: ransomware and data-destruction playbooks suspend it before they encrypt or "
        "delete."
    ),
    analytic_story=("Suspicious AWS S3 Activities", "Data Exfiltration"),
    operations=(OPERATION,),
    service=SERVICE,
    message="Bucket versioning was suspended on an S3 bucket by user {user}",
    resource=("bucket", "bucketName", "bucket"),
    request_test=eq("VersioningConfiguration.Status", "Suspended"),
    headline="Versioning was suspended on an S3 bucket",
    verdict="VERSIONING SUSPENDED",
    known_false_positives=(
        "Administrators suspending versioning to cut storage costs on scratch, log or cache "
        "buckets; infrastructure-as-code applying a bucket definition without versioning."
    ),
    how_to_respond=(
        "Ask the principal's owner whether the bucket was meant to lose versioning. If not, "
        "re-enable it at once (aws s3api put-bucket-versioning --bucket <bucket> "
        "--versioning-configuration Status=Enabled), check the bucket for object deletions, "
        "overwrites and new lifecycle or replication rules since the change (S3 data events, "
        "list-object-versions), revoke the principal's sessions and keys, and look for other "
        "calls from the source IP."
    ),
    references=("https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketVersioning.html",),
    remedy=_escu.Remedy(
        "Turn versioning back on, if the bucket should keep versions:",
        ("aws", "s3api", "put-bucket-versioning"),
        "--bucket",
        r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
        (("--versioning-configuration", "Status=Enabled"),),
    ),
    examples=(
        Example(
            "an IAM user suspends versioning",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request("finance-archive", "Suspended"),
        ),
        Example(
            "a refused suspension is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request=_request("finance-archive", "Suspended"),
        ),
        Example(
            "suspending with an MFA-delete setting is reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request=_request("backups-prod", "Suspended", mfa_delete="Disabled"),
        ),
        Example(
            "enabling versioning is not reported",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request("finance-archive", "Enabled"),
        ),
        Example(
            "reading the versioning state is not this detection's",
            reported=False,
            event=_escu.call("GetBucketVersioning", SERVICE),
            request={"bucketName": "finance-archive", "versioning": ""},
        ),
    ),
)
