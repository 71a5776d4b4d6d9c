"""ASL AWS Defense Evasion PutBucketLifecycle (ESCU 986565a2, version 7, Hunting).

ESCU: ``api.operation=PutBucketLifecycle``, the request JSON's
``LifecycleConfiguration.Rule.NoncurrentVersionExpiration.NoncurrentDays`` read with ``spath``
and kept when it is below 3, grouped by caller, bucket and that number. Ported as written:
failed calls are reported too (ESCU has no status filter). ``Rule`` is one object for a
single rule and a list for several; the list is looked into, and a call reports when any of
its rules expires noncurrent versions in under 3 days.

Limitation (kept from ESCU): only the expiry of noncurrent (overwritten or deleted) versions
is read. A rule expiring the current objects themselves within a day (``Expiration.Days``,
the CloudTrail-log wiping rule of Stratus Red Team) is not reported.
"""

from __future__ import annotations

from typing import Any

from detector.core.requestjson import lt
from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "PutBucketLifecycle"
SERVICE = "s3.amazonaws.com"
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
BUCKET = "org-cloudtrail-logs"


def _rule(
    rule_id: str, noncurrent_days: int | None = None, days: int | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": ""}}
    if days is not None:
        rule["Expiration"] = {"Days": days}
    if noncurrent_days is not None:
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": noncurrent_days}
    return rule


def _request(rules: dict[str, Any] | list[dict[str, Any]], bucket: str = BUCKET) -> dict[str, Any]:
    """PutBucketLifecycle's requestParameters as CloudTrail records them (``Rule`` is one
    object or a list, as the XML body had one rule or several)."""
    return {
        "bucketName": bucket,
        "Host": f"{bucket}.s3.us-east-1.amazonaws.com",
        "lifecycle": "",
        "LifecycleConfiguration": {"xmlns": XMLNS, "Rule": rules},
    }


DETECTION = _escu.detection(
    id="986565a2-7707-48ea-9590-37929cebc938",
    slug="defense-evasion-putbucketlifecycle",
    name="ASL AWS Defense Evasion PutBucketLifecycle",
    version=7,
    escu_type="Hunting",
    mitre={
        "T1485.001": "Lifecycle-Triggered Deletion",
        "T1685.002": "Disable or Modify Cloud Logs",
    },
    description=(
        "An S3 lifecycle rule was set that deletes noncurrent object versions less than 3 days "
        "after they stop being current (PutBucketLifecycle). On a bucket of logs or backups it "
        "quietly destroys the history versioning was keeping: overwritten or deleted CloudTrail "
        "logs are gone before anyone looks."
    ),
    analytic_story=("AWS Defense Evasion",),
    operations=(OPERATION,),
    service=SERVICE,
    message=(
        "User {user} set an S3 lifecycle rule deleting noncurrent object versions in under 3 days"
    ),
    resource=("bucket", "bucketName", "bucket"),
    request_test=lt("LifecycleConfiguration.Rule.NoncurrentVersionExpiration.NoncurrentDays", 3),
    headline="An S3 lifecycle rule deletes old object versions within 3 days",
    verdict="SHORT EXPIRY SET",
    known_false_positives=(
        "Cost clean-up rules on scratch, cache or build-artifact buckets, where old versions "
        "have no value; infrastructure-as-code applying the same rule to many buckets."
    ),
    how_to_respond=(
        "Check what the bucket holds (CloudTrail, Config or VPC Flow logs, backups: urgent). "
        "Read the rules now in force (aws s3api get-bucket-lifecycle-configuration --bucket "
        "<bucket>); if the principal's owner did not mean to set them, put the previous rules "
        "back or remove them (delete-bucket-lifecycle), copy what must be kept elsewhere "
        "before the next lifecycle run, revoke the principal's sessions and keys, and look for "
        "deletions in the bucket and other calls from the source IP."
    ),
    references=(
        "https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketLifecycleConfiguration.html",
        "https://stratus-red-team.cloud/attack-techniques/AWS/"
        "aws.defense-evasion.cloudtrail-lifecycle-rule/",
    ),
    examples=(
        Example(
            "an IAM user expires noncurrent versions after 1 day",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request(_rule("nuke", noncurrent_days=1)),
        ),
        Example(
            "one short rule among several is reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request=_request(
                [_rule("archive", noncurrent_days=90), _rule("tmp", noncurrent_days=2)]
            ),
        ),
        Example(
            "a refused short rule is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request=_request(_rule("nuke", noncurrent_days=1, days=1)),
        ),
        Example(
            "noncurrent versions kept 30 days is not reported",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request(_rule("nuke", noncurrent_days=30)),
        ),
        Example(
            "exactly 3 days is not below 3",
            reported=False,
            event=_escu.call(OPERATION, SERVICE),
            request=_request(_rule("weekly", noncurrent_days=3)),
        ),
        Example(
            "expiring current objects only is not read (as in ESCU)",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request(_rule("nuke", days=1)),
        ),
        Example(
            "deleting the lifecycle configuration is not this detection's",
            reported=False,
            event=_escu.call("DeleteBucketLifecycle", SERVICE),
            request={"bucketName": BUCKET, "Host": f"{BUCKET}.s3.amazonaws.com", "lifecycle": ""},
        ),
    ),
)
