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
  finding's RESOLVED workflow status was acted on (the window ended once; ``detector.mutes``).

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

from detector.analysis.findings import max_opt, min_opt
from detector.core.errors import DetectorError
from detector.core.objects import ObjectRef
from detector.report.alerts import FIRST_SUCCESS, MAX_DISTINCT, NEW, NEW_VALUE, Contribution

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
DAY = 86_400
# Longer than SQS can keep a message (14 days): a redelivery always finds its marker.
OBJECT_TTL = 15 * DAY
# Security Hub keeps findings 90 days; the cumulative totals live as long.
KEY_TTL = 90 * DAY
_MAX_CONFLICTS = 20
# Escalation values remembered per alert window. Each is cut to MAX_VALUE_CHARS, so the item
# stays far below DynamoDB's 400 KB whatever the data holds.
MAX_REPORTED_REPOS = 200
MAX_VALUE_CHARS = 256


class StateUnavailable(DetectorError):
    """The state table could not be read or written (after botocore's retries)."""


@dataclass(frozen=True)
class Totals(Contribution):
    """A key's cumulative numbers over every object ever counted for it."""

    created_at: int = 0  # epoch seconds the key was first seen, for a stable ASFF CreatedAt
    version: int = 0  # grows with every change: tells a stale copy from the current one


