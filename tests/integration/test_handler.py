"""The Lambda handler under moto: notifications in, SSM allowlist, SNS + Security Hub out."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from detector import handler
from detector.errors import ConfigError
from detector.notifications import UnknownEvent
from tests import lake

EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "aws-security-data-lake-us-east-1-demo"
PARAM = "/ecr-upload-detector/allowlist"
K1 = lake.key_for(1, name="demo-v1")
K2 = lake.key_for(2, name="demo-v2")
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


class Context:
    function_name = "ecr-upload-detector"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ecr-upload-detector"
    memory_limit_in_mb = 1024
    aws_request_id = "test-request"
    log_group_name = "/aws/lambda/ecr-upload-detector"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def parquet(events: list[dict[str, Any]], version: int) -> bytes:
    buf = io.BytesIO()
    lake.write_object(buf, events, version)
    return buf.getvalue()


class Aws:
    """The moto world one test runs in."""

    def __init__(self) -> None:
        self.s3 = boto3.client("s3")
        self.ssm = boto3.client("ssm")
        self.sns = boto3.client("sns")
        self.sqs = boto3.client("sqs")
        self.hub = boto3.client("securityhub")
        self.s3.create_bucket(Bucket=BUCKET)
        self.topic = self.sns.create_topic(Name="findings")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="inbox")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])
        self.sns.subscribe(
            TopicArn=self.topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"]
        )
        self.hub.enable_security_hub()
        for version, key in ((1, K1), (2, K2)):
            self.put(
                key, parquet([lake.event(), lake.event(arn=INTRUDER, session_issuer=None)], version)
            )

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def allowlist(self, value: str, type_: str = "String") -> None:
        self.ssm.put_parameter(Name=PARAM, Type=type_, Value=value, Overwrite=True)

    def digests(self) -> list[dict[str, Any]]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
            msgs = got.get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                out.append(json.loads(json.loads(m["Body"])["Message"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("ALLOWLIST_PARAMETER", PARAM)
    handler.reset()
    with mock_aws():
        world = Aws()
        world.allowlist(f"# CI\n{lake.CI_ROLE}\n")
        monkeypatch.setenv("FINDINGS_TOPIC_ARN", world.topic)
        yield world
    handler.reset()


def invoke(event: dict[str, Any]) -> Any:
    return handler.lambda_handler(event, Context())


@pytest.mark.parametrize(
    ("name", "expected_count"),
    [
        ("sqs-security-lake-subscriber.json", 2),  # both objects, aggregated together
        ("eventbridge-object-created.json", 1),
        ("s3-notification.json", 1),  # URL-encoded key
        ("sqs-s3-notification.json", 1),
        ("sqs-sns-s3-notification.json", 1),  # SNS envelope inside SQS
    ],
)
def test_every_event_shape_reaches_one_digest(aws: Aws, name: str, expected_count: int):
    result = invoke(load(name))
    if name.startswith("sqs-"):
        assert result == {"batchItemFailures": []}
    (digest,) = aws.digests()
    (finding,) = digest["findings"]
    assert finding["user"] == INTRUDER
    assert finding["count"] == expected_count
    hub = aws.hub.get_findings()["Findings"]
    assert len(hub) == 1 and hub[0]["ProductFields"]["user"] == INTRUDER


def test_s3_test_event_does_nothing_and_fails_nothing(aws: Aws):
    assert invoke(load("sqs-s3-test-event.json")) == {"batchItemFailures": []}
    assert aws.digests() == []


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("String", f"{lake.CI_ROLE}\n{INTRUDER}\n"),
        ("StringList", f"{lake.CI_ROLE},{INTRUDER}"),
        ("SecureString", json.dumps([lake.CI_ROLE, INTRUDER])),
    ],
)
def test_each_ssm_parameter_type_is_an_allowlist(aws: Aws, type_: str, value: str):
    aws.ssm.delete_parameter(Name=PARAM)
    aws.allowlist(value, type_)
    assert invoke(load("sqs-security-lake-subscriber.json")) == {"batchItemFailures": []}
    assert aws.digests() == []  # everyone is trusted now: quiet


def test_corrupt_object_fails_only_its_record(aws: Aws):
    aws.put(K1, b"PAR1 this is not really parquet PAR1")
    result = invoke(load("sqs-security-lake-subscriber.json"))
    assert result == {
        "batchItemFailures": [{"itemIdentifier": "0c5b9e6a-6e1f-4f4a-9b5d-000000000002"}]
    }
    (digest,) = aws.digests()
    assert digest["findings"][0]["count"] == 1  # the good object's finding is still published


def test_missing_object_is_logged_not_retried_forever(aws: Aws, capsys):
    aws.s3.delete_object(Bucket=BUCKET, Key=K2)
    result = invoke(load("sqs-security-lake-subscriber.json"))
    assert result == {"batchItemFailures": []}
    (digest,) = aws.digests()
    assert digest["findings"][0]["count"] == 1  # the object still there is reported
    metrics = capsys.readouterr().out  # powertools Metrics prints EMF to stdout
    assert '"ObjectsMissing":[1.0]' in metrics


def test_missing_allowlist_parameter_fails_every_record(aws: Aws):
    aws.ssm.delete_parameter(Name=PARAM)
    result = invoke(load("sqs-security-lake-subscriber.json"))
    assert len(result["batchItemFailures"]) == 2
    assert aws.digests() == []  # nothing judged against no allowlist


def test_missing_allowlist_parameter_raises_on_direct_invocation(aws: Aws):
    aws.ssm.delete_parameter(Name=PARAM)
    with pytest.raises(handler.InvocationFailed, match=PARAM):
        invoke(load("eventbridge-object-created.json"))


def test_garbage_allowlist_fails_loudly(aws: Aws):
    aws.allowlist('["unterminated')
    with pytest.raises(handler.InvocationFailed, match=f"ssm:{PARAM}"):
        invoke(load("eventbridge-object-created.json"))


def test_unknown_direct_event_raises(aws: Aws):
    with pytest.raises(UnknownEvent):
        invoke({"hello": "world"})


def test_unknown_sqs_record_fails_alone(aws: Aws):
    event = load("sqs-security-lake-subscriber.json")
    event["Records"][0]["body"] = json.dumps({"what": "is this"})
    result = invoke(event)
    assert result == {
        "batchItemFailures": [{"itemIdentifier": "0c5b9e6a-6e1f-4f4a-9b5d-000000000001"}]
    }


def test_allowlist_is_cached_between_warm_invocations(aws: Aws):
    calls = []
    invoke(load("eventbridge-object-created.json"))  # cold: builds the clients
    ssm = handler.app(Context()).allowlists.client
    ssm.meta.events.register("before-call.ssm.GetParameter", lambda **kw: calls.append(1))
    invoke(load("eventbridge-object-created.json"))
    invoke(load("eventbridge-object-created.json"))
    assert calls == []


def test_missing_setting_is_named(aws: Aws, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FINDINGS_TOPIC_ARN")
    handler.reset()
    with pytest.raises(ConfigError, match="FINDINGS_TOPIC_ARN"):
        invoke(load("eventbridge-object-created.json"))


def test_security_hub_can_be_turned_off(aws: Aws, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SECURITY_HUB_ENABLED", "false")
    handler.reset()
    invoke(load("eventbridge-object-created.json"))
    assert len(aws.digests()) == 1
    assert aws.hub.get_findings()["Findings"] == []
