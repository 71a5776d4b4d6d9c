"""DynamoDB adapter: the state that makes alerting exactly-once (table named by STATE_TABLE).

One table, partition key ``pk`` (string), TTL attribute ``expires_at`` (epoch seconds). Items:

- ``obj#<bucket>/<key>#<etag>``: an object's processing. ``IN_PROGRESS`` with a lease while an
  invocation works on it, ``COMPLETED`` once its findings were delivered. A completed object
  announced again is skipped: it neither counts nor alerts twice.
- ``key#<finding hash>``: the cumulative finding of one grouping key (total count, first and
  last time, when it was first created) and when it last alerted through SNS (``alerted_at``,
  with ``alert_lease`` while an alert is being sent).
- ``part#<finding hash>#<object hash>``: the marker that one object's events were added to a
  key's totals. Written in the same transaction as the totals, so a retry never adds twice.

Totals use optimistic concurrency (a ``version`` attribute) so concurrent invocations never lose
an update.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.errors import DetectorError
from detector.findings import Finding, max_opt, min_opt
from detector.objects import ObjectRef

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
DAY = 86_400
# Longer than SQS can keep a message (14 days): a redelivery always finds its marker.
OBJECT_TTL = 15 * DAY
# Security Hub keeps findings 90 days; the cumulative totals live as long.
KEY_TTL = 90 * DAY
_MAX_CONFLICTS = 20


class StateUnavailable(DetectorError):
    """The state table could not be read or written (after botocore's retries)."""


@dataclass(frozen=True)
class Totals:
    """A key's cumulative numbers over every object ever counted for it."""

    count: int
    first_ms: int | None
    last_ms: int | None
    created_at: int  # epoch seconds the key was first seen, for a stable ASFF CreatedAt
    version: int = 0  # grows with every change: tells a stale copy from the current one


def object_id(ref: ObjectRef) -> str:
    return f"{ref.bucket or 'file'}/{ref.key}#{(ref.etag or '').strip(chr(34))}"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _opt_int(item: dict[str, Any], name: str) -> int | None:
    raw = item.get(name)
    return int(raw["N"]) if raw and "N" in raw else None


class StateTable:
    def __init__(
        self,
        table: str,
        client: DynamoDBClient | None = None,
        *,
        lease_seconds: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self._client = client
        self._lock = threading.Lock()
        self.lease_seconds = lease_seconds
        self.clock = clock

    @property
    def client(self) -> DynamoDBClient:
        # Objects are claimed from several threads; building a boto3 client is not thread-safe.
        with self._lock:
            if self._client is None:
                self._client = boto3.client("dynamodb", config=_RETRIES)
            return self._client

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """Call the API; a failed condition is the caller's to handle, anything else is named."""
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _code(exc) in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise
            raise StateUnavailable(f"DynamoDB table {self.table}: {what}: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StateUnavailable(f"DynamoDB table {self.table}: {what}: {exc}") from exc

    # --- objects --------------------------------------------------------------------------
    def claim_object(self, ref: ObjectRef) -> Literal["new", "done", "busy"]:
        """Start work on an object: ``new`` (go), ``done`` (already delivered), ``busy``."""
        now = int(self.clock())
        pk = f"obj#{object_id(ref)}"
        try:
            self._call(
                "claim object",
                self.client.put_item,
                TableName=self.table,
                Item={
                    "pk": {"S": pk},
                    "status": {"S": "IN_PROGRESS"},
                    "lease_until": _n(now + self.lease_seconds),
                    "expires_at": _n(now + OBJECT_TTL),
                },
                # A lease left by an invocation that died is taken over once it has run out.
                ConditionExpression="attribute_not_exists(pk) OR "
                "(#s = :in_progress AND lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":in_progress": {"S": "IN_PROGRESS"}, ":now": _n(now)},
            )
        except ClientError:
            item = self._get(pk)
            return "done" if item.get("status", {}).get("S") == "COMPLETED" else "busy"
        return "new"

    def complete_objects(self, refs: Iterable[ObjectRef]) -> None:
        now = int(self.clock())
        for ref in refs:
            self._call(
                "complete object",
                self.client.put_item,
                TableName=self.table,
                Item={
                    "pk": {"S": f"obj#{object_id(ref)}"},
                    "status": {"S": "COMPLETED"},
                    "completed_at": _n(now),
                    "expires_at": _n(now + OBJECT_TTL),
                },
            )

    def release_objects(self, refs: Iterable[ObjectRef]) -> None:
        """Give up the lease so a retry can start at once (best effort: the lease expires)."""
        for ref in refs:
            try:
                self._call(
                    "release object",
                    self.client.delete_item,
                    TableName=self.table,
                    Key={"pk": {"S": f"obj#{object_id(ref)}"}},
                    ConditionExpression="#s = :in_progress",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":in_progress": {"S": "IN_PROGRESS"}},
                )
            except (ClientError, StateUnavailable):
                continue

    # --- cumulative totals ----------------------------------------------------------------
    def add(self, key_id: str, ref: ObjectRef, part: Finding) -> Totals:
        """Add one object's contribution to a key's totals, exactly once; the new totals."""
        pk = f"key#{key_id}"
        marker = f"part#{key_id}#{_h(object_id(ref))}"
        for _ in range(_MAX_CONFLICTS):
            now = int(self.clock())
            item = self._get(pk)
            version = _opt_int(item, "version")
            totals = _totals(item, now)
            new = Totals(
                count=totals.count + part.count,
                first_ms=min_opt(totals.first_ms, part.first_ms),
                last_ms=max_opt(totals.last_ms, part.last_ms),
                created_at=totals.created_at,
                version=(version or 0) + 1,
            )
            values: dict[str, Any] = {
                ":count": _n(new.count),
                ":created": _n(new.created_at),
                ":v": _n((version or 0) + 1),
                ":exp": _n(now + KEY_TTL),
            }
            sets = ["#count = :count", "created_at = :created", "version = :v", "expires_at = :exp"]
            for name, value in (("first_ms", new.first_ms), ("last_ms", new.last_ms)):
                if value is not None:
                    sets.append(f"{name} = :{name}")
                    values[f":{name}"] = _n(value)
            if version is None:
                condition = "attribute_not_exists(pk)"
            else:
                condition = "version = :old"
                values[":old"] = _n(version)
            try:
                self._call(
                    "add to totals",
                    self.client.transact_write_items,
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": {"pk": {"S": marker}, "expires_at": _n(now + OBJECT_TTL)},
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": {"pk": {"S": pk}},
                                "UpdateExpression": "SET " + ", ".join(sets),
                                "ConditionExpression": condition,
                                "ExpressionAttributeNames": {"#count": "count"},
                                "ExpressionAttributeValues": values,
                            }
                        },
                    ],
                )
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    # This object was already counted for this key (a retry): nothing to add.
                    return _totals(self._get(pk), now)
                if len(reasons) > 1 and reasons[1] in (
                    "ConditionalCheckFailed",
                    "TransactionConflict",
                ):
                    continue  # another invocation updated the totals first: read and retry
                raise StateUnavailable(
                    f"DynamoDB table {self.table}: add to totals: {_code(exc)} {reasons}"
                ) from exc
            return new
        raise StateUnavailable(f"DynamoDB table {self.table}: {pk} kept changing under us")

    def totals(self, key_id: str) -> Totals:
        """The key's current totals (consistent read)."""
        return _totals(self._get(f"key#{key_id}"), int(self.clock()))

    # --- the dedup window -----------------------------------------------------------------
    def claim_alert(self, key_id: str, window_seconds: int) -> bool:
        """True if this invocation should alert for the key (none sent within the window)."""
        now = int(self.clock())
        try:
            self._call(
                "claim alert",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"key#{key_id}"}},
                UpdateExpression="SET alert_lease = :lease",
                ConditionExpression="(attribute_not_exists(alerted_at) OR alerted_at <= :since) "
                "AND (attribute_not_exists(alert_lease) OR alert_lease < :now)",
                ExpressionAttributeValues={
                    ":lease": _n(now + self.lease_seconds),
                    ":since": _n(now - window_seconds),
                    ":now": _n(now),
                },
            )
        except ClientError:
            return False
        return True

    def confirm_alert(self, key_id: str) -> None:
        self._call(
            "confirm alert",
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": f"key#{key_id}"}},
            UpdateExpression="SET alerted_at = :now REMOVE alert_lease",
            ExpressionAttributeValues={":now": _n(int(self.clock()))},
        )

    def release_alert(self, key_id: str) -> None:
        """The alert was not sent: the next attempt may send it (not marked as alerted)."""
        with contextlib.suppress(StateUnavailable):  # else the lease runs out by itself
            self._call(
                "release alert",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"key#{key_id}"}},
                UpdateExpression="REMOVE alert_lease",
            )

    def _get(self, pk: str) -> dict[str, Any]:
        got = self._call(
            "read",
            self.client.get_item,
            TableName=self.table,
            Key={"pk": {"S": pk}},
            ConsistentRead=True,
        )
        item: dict[str, Any] = got.get("Item", {})
        return item


def _totals(item: dict[str, Any], now: int) -> Totals:
    return Totals(
        count=_opt_int(item, "count") or 0,
        first_ms=_opt_int(item, "first_ms"),
        last_ms=_opt_int(item, "last_ms"),
        created_at=_opt_int(item, "created_at") or now,
        version=_opt_int(item, "version") or 0,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
