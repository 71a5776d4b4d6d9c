"""The moto world the handler tests run in: bucket with both sample objects, allowlist
parameter, findings topic with a queue subscribed, Security Hub."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import boto3

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


# The ETag the sample events in events/ announce: no object the tests write has it, and every
# GET is pinned to the announced ETag (IfMatch), so tests drop it and let the first GET learn
# the real one, as for an announcement that carries none.
SAMPLE_ETAG = "b1946ac92492d2347c6235b4d2611184"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = _without_sample_etag(json.loads((EVENTS / name).read_text()))
    return loaded


def _without_sample_etag(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_sample_etag(v)
            for k, v in value.items()
            if not (k in ("etag", "eTag") and v == SAMPLE_ETAG)
        }
    if isinstance(value, list):
        return [_without_sample_etag(v) for v in value]
    if isinstance(value, str) and value.startswith("{"):
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        return json.dumps(_without_sample_etag(inner))
    return value


def parquet(events: list[dict[str, Any]], version: int) -> bytes:
    buf = io.BytesIO()
    lake.write_object(buf, events, version)
    return buf.getvalue()


def findings_inbox(sns: Any, sqs: Any) -> tuple[str, str]:
    """A findings topic with a queue subscribed, so tests read what was published."""
    topic = sns.create_topic(Name="findings")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"])
    return topic, queue


def read_digests(sqs: Any, queue: str) -> list[dict[str, Any]]:
    """Every digest delivered to the queue so far (the JSON body), consumed."""
    out = []
    while msgs := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            out.append(json.loads(json.loads(m["Body"])["Message"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    return out


# The state table's name in tests (the ``state`` fixture of conftest.py).
STATE_TABLE = "ecr-upload-detector-state"


def end_windows(table: str = STATE_TABLE) -> None:
    """Move every alert window two hours into the past: the next email opens a new one."""
    db = boto3.client("dynamodb")
    for item in db.scan(TableName=table)["Items"]:
        if item["pk"]["S"].startswith("key#") and "alerted_at" in item:
            db.update_item(
                TableName=table,
                Key={"pk": item["pk"]},
                UpdateExpression="SET alerted_at = :old",
                ExpressionAttributeValues={":old": {"N": str(int(time.time()) - 7200)}},
            )


def create_state_table(name: str) -> None:
    """The state table as template.yaml defines it: key `pk` (string)."""
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


class Aws:
    """The moto world one test runs in."""

    def __init__(self) -> None:
        self.s3 = boto3.client("s3")
        self.ssm = boto3.client("ssm")
        self.sns = boto3.client("sns")
        self.sqs = boto3.client("sqs")
        self.hub = boto3.client("securityhub")
        self.s3.create_bucket(Bucket=BUCKET)
        self.topic, self.queue = findings_inbox(self.sns, self.sqs)
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
        return read_digests(self.sqs, self.queue)
