"""Publishing the digest to SNS: delivery to SQS, filter policies (moto), retries (Stubber)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import ANY, Stubber
from moto import mock_aws

from detector.analysis.findings import Finding
from detector.aws.sns import BASE_DELAY_S, MAX_DELAY_S, SnsPublisher, retryable
from detector.core.errors import PublishFailed
from detector.detection import DETECTION
from detector.report import digest
from detector.report.alerts import Alert, rollup

REGION = "us-east-1"
ACCOUNT = "111122223333"
OTHER = "444455556666"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:ecr-upload-alerts"
SNS_LIMIT = 262_144


def finding(
    i: int, account: str = ACCOUNT, user_agent: str = "aws-cli/2.15.0", succeeded: bool = True
) -> Finding:
    f = Finding(
        key=(
            "PutImage",
            f"arn:aws:iam::{account}:user/u{i}",
            account,
            user_agent,
            "203.0.113.7",
            None,
            REGION,
        ),
        count=i + 1,
        first_ms=1_714_557_600_000,
        last_ms=1_714_557_600_000 + i,
        succeeded=i + 1 if succeeded else 0,
        failed=0 if succeeded else i + 1,
    )
    f.repositories.add([f"repo-{i}"], priority=succeeded)
    return f


FINDINGS = [finding(0), finding(1, OTHER), finding(2)]


def alerts() -> list[Alert]:
    return rollup(FINDINGS)


def one_message(**kwargs: Any) -> digest.Message:
    return digest.message(alerts(), **kwargs)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def make_topic() -> tuple[Any, str]:
    sns = boto3.client("sns", region_name=REGION)
    return sns, sns.create_topic(Name="ecr-upload-alerts")["TopicArn"]


def subscribe_queue(sns: Any, topic: str, name: str, policy: dict[str, Any] | None = None) -> str:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = {"RawMessageDelivery": "false"}
    if policy is not None:
        # On the JSON body: SNS sends no message attributes with MessageStructure=json.
        attributes["FilterPolicy"] = json.dumps(policy)
        attributes["FilterPolicyScope"] = "MessageBody"
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return str(url)


def drain(url: str) -> list[dict[str, Any]]:
    """Every SNS notification waiting in the queue, parsed."""
    sqs = boto3.client("sqs", region_name=REGION)
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


# --- delivery through moto -------------------------------------------------------------------


def test_the_message_reaches_an_sqs_subscriber(aws: None) -> None:
    sns, topic = make_topic()
    url = subscribe_queue(sns, topic, "all")
    expected_alerts = alerts()
    message = digest.message(expected_alerts, context={"request_id": "r-1"})
    ids = SnsPublisher(topic, client=sns).publish([message])
    assert len(ids) == 1 and ids[0]

    [note] = drain(url)
    assert note["Type"] == "Notification"
    assert note["TopicArn"] == topic
    assert note["MessageId"] == ids[0]
    assert note["Subject"] == digest.subject(expected_alerts)
    doc = json.loads(note["Message"])  # the "default" body (JSON), not the envelope
    assert doc["detection"]["id"] == DETECTION.id
    assert [r["principal"] for r in doc["alerts"]] == [a.who() for a in expected_alerts]
    assert [r["count"] for r in doc["alerts"]] == [3, 2, 1]  # busiest first
    assert doc["alerts"][0] == json.loads(
        json.dumps(expected_alerts[0].to_record(digest.LEVELS[0]))
    )
    assert doc["alert_count"] == 3 and doc["finding_count"] == 3
    assert "omitted" not in doc
    assert doc["context"] == {"request_id": "r-1"}
    # No message attributes (they would not arrive with MessageStructure=json); what filter
    # policies match on is in the body, top level.
    assert not note.get("MessageAttributes")
    assert doc["severity"] == "medium" and doc["detection_id"] == DETECTION.id
    assert doc["pushed"] is True
    assert doc["account_ids"] == [ACCOUNT, OTHER] and doc["regions"] == [REGION]


def test_default_client_is_built_lazily(aws: None) -> None:
    sns, topic = make_topic()
    url = subscribe_queue(sns, topic, "lazy")
    publisher = SnsPublisher(topic)
    assert publisher.publish([digest.message(alerts()[:1])])
    assert len(drain(url)) == 1


@pytest.mark.parametrize(
    ("policy", "delivered"),
    [
        ({"severity": ["medium"]}, True),
        ({"severity": ["high", "critical"]}, False),
        ({"finding_count": [{"numeric": [">=", 2]}]}, True),
        ({"finding_count": [{"numeric": [">=", 10]}]}, False),
        ({"alert_count": [{"numeric": [">=", 3]}]}, True),
        ({"alert_count": [{"numeric": [">", 3]}]}, False),
        ({"pushed": [True]}, True),
        ({"pushed": [False]}, False),
        ({"account_ids": [OTHER]}, True),
        ({"account_ids": ["999999999999"]}, False),
        ({"detection_id": [DETECTION.id], "regions": [REGION]}, True),
    ],
)
def test_filter_policies_on_the_message_body(policy: dict[str, Any], delivered: bool) -> None:
    """Each policy (FilterPolicyScope: MessageBody) judged against the JSON body an SQS or
    HTTPS subscriber gets, by moto's implementation of SNS filter policies. moto judges a
    MessageStructure=json publish by its envelope ({"default": ..., "email": ...}) rather than
    by the body each protocol gets, so the body is judged directly here; which one real SNS
    judges is not verified (docs/operations.md says so)."""
    from moto.sns.utils import FilterPolicyMatcher

    body = json.loads(json.loads(one_message().message)["default"])
    matcher = FilterPolicyMatcher(policy, "MessageBody")
    assert matcher.matches(None, json.dumps(body)) is delivered


def test_the_documented_filter_policy_matches_our_body() -> None:
    """The example in docs/operations.md, against a digest with a push and one without."""
    from moto.sns.utils import FilterPolicyMatcher

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    example = doc.split("<!-- filter-policy -->", 2)[1].split("```")[1]
    policy = json.loads(example.removeprefix("json").strip())
    matcher = FilterPolicyMatcher(policy, "MessageBody")
    pushed = json.loads(json.loads(one_message().message)["default"])
    failed = rollup([finding(0, succeeded=False), finding(1, succeeded=False)])
    tried = json.loads(json.loads(digest.message(failed).message)["default"])
    assert matcher.matches(None, json.dumps(pushed))
    assert not matcher.matches(None, json.dumps(tried))


def test_a_flood_of_principals_arrives_as_one_message(aws: None) -> None:
    """3,000 principals with long, hostile user agents: one notification, valid JSON, every
    alert in it or counted as omitted."""
    sns, topic = make_topic()
    url = subscribe_queue(sns, topic, "flood")
    hostile = 'Mozilla/5.0 \x1b[31m\u202e"' + "\U0001f600" * 2000
    flood = rollup(finding(i, user_agent=f"{hostile}{i}", succeeded=i == 2999) for i in range(3000))
    message = digest.message(flood)
    ids = SnsPublisher(topic, client=sns).publish([message])
    [note] = drain(url)
    assert note["MessageId"] == ids[0]
    assert len(note["Message"].encode()) < SNS_LIMIT
    doc = json.loads(note["Message"])
    shown, omitted = doc["alerts"], doc["omitted"]
    assert len(shown) + omitted["alerts"] == doc["alert_count"] == 3000
    assert sum(r["count"] for r in shown) + omitted["pushes"] == sum(a.count for a in flood)
    assert shown[0]["principal"] == f"arn:aws:iam::{ACCOUNT}:user/u2999"  # the push first
    assert doc["alert_count"] == 3000
    assert note["Subject"].endswith("(+2999 more)")


# --- retries (Stubber) -----------------------------------------------------------------------


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def stubbed(max_attempts: int = 4) -> tuple[SnsPublisher, Stubber, FakeSleep]:
    client = boto3.client(
        "sns", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    sleep = FakeSleep()
    return (
        SnsPublisher(TOPIC, client, max_attempts=max_attempts, sleep=sleep),
        Stubber(client),
        sleep,
    )


def expected(message: digest.Message) -> dict[str, Any]:
    return {
        "TopicArn": TOPIC,
        "Subject": message.subject,
        "Message": message.message,
        "MessageStructure": "json",
    }


def test_throttling_is_retried_once_then_succeeds() -> None:
    publisher, stub, sleep = stubbed()
    message = one_message()
    stub.add_client_error("publish", "Throttling", "Rate exceeded", 400, expected(message))
    stub.add_response("publish", {"MessageId": "m-1"}, expected(message))
    with stub:
        assert publisher.publish([message]) == ["m-1"]
    stub.assert_no_pending_responses()
    assert len(sleep.calls) == 1 and 0 < sleep.calls[0] <= MAX_DELAY_S


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttled", 429),
        ("ThrottlingException", 400),
        ("ThrottledException", 400),
        ("KMSThrottling", 400),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
        ("SomethingNew", 502),  # unknown code, server-side status
    ],
)
def test_transient_errors_are_retried(code: str, status: int) -> None:
    publisher, stub, sleep = stubbed()
    message = one_message()
    stub.add_client_error("publish", code, "try again", status)
    stub.add_response("publish", {"MessageId": "m-2"}, expected(message))
    with stub:
        assert publisher.publish([message]) == ["m-2"]
    assert len(sleep.calls) == 1


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AuthorizationError", 403),
        ("NotFound", 404),
        ("InvalidParameter", 400),
        ("KMSDisabled", 400),
    ],
)
def test_permanent_errors_fail_at_once(code: str, status: int) -> None:
    publisher, stub, sleep = stubbed()
    # The message text says "throttled": only the code counts.
    stub.add_client_error("publish", code, "Request throttled, rate exceeded", status)
    with stub, pytest.raises(PublishFailed) as caught:
        publisher.publish([one_message()])
    assert sleep.calls == []
    assert caught.value.target == "sns"
    assert code in caught.value.reason and "not retryable" in caught.value.reason
    assert isinstance(caught.value.__cause__, ClientError)


def test_a_persistent_server_error_fails_after_max_attempts() -> None:
    publisher, stub, sleep = stubbed(max_attempts=4)
    for _ in range(4):
        stub.add_client_error("publish", "InternalError", "boom", 500)
    with stub, pytest.raises(PublishFailed) as caught:
        publisher.publish([one_message()])
    stub.assert_no_pending_responses()
    assert len(sleep.calls) == 3
    assert sleep.calls == sorted(sleep.calls)  # backoff grows (jitter stays within a step)
    for attempt, delay in enumerate(sleep.calls, 1):
        ceiling = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert "after 4 attempt(s)" in caught.value.reason
    assert isinstance(caught.value.__cause__, ClientError)


def test_failure_on_a_later_message_says_how_many_were_published() -> None:
    publisher, stub, _ = stubbed(max_attempts=1)
    messages = [one_message(), digest.message(rollup([finding(7)]))]
    stub.add_response("publish", {"MessageId": "m-1"}, expected(messages[0]))
    stub.add_client_error("publish", "Throttling", "slow down", 400, expected(messages[1]))
    with stub, pytest.raises(PublishFailed) as caught:
        publisher.publish(messages)
    assert "message 2/2 (1 alert(s))" in caught.value.reason
    assert "after 1 attempt(s)" in caught.value.reason
    assert "1 message(s) published before it" in caught.value.reason


def test_publishing_nothing_calls_nothing() -> None:
    publisher, stub, sleep = stubbed()
    with stub:
        assert publisher.publish([]) == []
    assert sleep.calls == []


def test_retryable_judges_codes_and_status_not_text() -> None:
    def error(code: str, status: int, text: str = "") -> ClientError:
        response: Any = {
            "Error": {"Code": code, "Message": text},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return ClientError(response, "Publish")

    assert retryable(error("Throttling", 400))
    assert retryable(error("Anything", 500))
    assert not retryable(error("AuthorizationError", 403, "Throttling, rate exceeded"))
    assert not retryable(ValueError("Throttling"))
    assert retryable(EndpointConnectionError(endpoint_url="https://sns.example"))
    assert retryable(ReadTimeoutError(endpoint_url="https://sns.example"))
    assert not retryable(ParamValidationError(report="bad"))


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SnsPublisher(TOPIC, max_attempts=0)


def test_stubbed_publish_sends_json_structure_and_no_attributes() -> None:
    publisher, stub, _ = stubbed()
    message = one_message()
    stub.add_response(
        "publish",
        {"MessageId": "m-9"},
        {
            "TopicArn": TOPIC,
            "Subject": ANY,
            "Message": ANY,
            "MessageStructure": "json",
        },
    )
    with stub:
        assert publisher.publish([message]) == ["m-9"]
    stub.assert_no_pending_responses()
    envelope = json.loads(message.message)
    assert set(envelope) == {"default", "email"}
    assert json.loads(envelope["default"])["alert_count"] == 3
