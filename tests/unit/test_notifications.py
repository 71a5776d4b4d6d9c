"""Every notification shape of security-lake-facts §3, parsed to object references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.lake.notifications import UnknownEvent, parse
from tests import lake

EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "aws-security-data-lake-us-east-1-demo"
K1 = lake.key_for(1, name="demo-v1")
K2 = lake.key_for(2, name="demo-v2")


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def uris(batch) -> list[list[str]]:
    return [[r.uri for r in item.refs] for item in batch.items]


def test_security_lake_subscriber_queue_one_item_per_record():
    batch = parse(load("sqs-security-lake-subscriber.json"))
    assert batch.from_sqs
    assert [i.id for i in batch.items] == [
        "0c5b9e6a-6e1f-4f4a-9b5d-000000000001",
        "0c5b9e6a-6e1f-4f4a-9b5d-000000000002",
    ]
    assert uris(batch) == [[f"s3://{BUCKET}/{K2}"], [f"s3://{BUCKET}/{K1}"]]
    assert batch.items[0].refs[0].size == 24000


def test_eventbridge_direct():
    batch = parse(load("eventbridge-object-created.json"))
    assert not batch.from_sqs
    assert uris(batch) == [[f"s3://{BUCKET}/{K2}"]]


def test_plain_s3_notification_key_is_url_decoded():
    event = load("s3-notification.json")
    assert "%3D" in event["Records"][0]["s3"]["object"]["key"]
    batch = parse(event)
    assert uris(batch) == [[f"s3://{BUCKET}/{K1}"]]


def test_s3_notification_inside_sqs_and_inside_sns_inside_sqs():
    assert uris(parse(load("sqs-s3-notification.json"))) == [[f"s3://{BUCKET}/{K2}"]]
    assert uris(parse(load("sqs-sns-s3-notification.json"))) == [[f"s3://{BUCKET}/{K1}"]]


def test_sns_event_delivered_directly():
    inner = load("s3-notification.json")
    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(inner)}}]}
    assert uris(parse(event)) == [[f"s3://{BUCKET}/{K1}"]]


def test_plus_in_an_s3_notification_key_is_a_space():
    event = load("s3-notification.json")
    event["Records"][0]["s3"]["object"]["key"] = "aws/x/my+file%2B1.parquet"
    assert parse(event).items[0].refs[0].key == "aws/x/my file+1.parquet"


def test_s3_test_event_is_skipped_not_failed():
    batch = parse(load("sqs-s3-test-event.json"))
    (item,) = batch.items
    assert item.refs == [] and item.error is None
    assert "s3:TestEvent" in item.skipped[0]


@pytest.mark.parametrize(
    "key",
    [
        "aws/CLOUD_TRAIL_MGMT/2.0/metadata/00003-6a1f.metadata.json",
        "aws/CLOUD_TRAIL_MGMT/2.0/metadata/snap-123-1-abc.avro",
        "aws/CLOUD_TRAIL_MGMT/2.0/region=us-east-1/_SUCCESS",
    ],
)
def test_non_data_keys_are_skipped_with_a_reason(key: str):
    event = load("eventbridge-object-created.json")
    event["detail"]["object"]["key"] = key
    (item,) = parse(event).items
    assert item.refs == []
    assert key in item.skipped[0]


def test_unknown_direct_event_raises_naming_what_arrived():
    with pytest.raises(UnknownEvent, match=r"keys \[foo\]"):
        parse({"foo": 1})


def test_unknown_sqs_record_fails_alone():
    event = load("sqs-security-lake-subscriber.json")
    event["Records"][1]["body"] = "not json at all"
    batch = parse(event)
    assert batch.items[0].error is None and batch.items[0].refs
    assert batch.items[1].error is not None and "not JSON" in batch.items[1].error


def test_eventbridge_without_object_key_is_unknown():
    event = load("eventbridge-object-created.json")
    del event["detail"]["object"]
    with pytest.raises(UnknownEvent, match=r"object\.key"):
        parse(event)
