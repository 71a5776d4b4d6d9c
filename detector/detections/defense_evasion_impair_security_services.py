"""ASL AWS Defense Evasion Impair Security Services (ESCU 5029b681, version 11, Hunting).

ESCU: ``api.operation IN (DeleteLogStream, DeleteDetector, DeleteIPSet, DeleteWebACL,
DeleteRule, DeleteRuleGroup, DeleteLoggingConfiguration, DeleteAlarms)``, every call, grouped
by caller. Ported as written: like ESCU it matches the operation name whatever the service, so
an operation of the same name elsewhere (EventBridge's DeleteRule, for one) is listed too; failed
calls are reported as well. The calls act on different kinds of resource, so what is sampled is
the operation itself.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATIONS = (
    "DeleteLogStream",
    "DeleteDetector",
    "DeleteIPSet",
    "DeleteWebACL",
    "DeleteRule",
    "DeleteRuleGroup",
    "DeleteLoggingConfiguration",
    "DeleteAlarms",
)
LOGS = "logs.amazonaws.com"
GUARDDUTY = "guardduty.amazonaws.com"
WAFV2 = "wafv2.amazonaws.com"
MONITORING = "monitoring.amazonaws.com"
DETECTOR_ID = "12abc34d567e8fa901bc2d34eexample"
WEB_ACL_ID = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
_API = "https://docs.aws.amazon.com/{}/latest/APIReference/API_{}.html"

DETECTION = _escu.detection(
    id="5029b681-0462-47b7-82e7-f7e3d37f5a2d",
    slug="defense-evasion-impair-security-services",
    name="ASL AWS Defense Evasion Impair Security Services",
    version=11,
    escu_type="Hunting",
    mitre={"T1685.002": "Disable or Modify Cloud Logs"},
    description=(
        "A security control was deleted: a CloudWatch Logs log stream, a GuardDuty detector or "
        "IP set, a WAF web ACL, rule, rule group or logging configuration, or CloudWatch "
        "alarms. Each removes some of what would notice or block an intruder, which is why an "
        "attacker tears them down before acting."
    ),
    analytic_story=("AWS Defense Evasion",),
    operations=OPERATIONS,
    service=LOGS,
    message="User {user} has deleted a security monitoring or protection resource",
    resource=("operation", "", "operation"),
    headline="A security monitoring or protection resource was deleted",
    verdict="SECURITY CONTROL DELETED",
    known_false_positives=(
        "Administrators and infrastructure-as-code removing or replacing detectors, web ACLs, "
        "alarms and log streams; EventBridge rules deleted by deployments (same operation "
        "name as WAF's DeleteRule)."
    ),
    how_to_respond=(
        "Look at which operation and service it was. A deleted GuardDuty detector or WAF web "
        "ACL leaves the account or application unprotected: if nobody planned it, recreate it "
        "first (GuardDuty: aws guardduty create-detector --enable), then revoke the caller's "
        "credentials and review what it did next; for alarms and log streams, restore them "
        "from infrastructure code and check what they would have caught."
    ),
    references=(
        _API.format("AmazonCloudWatchLogs", "DeleteLogStream"),
        _API.format("guardduty", "DeleteDetector"),
        _API.format("guardduty", "DeleteIPSet"),
        _API.format("waf", "DeleteWebACL"),
        _API.format("waf", "waf_DeleteRule"),
        _API.format("waf", "DeleteRuleGroup"),
        _API.format("waf", "DeleteLoggingConfiguration"),
        _API.format("AmazonCloudWatch", "DeleteAlarms"),
    ),
    examples=(
        Example(
            "an IAM user deletes the GuardDuty detector",
            reported=True,
            event=_escu.call("DeleteDetector", GUARDDUTY, **_escu.user("mallory")),
            request={"detectorId": DETECTOR_ID},
        ),
        Example(
            "a GuardDuty trusted IP set is deleted",
            reported=True,
            event=_escu.call("DeleteIPSet", GUARDDUTY),
            request={"detectorId": DETECTOR_ID, "ipSetId": "0cb0141ab9fbde177613ab9436example"},
        ),
        Example(
            "a log stream is deleted",
            reported=True,
            event=_escu.call("DeleteLogStream", LOGS, **_escu.user("mallory")),
            request={"logGroupName": "/aws/vpc/flow-logs", "logStreamName": "eni-0a1b2c3d-all"},
        ),
        Example(
            "a WAFv2 web ACL is deleted",
            reported=True,
            event=_escu.call("DeleteWebACL", WAFV2),
            request={
                "name": "public-alb",
                "scope": "REGIONAL",
                "id": WEB_ACL_ID,
                "lockToken": "0a1b2c3d-4e5f-6789-abcd-EXAMPLE22222",
            },
        ),
        Example(
            "a WAFv2 rule group is deleted",
            reported=True,
            event=_escu.call("DeleteRuleGroup", WAFV2, **_escu.user("mallory")),
            request={
                "name": "block-bad-bots",
                "scope": "REGIONAL",
                "id": "b2c3d4e5-6789-0abc-def1-EXAMPLE33333",
                "lockToken": "1b2c3d4e-5f60-789a-bcde-EXAMPLE44444",
            },
        ),
        Example(
            "a WAF Classic rule is deleted (WAFv2 has no DeleteRule)",
            reported=True,
            event=_escu.call("DeleteRule", "waf.amazonaws.com"),
            request={
                "ruleId": "WAFRule-1-Example",
                "changeToken": "abcd12f2-46da-4fdb-b8d5-fbd4c466928f",
            },
        ),
        Example(
            "WAF logging is turned off",
            reported=True,
            event=_escu.call("DeleteLoggingConfiguration", WAFV2, **_escu.user("mallory")),
            request={
                "resourceArn": (
                    f"arn:aws:wafv2:us-east-1:{_escu.ACCOUNT}:regional/webacl/public-alb/"
                    f"{WEB_ACL_ID}"
                )
            },
        ),
        Example(
            "a refused DeleteAlarms is still reported",
            reported=True,
            event=_escu.call(
                "DeleteAlarms", MONITORING, status="Failure", error_code="AccessDenied"
            ),
            request={"alarmNames": ["root-account-usage", "cloudtrail-config-changes"]},
        ),
        Example(
            "an EventBridge DeleteRule matches by name, as in ESCU",
            reported=True,
            event=_escu.call("DeleteRule", "events.amazonaws.com"),
            request={"name": "nightly-report", "force": False},
        ),
        Example(
            "creating a GuardDuty IP set is not a deletion",
            reported=False,
            event=_escu.call("CreateIPSet", GUARDDUTY, **_escu.user("mallory")),
            request={
                "detectorId": DETECTOR_ID,
                "name": "office",
                "format": "TXT",
                "location": "https://s3.amazonaws.com/ipsets/office.txt",
                "activate": True,
            },
        ),
        Example(
            "creating an alarm is not deleting one",
            reported=False,
            event=_escu.call("PutMetricAlarm", MONITORING),
            request={"alarmName": "root-account-usage", "threshold": 1.0},
        ),
    ),
)
