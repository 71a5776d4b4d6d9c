"""The moto world the handler tests run in: bucket with both sample objects, allowlist
parameter, findings topic with a queue subscribed, Security Hub."""

from __future__ import annotations

import io
import json
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
