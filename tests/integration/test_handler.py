"""The Lambda handler under moto: notifications in, SSM allowlist, SNS + Security Hub out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector import handler
from detector.errors import ConfigError
from detector.notifications import UnknownEvent
from tests import lake
from tests.integration.world import BUCKET, INTRUDER, K1, K2, PARAM, Aws, Context, load


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
