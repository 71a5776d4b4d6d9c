"""The Lambda handler under moto: notifications in, SSM allowlist, SNS + Security Hub out."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from detector import handler
from detector.core.errors import ConfigError
from detector.detection import DETECTION
from detector.lake.notifications import UnknownEvent
from detector.report.principals import AlertKey
from tests import lake
from tests.contract import JSONL_KEYS
from tests.integration.world import BUCKET, INTRUDER, K1, K2, PARAM, Aws, Context, load, parquet


def invoke(event: dict[str, Any]) -> Any:
    return handler.lambda_handler(event, Context())


def stdout_json(out: str) -> list[dict[str, Any]]:
    """The JSON lines powertools printed (structured logs and EMF metrics)."""
    lines = []
    for line in out.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


def metric(out: str, name: str) -> list[float]:
    """The values of one EMF metric printed to stdout."""
    (emf,) = [line for line in stdout_json(out) if "_aws" in line]
    value = emf[name]
    return value if isinstance(value, list) else [value]


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
    assert digest["detection"]["id"] == DETECTION.id
    assert (digest["alert_count"], digest["finding_count"]) == (1, 1)
    assert "omitted" not in digest
    (alert,) = digest["alerts"]
    assert alert["principal"] == INTRUDER
    assert alert["actor.user.account.uid"] == lake.ACCOUNT
    assert (alert["count"], alert["succeeded"], alert["failed"]) == (
        expected_count,
        expected_count,
        0,
    )
    assert alert["sessions"] == {"values": [INTRUDER], "total": 1}
    assert alert["repositories"] == {"values": ["app"], "total": 1}
    assert alert["findings"]["total"] == 1
    (finding,) = alert["findings"]["values"]
    assert list(finding)[: len(JSONL_KEYS)] == JSONL_KEYS
    assert finding["user"] == INTRUDER
    assert finding["count"] == expected_count
    hub = aws.hub.get_findings()["Findings"]
    assert len(hub) == 1
    assert hub[0]["ProductFields"]["principal"] == INTRUDER
    assert hub[0]["ProductFields"]["count"] == str(expected_count)
    key = AlertKey(DETECTION.id, lake.ACCOUNT, INTRUDER)
    assert hub[0]["Id"] == f"{DETECTION.id}/principal/{key.id}"


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
    (alert,) = digest["alerts"]  # the good object's alert is still published
    assert alert["principal"] == INTRUDER and alert["count"] == 1


def test_missing_object_is_logged_not_retried_forever(aws: Aws, capsys):
    aws.s3.delete_object(Bucket=BUCKET, Key=K2)
    result = invoke(load("sqs-security-lake-subscriber.json"))
    assert result == {"batchItemFailures": []}
    (digest,) = aws.digests()
    (alert,) = digest["alerts"]
    assert alert["count"] == 1  # the object still there is reported
    out = capsys.readouterr().out  # powertools Metrics prints EMF to stdout
    assert metric(out, "ObjectsMissing") == [1.0]


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


def test_direct_invocation_answers_with_alert_counts(aws: Aws):
    result = invoke(load("eventbridge-object-created.json"))
    assert result == {
        "objects": 1,
        "findings": 1,
        "alerts": 1,
        "alerted": 1,
        "already_processed": 0,
    }


def test_two_principals_are_two_alerts_in_one_message(aws: Aws, capsys):
    other = f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/builder/session-7"
    events = [
        lake.event(arn=INTRUDER, session_issuer=None),
        lake.event(arn=INTRUDER, session_issuer=None, user_agent="curl/8"),  # second group
        lake.event(arn=other, session_issuer=None, status="Failure"),
    ]
    aws.put(K2, parquet(events, 2))
    invoke(load("eventbridge-object-created.json"))
    (digest,) = aws.digests()
    assert (digest["alert_count"], digest["finding_count"]) == (2, 3)
    pushed, attempted = digest["alerts"]  # a successful push first
    assert (pushed["principal"], pushed["count"], pushed["groups"]) == (INTRUDER, 2, 2)
    assert attempted["principal"] == f"arn:aws:iam::{lake.ACCOUNT}:role/builder"
    assert attempted["sessions"]["values"] == [other]
    assert (attempted["succeeded"], attempted["failed"]) == (0, 1)
    hub = aws.hub.get_findings()["Findings"]
    fields = {h["ProductFields"]["principal"]: h["ProductFields"]["count"] for h in hub}
    assert fields == {INTRUDER: "2", f"arn:aws:iam::{lake.ACCOUNT}:role/builder": "1"}
    out = capsys.readouterr().out
    assert metric(out, "Findings") == [3.0]
    assert metric(out, "Alerts") == [2.0]
    assert metric(out, "Alerted") == [2.0]


def test_security_hub_rejection_is_logged_counted_and_email_still_sent(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys, caplog: pytest.LogCaptureFixture
):
    hub = handler.app(Context()).alerts.hub
    assert hub is not None
    sent: list[str] = []

    def reject_all(Findings: list[dict[str, Any]]) -> dict[str, Any]:
        sent.extend(f["Id"] for f in Findings)
        return {
            "SuccessCount": 0,
            "FailedCount": len(Findings),
            "FailedFindings": [
                {"Id": f["Id"], "ErrorCode": "InvalidInput", "ErrorMessage": "no thanks"}
                for f in Findings
            ],
        }

    monkeypatch.setattr(hub.client, "batch_import_findings", reject_all)
    result = invoke(load("sqs-security-lake-subscriber.json"))
    assert result == {"batchItemFailures": []}  # a permanent rejection is not retried
    expected_id = f"{DETECTION.id}/principal/{AlertKey(DETECTION.id, lake.ACCOUNT, INTRUDER).id}"
    assert sent == [expected_id]  # sent once: InvalidInput is not retried
    (digest,) = aws.digests()  # the email went out anyway
    assert digest["alerts"][0]["principal"] == INTRUDER
    assert aws.hub.get_findings()["Findings"] == []
    out = capsys.readouterr().out
    assert metric(out, "SecurityHubRejected") == [1.0]
    assert metric(out, "Alerted") == [1.0]
    assert metric(out, "ItemsFailed") == [0.0]
    (logged,) = [r for r in caplog.records if r.getMessage() == "Security Hub rejected a finding"]
    assert logged.levelno == logging.ERROR
    assert logged.__dict__["finding_id"] == expected_id  # an `extra` key
    assert "InvalidInput" in logged.__dict__["error"]
