"""Parse the ways new Security Lake objects are announced into object references.

Shapes accepted (see shared/reference/security-lake-facts.md §3):
- SQS records whose body is an EventBridge-style S3 "Object Created" event (the Security Lake
  subscriber queue), a plain S3 notification, or an SNS envelope around either;
- an EventBridge "Object Created" event delivered directly;
- a plain S3 notification delivered directly, or an SNS event around one.

Each SQS record is its own ``Item``, so one bad record can fail alone (partial batch response).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from detector.core.errors import DetectorError
from detector.core.objects import ObjectRef, is_data_key


class UnknownEvent(DetectorError):
    """An event or record of a shape this function does not handle."""


@dataclass
class Item:
    """One unit that succeeds or fails together: an SQS record, or the whole direct event."""

    id: str | None
    refs: list[ObjectRef] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Batch:
    from_sqs: bool
    items: list[Item]


def _describe(obj: Any) -> str:
    """A short description of what arrived, for an error message."""
    if isinstance(obj, dict):
        keys = ", ".join(sorted(str(k) for k in obj)[:8])
        return f"an object with keys [{keys}]"
    return f"a {type(obj).__name__}"


def _from_eventbridge(detail: Any, item: Item) -> None:
    if not isinstance(detail, dict):
        raise UnknownEvent(f"EventBridge event without a detail object: {_describe(detail)}")
    try:
        bucket = detail["bucket"]["name"]
        obj = detail["object"]
        key = obj["key"]
    except (KeyError, TypeError) as exc:
        raise UnknownEvent(
            f"S3 Object Created event without bucket.name/object.key: {_describe(detail)}"
        ) from exc
    # EventBridge keys are not URL-encoded (unlike S3 notifications).
    _add(item, bucket, key, obj.get("size"), obj.get("etag"), obj.get("version-id"))


def _from_s3_records(records: list[Any], item: Item) -> None:
    for rec in records:
        if not isinstance(rec, dict) or "s3" not in rec:
            raise UnknownEvent(f"S3 notification record without s3: {_describe(rec)}")
        try:
            bucket = rec["s3"]["bucket"]["name"]
            obj = rec["s3"]["object"]
            key = unquote_plus(obj["key"])
        except (KeyError, TypeError) as exc:
            raise UnknownEvent("S3 notification record without bucket.name/object.key") from exc
        _add(item, bucket, key, obj.get("size"), obj.get("eTag"), obj.get("versionId"))


def _add(item: Item, bucket: str, key: str, size: Any, etag: Any, version_id: Any) -> None:
    """One announced object. Its ETag and version (when the bucket is versioned) pin what is
    read (``detector.aws.s3``); a value of another type than text is not announced."""
    if not is_data_key(key):
        item.skipped.append(f"s3://{bucket}/{key}: not a Parquet data file")
        return
    item.refs.append(
        ObjectRef(
            key=key,
            bucket=bucket,
            size=size if isinstance(size, int) else None,
            etag=etag if isinstance(etag, str) and etag.strip('" ') else None,
            version_id=version_id if isinstance(version_id, str) and version_id else None,
        )
    )


def _from_message(msg: Any, item: Item, depth: int = 0) -> None:
    """One message: EventBridge event, S3 notification, S3 test event, or SNS envelope."""
    if depth > 2:
        raise UnknownEvent("notification nested too deeply")
    if isinstance(msg, str):
        try:
            msg = json.loads(msg)
        except ValueError as exc:
            raise UnknownEvent(f"message is not JSON: {msg[:80]!r}") from exc
    if not isinstance(msg, dict):
        raise UnknownEvent(f"unknown notification shape: {_describe(msg)}")
    if msg.get("Event") == "s3:TestEvent":
        item.skipped.append(f"s3:TestEvent for bucket {msg.get('Bucket')}")
        return
    if "detail" in msg and msg.get("source", "aws.s3") == "aws.s3":
        _from_eventbridge(msg["detail"], item)
        return
    if isinstance(msg.get("Records"), list):
        records = msg["Records"]
        if records and isinstance(records[0], dict) and "Sns" in records[0]:
            for rec in records:
                _from_message(rec["Sns"]["Message"], item, depth + 1)
            return
        _from_s3_records(records, item)
        return
    if msg.get("Type") == "Notification" and "Message" in msg:
        _from_message(msg["Message"], item, depth + 1)
        return
    raise UnknownEvent(f"unknown notification shape: {_describe(msg)}")


def parse(event: Any) -> Batch:
    """Split an invocation event into items. Raises ``UnknownEvent`` for an unknown direct event.

    An SQS record that cannot be understood becomes a failed item (retried, then dead-lettered)
    rather than failing or dropping its neighbours.
    """
    records = event.get("Records") if isinstance(event, dict) else None
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        items = []
        for rec in records:
            item = Item(id=str(rec.get("messageId")))
            try:
                _from_message(rec.get("body"), item)
            except UnknownEvent as exc:
                item.error = str(exc)
            items.append(item)
        return Batch(from_sqs=True, items=items)
    item = Item(id=None)
    _from_message(event, item)
    return Batch(from_sqs=False, items=[item])