@dataclass(frozen=True)
class AlertClaim:
    """This invocation may email about a key: why, and what the window then remembers."""

    reason: str  # alerts.NEW, FIRST_SUCCESS or NEW_VALUE
    window_start: int  # alerted_at after the email: now for a new window, else unchanged
    success: bool  # a successful call has been reported in the window
    reported: frozenset[str]  # escalation values of successful calls reported in the window
    # More values were reported in the window than ``reported`` can hold: none is new again.
    overflow: bool = False
    escalated: bool = False  # the window's one NEW_VALUE email is used (by this one or before)
    # Values held since the last email (past a window's escalation), to list in this one, and
    # how many distinct values were held in all.
    held: frozenset[str] = frozenset()
    held_total: int = 0
    # For a new window: what the key's last window reported (values, and whether more than
    # could be remembered). A muted key escalates on a successful value outside it.
    before: frozenset[str] = frozenset()
    before_overflow: bool = False


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

    # --- the dedup window ---------------------------------------------------------------
    def claim_alert(
        self,
        key_id: str,
        window_seconds: int,
        *,
        success: bool = False,
        values: Iterable[str] = (),
    ) -> AlertClaim | None:
        """Whether this invocation should email about the key, and why; None if not.

        Due when no email went out within the window (``NEW``), or, within it, when this is
        the first successful call after failures only (``FIRST_SUCCESS``) or, once per window,
        a successful call with an escalation value not reported yet (``NEW_VALUE``): at most
        three emails per key and window, however many new values an attacker makes. Values
        that come after the window's one escalation are not emailed then: they are held
        (``held_repos``, at most ``MAX_REPORTED_REPOS``, with an exact count) and listed in the
        key's next email. A value once reported in a window is never reported as new again in
        it: when more were reported than the item can remember (``reported_overflow``), no
        value counts as new for the rest of the window.

        What an invocation holding the lease is about to send counts as reported: it sends
        it, or fails and its retry does. The lease records what this one will send, for the
        same reason.
        """
        pk = f"key#{key_id}"
        cut = sorted({v[:MAX_VALUE_CHARS] for v in values})
        ours = frozenset(cut[:MAX_REPORTED_REPOS])
        ours_overflow = len(cut) > MAX_REPORTED_REPOS
        for _ in range(_MAX_CONFLICTS):
            now = int(self.clock())
            item = self._get(pk)
            alerted_at = _opt_int(item, "alerted_at")
            in_window = alerted_at is not None and alerted_at > now - window_seconds
            lease = _opt_int(item, "alert_lease")
            leased = lease is not None and lease >= now
            reported = _strings(item, "reported_repos") if in_window else frozenset()
            pending = _strings(item, "pending_repos") if leased else frozenset()
            reported_ok = in_window and _bool(item, "alerted_success")
            pending_ok = leased and _bool(item, "pending_success")
            escalated = (in_window and _bool(item, "alerted_escalation")) or (
                leased and _bool(item, "pending_escalation")
            )
            overflow = (in_window and _bool(item, "reported_overflow")) or (
                leased and _bool(item, "pending_overflow")
            )
            fresh = frozenset() if overflow else ours - reported - pending
            held = _strings(item, "held_repos")
            held_total = _opt_int(item, "held_total") or 0
            version = _opt_int(item, "alert_v")
            if not (in_window or leased):
                reason = NEW
            elif success and not (reported_ok or pending_ok):
                reason = FIRST_SUCCESS
            elif fresh and not escalated:
                reason = NEW_VALUE
            else:
                # Past the window's escalation: hold the new values for the next email.
                if fresh and not self._hold(pk, version, held, held_total, fresh):
                    continue  # the window changed under us: look again
                return None
            remembered = reported | ours
            claim = AlertClaim(
                reason=reason,
                window_start=alerted_at if in_window and alerted_at is not None else now,
                success=reported_ok or success,
                reported=frozenset(sorted(remembered)[:MAX_REPORTED_REPOS]),
                overflow=overflow or ours_overflow or len(remembered) > MAX_REPORTED_REPOS,
                escalated=escalated or reason == NEW_VALUE,
                held=held,
                held_total=held_total,
                before=frozenset() if in_window else _strings(item, "reported_repos"),
                before_overflow=not in_window and _bool(item, "reported_overflow"),
            )
            attrs: dict[str, Any] = {
                ":lease": _n(now + self.lease_seconds),
                ":ps": {"BOOL": pending_ok or success},
                ":pe": {"BOOL": claim.escalated and not (in_window and escalated)},
                ":po": {"BOOL": claim.overflow},
                ":v1": _n((version or 0) + 1),
                ":exp": _n(now + KEY_TTL),
            }
            update = (
                "SET alert_lease = :lease, pending_success = :ps, pending_escalation = :pe, "
                "pending_overflow = :po, alert_v = :v1, "
                "expires_at = if_not_exists(expires_at, :exp)"
            )
            pending_next = pending | ours
            if pending_next:
                update += ", pending_repos = :pr"
                attrs[":pr"] = {"SS": sorted(pending_next)[:MAX_REPORTED_REPOS]}
            if version is None:
                condition = "attribute_not_exists(alert_v)"
            else:
                condition = "alert_v = :v0"
                attrs[":v0"] = _n(version)
            try:
                self._call(
                    "claim alert",
                    self.client.update_item,
                    TableName=self.table,
                    Key={"pk": {"S": pk}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=attrs,
                )
            except ClientError:
                continue  # another invocation changed the window first: look again
            return claim
        raise StateUnavailable(f"DynamoDB table {self.table}: {pk} alert window kept changing")

    def _hold(
        self,
        pk: str,
        version: int | None,
        held: frozenset[str],
        held_total: int,
        fresh: frozenset[str],
    ) -> bool:
        """Add ``fresh`` to the values held for the key's next email; False if the window
        changed meanwhile (the caller looks again). Bounded: at most ``MAX_REPORTED_REPOS``
        values are kept, ``held_total`` counts every distinct one added."""
        new = fresh - held
        if not new:
            return True
        kept = sorted(held | new)[:MAX_REPORTED_REPOS]
        attrs: dict[str, Any] = {
            ":h": {"SS": kept},
            ":ht": _n(held_total + len(new)),
            ":v1": _n((version or 0) + 1),
        }
        condition = "attribute_not_exists(alert_v)"
        if version is not None:
            condition = "alert_v = :v0"
            attrs[":v0"] = _n(version)
        try:
            self._call(
                "hold values",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": pk}},
                UpdateExpression="SET held_repos = :h, held_total = :ht, alert_v = :v1",
                ConditionExpression=condition,
                ExpressionAttributeValues=attrs,
            )
        except ClientError:
            return False
        return True

    def confirm_alert(self, key_id: str, claim: AlertClaim) -> None:
        """The email went out: record the window and what it reported; drop the lease and the
        values held for this email."""
        values: dict[str, Any] = {
            ":at": _n(claim.window_start),
            ":ok": {"BOOL": claim.success},
            ":esc": {"BOOL": claim.escalated},
            ":of": {"BOOL": claim.overflow},
        }
        update = (
            "SET alerted_at = :at, alerted_success = :ok, alerted_escalation = :esc, "
            "reported_overflow = :of"
        )
        remove = [
            "alert_lease",
            "pending_repos",
            "pending_success",
            "pending_escalation",
            "pending_overflow",
        ]
        if claim.reported:
            update += ", reported_repos = :r"
            values[":r"] = {"SS": sorted(claim.reported)}
        else:
            remove.append("reported_repos")
        if claim.held:
            # Shown in this email: held values added meanwhile (a new hold) stay for the next.
            update += ", held_total = held_total - :hn"
            values[":hn"] = _n(claim.held_total)
            update += " DELETE held_repos :hv"
            values[":hv"] = {"SS": sorted(claim.held)}
        self._call(
            "confirm alert",
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": f"key#{key_id}"}},
            UpdateExpression=update + " REMOVE " + ", ".join(remove),
            ExpressionAttributeValues=values,
        )

    def release_alert(self, key_id: str) -> None:
        """The alert was not sent: the next attempt may send it (not marked as alerted)."""
        with contextlib.suppress(StateUnavailable):  # else the lease runs out by itself
            self._call(
                "release alert",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"key#{key_id}"}},
                UpdateExpression="REMOVE alert_lease, pending_repos, pending_success, "
                "pending_escalation, pending_overflow",
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

    # --- Security Hub's RESOLVED: the alert window ends once per resolution ------------------
    def resolutions_acted(self, key_ids: Iterable[str]) -> set[str]:
        """The keys whose finding's RESOLVED status was acted on already (``hub_resolved``):
        one consistent ``BatchGetItem`` per 100 keys."""
        ids = list(dict.fromkeys(key_ids))
        acted: set[str] = set()
        for start in range(0, len(ids), 100):
            keys: list[dict[str, Any]] = [
                {"pk": {"S": f"key#{k}"}} for k in ids[start : start + 100]
            ]
            for _ in range(_MAX_CONFLICTS):
                got = self._call(
                    "read resolutions",
                    self.client.batch_get_item,
                    RequestItems={
                        self.table: {
                            "Keys": keys,
                            "ConsistentRead": True,
                            "ProjectionExpression": "pk, hub_resolved",
                        }
                    },
                )
                for item in got.get("Responses", {}).get(self.table, []):
                    if _bool(item, "hub_resolved"):
                        acted.add(item["pk"]["S"].removeprefix("key#"))
                keys = got.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
                time.sleep(0.05)
            else:
                raise StateUnavailable(f"DynamoDB table {self.table}: read resolutions: throttled")
        return acted

    def reopen_window(self, key_id: str) -> bool:
        """The key's finding was RESOLVED: end its alert window (its next push is a new alert)
        and remember that this resolution was acted on. False if it already was (by another
        invocation, say). Values held for the next email stay held."""
        try:
            self._call(
                "reopen alert window",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"key#{key_id}"}},
                UpdateExpression="SET hub_resolved = :t, "
                "alert_v = if_not_exists(alert_v, :zero) + :one "
                "REMOVE alerted_at, alerted_success, alerted_escalation, reported_repos, "
                "reported_overflow",
                # Bumping alert_v makes a concurrent claim look at the window again.
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(hub_resolved)",
                ExpressionAttributeValues={":t": {"BOOL": True}, ":zero": _n(0), ":one": _n(1)},
            )
        except ClientError:
            return False
        return True

    def forget_resolution(self, key_id: str) -> None:
        """The key's finding is no longer RESOLVED: a later resolution is acted on again."""
        with contextlib.suppress(ClientError):
            self._call(
                "forget resolution",
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"key#{key_id}"}},
                UpdateExpression="REMOVE hub_resolved",
                ConditionExpression="attribute_exists(hub_resolved)",
            )


def _strings(item: dict[str, Any], name: str) -> frozenset[str]:
    raw = item.get(name)
    return frozenset(raw["SS"]) if raw and "SS" in raw else frozenset()


def _bool(item: dict[str, Any], name: str) -> bool:
    raw = item.get(name)
    return bool(raw and raw.get("BOOL"))


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
