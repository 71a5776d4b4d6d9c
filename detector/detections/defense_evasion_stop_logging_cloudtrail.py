"""ASL AWS Defense Evasion Stop Logging Cloudtrail (ESCU 0b78a8f9, version 12, TTP).

ESCU: ``api.operation=StopLogging``, every call, grouped by caller. Ported as written: failed
calls are reported too (an attempt to switch off the account's record is news even when it
was refused).
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "StopLogging"
SERVICE = "cloudtrail.amazonaws.com"

DETECTION = _escu.detection(
    id="0b78a8f9-1d31-4d23-85c8-56ad13d5b4c1",
    slug="defense-evasion-stop-logging-cloudtrail",
    name="ASL AWS Defense Evasion Stop Logging Cloudtrail",
    version=12,
    escu_type="TTP",
    mitre={"T1685.002": "Disable or Modify Cloud Logs"},
    description=(
        "Logging was switched off on a CloudTrail trail (StopLogging). The trail stays in "
        "place but delivers nothing until logging is started again: an attacker does it to "
        "act unrecorded while leaving the configuration looking intact."
    ),
    analytic_story=("AWS Defense Evasion",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has stopped Cloudtrail logging",
    resource=("trail", "name", "trail"),
    headline="CloudTrail logging was stopped on a trail",
    verdict="LOGGING STOPPED",
    known_false_positives=(
        "Administrators pausing a trail during maintenance or before replacing it; test "
        "accounts where trails are switched on and off."
    ),
    how_to_respond=(
        "Start logging again at once (aws cloudtrail start-logging --name <trail>) and check "
        "with get-trail-status that it is logging. Then ask the principal's owner why it was "
        "stopped; if nobody knows, revoke the principal's credentials and review its calls "
        "from other sources (Security Lake, an organization trail) for the gap."
    ),
    references=(
        "https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_StopLogging.html",
    ),
    remedy=_escu.Remedy(
        "Turn logging back on, if the trail should log (then find out what was missed):",
        ("aws", "cloudtrail", "start-logging"),
        "--name",
        r"[A-Za-z0-9:/._-]{3,256}",
    ),
    examples=(
        Example(
            "an IAM user stops logging on a trail",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"name": f"arn:aws:cloudtrail:us-east-1:{_escu.ACCOUNT}:trail/management"},
        ),
        Example(
            "a refused StopLogging is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"name": "management-events"},
        ),
        Example(
            "starting logging is not stopping it",
            reported=False,
            event=_escu.call("StartLogging", SERVICE, **_escu.user("mallory")),
            request={"name": "management-events"},
        ),
    ),
)
