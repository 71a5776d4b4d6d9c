"""DynamoDB adapter: the state that makes alerting exactly-once (table named by STATE_TABLE).

One table, partition key ``pk`` (string), TTL attribute ``expires_at`` (epoch seconds). Items:

- ``obj#<bucket>/<key>#<etag>``: an object's processing. ``IN_PROGRESS`` with a lease while an
  invocation works on it, ``COMPLETED`` once its findings were delivered. A completed object
  announced again is skipped: it neither counts nor alerts twice.
- ``key#<alert id>``: the cumulative totals of one alert key (detection, account, principal:
  count, succeeded, failed, first and last time, when it was first created) and its alert
  window: when it last started an email window (``alerted_at``), whether a successful call
  was reported in it (``alerted_success``) and which values of the detection's escalation
  sample in successful calls were (``reported_repos``: the attribute name predates detection
  specs and is kept so deployed tables stay valid), with ``alert_lease`` and what the lease
  holder is about to report (``pending_*``) while an email is being sent.
- ``part#<alert id>#<object hash>``: the marker that one object's events were added to a
  key's totals. Written in the same transaction as the totals, so a retry never adds twice.
- ``mailed#<bucket>/<key>#<etag>``: which sink got what, for the email: the email decision for
  the object's alerts was made (the message sent, or held back by the window), so an attempt
  that is retried afterwards (for Security Hub's sake, say) does not email again, window or
  not; ``hub_retries`` counts how often Security Hub sent the object back. On the key item,
  ``hub_v``: the version of the totals Security Hub last got, and ``hub_resolved``: the
  finding's RESOLVED workflow status was acted on (the window ended once;
  ``detector.report.mutes``).

Totals use optimistic concurrency (a ``version`` attribute) so concurrent invocations never lose
an update.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.analysis.findings import max_opt, min_opt
from detector.aws.dynamodb_items import (
    _MAX_CONFLICTS,
    KEY_TTL,
    MAX_VALUE_CHARS,
    OBJECT_TTL,
    StateUnavailable,
    Totals,
    _n,
    _opt_int,
    _strings,
)
from detector.aws.dynamodb_window import AlertWindow
from detector.core.objects import ObjectRef
from detector.report.alerts import MAX_DISTINCT, Contribution

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})


def object_id(ref: ObjectRef) -> str:
    return f"{ref.bucket or 'file'}/{ref.key}#{(ref.etag or '').strip(chr(34))}"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class StateTable(AlertWindow):
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
    def add(self, key_id: str, ref: ObjectRef, part: Contribution) -> Totals:
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
                succeeded=totals.succeeded + part.succeeded,
                failed=totals.failed + part.failed,
                first_ms=min_opt(totals.first_ms, part.first_ms),
                last_ms=max_opt(totals.last_ms, part.last_ms),
                # A window detection's distinct values, bounded (``MAX_DISTINCT`` is far above
                # any threshold): values cut to ``MAX_VALUE_CHARS``, so the item stays small.
                distinct=frozenset(
                    sorted(totals.distinct | {v[:MAX_VALUE_CHARS] for v in part.distinct})[
                        :MAX_DISTINCT
                    ]
                ),
                created_at=totals.created_at,
                version=(version or 0) + 1,
            )
            values: dict[str, Any] = {
                ":count": _n(new.count),
                ":ok": _n(new.succeeded),
                ":bad": _n(new.failed),
                ":created": _n(new.created_at),
                ":v": _n((version or 0) + 1),
                ":exp": _n(now + KEY_TTL),
            }
            sets = [
                "#count = :count",
                "succeeded = :ok",
                "failed = :bad",
                "created_at = :created",
                "version = :v",
                "expires_at = :exp",
            ]
            for name, value in (("first_ms", new.first_ms), ("last_ms", new.last_ms)):
                if value is not None:
                    sets.append(f"{name} = :{name}")
                    values[f":{name}"] = _n(value)
            if new.distinct:  # a string set cannot be empty
                sets.append("distinct_values = :distinct")
                values[":distinct"] = {"SS": sorted(new.distinct)}
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

    # --- which sink got what: the email and Security Hub, each on its own ---------------------
    def email_handled(self, ref: ObjectRef) -> int | None:
        """Whether an earlier attempt settled the email for this object's alerts (sent it, or
        the window held it back): None if not, else how many times Security Hub has sent the
        object back for a retry since."""
        item = self._get(f"mailed#{object_id(ref)}")
        if not item:
            return None
        return _opt_int(item, "hub_retries") or 0

    def mark_email_handled(self, refs: Iterable[ObjectRef]) -> None:
        """The email for these objects' alerts is settled: a retry of them must not send it
        again. Keeps the count of Security Hub retries already recorded."""
        now = int(self.clock())
        for ref in refs:
            self._call(
                "record the email",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"mailed#{object_id(ref)}"}},
                UpdateExpression="SET expires_at = :exp, "
                "hub_retries = if_not_exists(hub_retries, :zero)",
                ExpressionAttributeValues={":exp": _n(now + OBJECT_TTL), ":zero": _n(0)},
            )

    def count_security_hub_retry(self, refs: Iterable[ObjectRef]) -> None:
        """Security Hub sent these objects back once more (their email is settled)."""
        now = int(self.clock())
        for ref in refs:
            self._call(
                "count a Security Hub retry",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"mailed#{object_id(ref)}"}},
                UpdateExpression="SET expires_at = :exp ADD hub_retries :one",
                ExpressionAttributeValues={":exp": _n(now + OBJECT_TTL), ":one": _n(1)},
            )

    def security_hub_version(self, key_id: str) -> int:
        """The version of the key's totals Security Hub last got (0: none recorded)."""
        return _opt_int(self._get(f"key#{key_id}"), "hub_v") or 0

    def record_security_hub(self, key_id: str, version: int) -> None:
        """Security Hub got the key's totals at ``version``; a newer record is kept."""
        try:
            self._call(
                "record Security Hub",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"key#{key_id}"}},
                UpdateExpression="SET hub_v = :v",
                # Never creates a key item (it would have no expiry), never goes backwards.
                ConditionExpression="attribute_exists(pk) AND "
                "(attribute_not_exists(hub_v) OR hub_v < :v)",
                ExpressionAttributeValues={":v": _n(version)},
            )
        except ClientError:
            return  # a newer version is recorded already (or the key is gone)


def _totals(item: dict[str, Any], now: int) -> Totals:
    return Totals(
        count=_opt_int(item, "count") or 0,
        succeeded=_opt_int(item, "succeeded") or 0,
        failed=_opt_int(item, "failed") or 0,
        first_ms=_opt_int(item, "first_ms"),
        last_ms=_opt_int(item, "last_ms"),
        distinct=_strings(item, "distinct_values"),
        created_at=_opt_int(item, "created_at") or now,
        version=_opt_int(item, "version") or 0,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
