"""template.yaml: it translates, lints clean, and grants only what the function needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from check_template import translate  # noqa: E402


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate(ROOT / "template.yaml")


def statements(cfn: dict[str, Any]) -> list[dict[str, Any]]:
    """The function role's statements, with conditional ones unwrapped."""
    out = []
    for policy in cfn["Resources"]["DetectorFunctionRole"]["Properties"]["Policies"]:
        for st in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in st:
                st = st["Fn::If"][1]
            out.append(st)
    return out


def test_cfn_lint_is_clean():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_function_is_what_users_rely_on(cfn: dict[str, Any]):
    fn = cfn["Resources"]["DetectorFunction"]["Properties"]
    assert fn["Handler"] == "detector.handler.lambda_handler"
    assert fn["Runtime"] == "python3.13"
    params = cfn["Parameters"]
    assert params["Architecture"]["Default"] == "arm64"
    env = fn["Environment"]["Variables"]
    assert {
        "ALLOWLIST_PARAMETER",
        "FINDINGS_TOPIC_ARN",
        "SECURITY_HUB_ENABLED",
        "ALLOWLIST_CACHE_SECONDS",
    } <= set(env)
    assert fn["DeadLetterConfig"]["TargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}


def test_no_wildcard_actions_and_no_star_resources(cfn: dict[str, Any]):
    for st in statements(cfn):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all(a != "*" and not a.endswith(":*") for a in actions), st
        assert st["Resource"] != "*", st


def test_s3_read_is_limited_to_the_cloudtrail_prefix(cfn: dict[str, Any]):
    (s3,) = [st for st in statements(cfn) if "s3:GetObject" in st["Action"]]
    assert s3["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert s3["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${SecurityLakeBucketName}/${SecurityLakePrefix}*"
    }
    assert cfn["Parameters"]["SecurityLakePrefix"]["Default"] == "aws/CLOUD_TRAIL_MGMT/"


def test_each_grant_names_its_one_resource(cfn: dict[str, Any]):
    by_sid = {st.get("Sid"): st for st in statements(cfn)}
    assert by_sid["ReadTheAllowlist"]["Action"] == "ssm:GetParameter"
    assert by_sid["PublishFindings"]["Resource"] == {"Ref": "FindingsTopic"}
    assert by_sid["ImportSecurityHubFindings"]["Resource"]["Fn::Sub"].endswith(
        ":product/${AWS::AccountId}/default"
    )
    assert by_sid["DecryptASecureStringAllowlist"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert set(by_sid["PollTheSubscriberQueue"]["Action"]) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    }


def test_state_table_has_the_key_and_ttl_the_code_expects(cfn: dict[str, Any]):
    table = cfn["Resources"]["StateTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    by_sid = {st.get("Sid"): st for st in statements(cfn)}
    assert by_sid["KeepExactlyOnceState"]["Resource"] == {"Fn::GetAtt": ["StateTable", "Arn"]}


def test_triggers_are_chosen_by_parameter(cfn: dict[str, Any]):
    res = cfn["Resources"]
    esm = res["SubscriberQueueMapping"]
    assert esm["Condition"] == "UseQueue"
    assert esm["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    rule = res["ObjectCreatedRule"]
    assert rule["Condition"] == "UseEventBridge"
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": {"Ref": "SecurityLakePrefix"}}]
    assert rule["Properties"]["Targets"][0]["DeadLetterConfig"]


def test_allowlist_changes_alert_the_topic(cfn: dict[str, Any]):
    rule = cfn["Resources"]["AllowlistChangeRule"]["Properties"]
    names = rule["EventPattern"]["detail"]["name"]
    assert names[0] == {"Ref": "AllowlistParameter"}
    # Every parameter under the allowlist path and the account lists' path, when set.
    assert names[1]["Fn::If"][1]["prefix"] == {"Fn::Sub": "${AllowlistPath}/"}
    assert names[2]["Fn::If"][1]["prefix"] == {"Fn::Sub": "${AccountListsPath}/"}
    assert rule["Targets"][0]["Arn"] == {"Ref": "FindingsTopic"}


def test_the_feed_stopped_alarm_fires_when_nothing_is_scanned(cfn: dict[str, Any]):
    alarm = cfn["Resources"]["FeedStoppedAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("EcrUploadDetector", "ObjectsScanned")
    assert alarm["TreatMissingData"] == "breaching"  # no invocation at all is the case to catch
    assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
    assert alarm["EvaluationPeriods"] == {"Ref": "HeartbeatHours"} and alarm["Period"] == 3600
    assert cfn["Parameters"]["HeartbeatHours"]["Default"] == 6


def test_the_subscriber_role_replaces_direct_bucket_access(cfn: dict[str, Any]):
    role = cfn["Resources"]["DetectorFunctionRole"]["Properties"]["Policies"]
    policy = [s for p in role for s in p["PolicyDocument"]["Statement"]]
    by_sid = {s["Fn::If"][1]["Sid"]: s["Fn::If"] for s in policy if "Fn::If" in s}
    assert by_sid["ReadSecurityLakeCloudTrailObjects"][0] == "ReadsLakeDirectly"
    assume = by_sid["AssumeTheSubscriberRole"]
    assert assume[0] == "HasSubscriberRole"
    assert assume[1]["Action"] == "sts:AssumeRole"
    assert assume[1]["Resource"] == {"Ref": "SubscriberRoleArn"}
    env = cfn["Resources"]["DetectorFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SUBSCRIBER_ROLE_ARN"] == {"Ref": "SubscriberRoleArn"}


def test_alarms_notify_the_topic(cfn: dict[str, Any]):
    alarms = {k: v for k, v in cfn["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    metrics = {a["Properties"]["MetricName"] for a in alarms.values()}
    assert {
        "Errors",
        "Throttles",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "ItemsFailed",
        "SecurityHubRejected",
        "SecurityHubUndelivered",
    } <= metrics
    assert all(
        a["Properties"]["AlarmActions"] == [{"Ref": "FindingsTopic"}] for a in alarms.values()
    )


def test_topic_is_encrypted_and_outputs_exist(cfn: dict[str, Any]):
    assert cfn["Resources"]["FindingsTopic"]["Properties"]["KmsMasterKeyId"] == {
        "Ref": "FindingsKey"
    }
    assert {
        "FindingsTopicArn",
        "FunctionName",
        "AllowlistParameterName",
        "DeadLetterQueueUrl",
    } <= set(cfn["Outputs"])
