"""ASL AWS Defense Evasion Delete CloudWatch Log Group (ESCU 0f701b38, version 13, TTP).

ESCU: ``api.operation=DeleteLogGroup``, every call, grouped by caller. Ported as written:
failed calls are reported too (trying to destroy logs is news even when it was refused).
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "DeleteLogGroup"
SERVICE = "logs.amazonaws.com"

DETECTION = _escu.detection(
    id="0f701b38-a0fb-43fd-a83d-d12265f71f33",
    slug="defense-evasion-delete-cloudwatch-log-group",
    name="ASL AWS Defense Evasion Delete CloudWatch Log Group",
    version=13,
    escu_type="TTP",
    mitre={"T1685.002": "Disable or Modify Cloud Logs"},
    description=(
        "A CloudWatch Logs log group was deleted (DeleteLogGroup). The group's streams and every "
        "event in them go with it, and nothing is kept: an attacker does it to erase traces "
        "(VPC flow logs, Lambda or application logs, a CloudTrail copy) and to stop new ones."
    ),
    analytic_story=("AWS Defense Evasion",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has deleted a CloudWatch logging group",
    resource=("log_group", "logGroupName", "log group"),
    headline="A CloudWatch log group was deleted",
    verdict="LOG GROUP DELETED",
    known_false_positives=(
        "Infrastructure-as-code teardown (CloudFormation, Terraform, CDK destroy) and cleanup "
        "of log groups left by deleted Lambda functions or test stacks."
    ),
    how_to_respond=(
        "Find which log group went and what wrote to it. If the deletion was not planned, "
        "recreate the group so new events are kept, recover what you can from other copies "
        "(S3 exports, subscriptions, Security Lake), revoke the principal's credentials and "
        "review what it did around the deletion."
    ),
    references=(
        "https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/"
        "API_DeleteLogGroup.html",
    ),
    examples=(
        Example(
            "an IAM user deletes a log group",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory"), region="eu-west-1"),
            request={"logGroupName": "/aws/vpc/flow-logs"},
        ),
        Example(
            "a refused DeleteLogGroup is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"logGroupName": "/aws/lambda/payments-api"},
        ),
        Example(
            "deleting one log stream is not deleting the group",
            reported=False,
            event=_escu.call("DeleteLogStream", SERVICE, **_escu.user("mallory")),
            request={"logGroupName": "/aws/vpc/flow-logs", "logStreamName": "eni-0a1b2c3d-all"},
        ),
        Example(
            "setting a retention policy is not a deletion",
            reported=False,
            event=_escu.call("PutRetentionPolicy", SERVICE),
            request={"logGroupName": "/aws/lambda/payments-api", "retentionInDays": 30},
        ),
    ),
)
