"""Bad input through the handler: each named in one line, counted, harmless to the rest."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from detector import handler
from tests import lake
from tests.integration.world import BUCKET, PARAM, Aws, Context, load

K_GOOD = lake.key_for(2, name="good")
K_BAD = lake.key_for(2, name="bad")
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"
CONTROL = "".join(chr(c) for c in range(32) if c not in (9, 10, 13))


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [str(getattr(r, "error", "")) for r in self.records if r.levelno >= logging.ERROR]


@pytest.fixture
def logs() -> Iterator[Records]:
    rec = Records()
    target = logging.getLogger(handler.SERVICE)
    target.addHandler(rec)
    yield rec
    target.removeHandler(rec)


def parquet(events: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    lake.write_object(buf, events, 2)
    return buf.getvalue()


def two_records(bad_key: str = K_BAD) -> dict[str, Any]:
    event = load("sqs-security-lake-subscriber.json")
    for record, key in zip(event["Records"], (K_GOOD, bad_key), strict=True):
        body = json.loads(record["body"])
        body["detail"]["object"]["key"] = key
        record["body"] = json.dumps(body)
    return event


def raw_digests(aws: Aws) -> list[str]:
    """The JSON bodies delivered to the inbox queue, as the text SNS sent (consumed)."""
    out = []
    while msgs := aws.sqs.receive_message(QueueUrl=aws.queue, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for m in msgs:
            out.append(json.loads(m["Body"])["Message"])
            aws.sqs.delete_message(QueueUrl=aws.queue, ReceiptHandle=m["ReceiptHandle"])
    return out


def good_object() -> bytes:
    return parquet([lake.event(arn=INTRUDER, session_issuer=None)])


def other_schema() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (lambda: b"", "empty object"),
        (lambda: good_object()[:300], "truncated Parquet"),
        (lambda: b"eventVersion,eventName\n1.08,PutImage\n", "not Parquet"),
        (other_schema, "not a CloudTrail OCSF table"),
        (lambda: b"PAR1" + bytes(200) + b"PAR1", "corrupt Parquet footer"),
    ],
    ids=["empty", "truncated", "csv", "other-schema", "corrupt"],
)
def test_bad_object_fails_alone_named_in_one_line(aws: Aws, logs: Records, capsys, body, reason):
    aws.put(K_GOOD, good_object())
    aws.put(K_BAD, body())
    result = handler.lambda_handler(two_records(), Context())
    assert result == {
        "batchItemFailures": [{"itemIdentifier": "0c5b9e6a-6e1f-4f4a-9b5d-000000000002"}]
    }
    (digest,) = aws.digests()  # the good object's alert is published anyway
    (alert,) = digest["alerts"]
    assert (alert["principal"], alert["count"]) == (INTRUDER, 1)
    assert alert["findings"]["values"][0]["user"] == INTRUDER
    (error,) = logs.errors()
    assert error.startswith(f"s3://{BUCKET}/{K_BAD}: {reason}")
    assert "\n" not in error
    assert '"ItemsFailed":[1.0]' in capsys.readouterr().out


def test_unknown_record_shape_fails_alone(aws: Aws, logs: Records):
    aws.put(K_GOOD, good_object())
    event = two_records()
    event["Records"][1]["body"] = json.dumps({"Type": "Something else", "x": 1})
    result = handler.lambda_handler(event, Context())
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [
        "0c5b9e6a-6e1f-4f4a-9b5d-000000000002"
    ]
    assert "unknown notification shape" in logs.errors()[0]
    assert len(aws.digests()) == 1


def test_hostile_strings_in_every_field_are_delivered_safely(aws: Aws):
    hostile = "é😀\u202e" + CONTROL
    aws.put(
        K_GOOD,
        parquet(
            [
                lake.event(
                    arn=INTRUDER + hostile,
                    session_issuer=None,
                    user_agent="A" * 1_000_000 + hostile,
                    src_ip="198.51.100.7" + hostile,
                    src_domain="evil.example" + hostile,
                    region="us-east-1" + hostile,
                    account=lake.ACCOUNT + hostile,
                    principal_id="AIDA" + hostile,
                    event_uid="evt" + hostile,
                    request_json=lake.put_image_request("repo" + hostile, "tag" + hostile),
                )
            ]
        ),
    )
    event = two_records()
    event["Records"] = event["Records"][:1]
    assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
    (body,) = raw_digests(aws)
    assert body.isascii()  # ASCII JSON: control, bidi and separator characters escaped
    digest = json.loads(body)
    (alert,) = digest["alerts"]
    # The JSON keeps short data exactly ...
    assert alert["principal"] == INTRUDER + hostile
    assert alert["actor.user.account.uid"] == lake.ACCOUNT + hostile
    assert alert["sessions"]["values"] == [INTRUDER + hostile]
    assert alert["src_ips"]["values"] == ["198.51.100.7" + hostile]
    assert alert["regions"]["values"] == ["us-east-1" + hostile]
    assert alert["repositories"]["values"] == ["repo" + hostile]
    assert alert["image_tags"]["values"] == ["tag" + hostile]
    assert alert["event_ids"]["values"] == ["evt" + hostile]
    (finding,) = alert["findings"]["values"]
    assert finding["src_ip"] == "198.51.100.7" + hostile
    assert finding["src_endpoint.domain"] == "evil.example" + hostile
    # ... except what cannot fit SNS's 256 KiB: cut, and said so.
    (agent,) = alert["user_agents"]["values"]
    assert agent.startswith("AAAA") and agent.endswith("…") and len(agent) <= 512
    assert finding["user_agent"] == agent
    assert alert["truncated"]["text"] is True
    assert alert["user_agents"]["total"] == 1
    hub = aws.hub.get_findings()["Findings"]
    assert len(hub) == 1
    assert len(hub[0]["Title"]) <= 256 and len(hub[0]["Description"]) <= 1024
    assert not any(c in hub[0]["Title"] for c in CONTROL)
    fields = hub[0]["ProductFields"]
    assert fields["count"] == "1"
    assert fields["principal"].startswith(INTRUDER + "é😀")  # escaped, not dropped
    assert not any(c in value for value in fields.values() for c in CONTROL)


def test_email_and_subject_carry_no_control_characters(aws: Aws):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns import sns_backends

    aws.put(
        K_GOOD,
        parquet(
            [
                lake.event(
                    arn=INTRUDER + "\x1b[2J\r\nBcc: x",
                    session_issuer=None,
                    user_agent="ua\x00\x07" + "B" * 1_000_000,
                )
            ]
        ),
    )
    event = two_records()
    event["Records"] = event["Records"][:1]
    handler.lambda_handler(event, Context())
    (_, message, subject, _, _) = (
        sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].topics[aws.topic].sent_notifications[0]
    )
    assert len(subject) < 100 and not any(c in subject for c in CONTROL + "\r\n")
    email = json.loads(message)["email"]
    assert not any(c in email for c in CONTROL.replace("\x0c", ""))
    assert "\\x1b[2J" in email
    assert len(message.encode()) <= 256 * 1024


def test_garbage_allowlist_fails_every_record_naming_the_parameter(aws: Aws, logs: Records):
    aws.put(K_GOOD, good_object())
    aws.put(K_BAD, good_object())
    boto3.client("ssm").put_parameter(
        Name=PARAM,
        Value="arn:aws:iam::111122223333:role/ok\nnot valid",
        Overwrite=True,
        Type="String",
    )
    result = handler.lambda_handler(two_records(), Context())
    assert len(result["batchItemFailures"]) == 2
    (error,) = logs.errors()
    assert error.startswith(f"allowlist ssm:{PARAM}: line 2")
    assert aws.digests() == []
