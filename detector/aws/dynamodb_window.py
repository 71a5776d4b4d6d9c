"""The state table's alert window (``detector.aws.dynamodb``, key items ``key#<alert id>``):
whether an invocation may email about a key and why (``claim_alert``), the values held past a
window's escalation for the next email, confirming or releasing the claim once the email went
out or not, and Security Hub's RESOLVED ending a key's window once per resolution.
``StateTable`` is built from it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from detector.aws.dynamodb_items import (
    _MAX_CONFLICTS,
    KEY_TTL,
    MAX_REPORTED_REPOS,
    MAX_VALUE_CHARS,
    AlertClaim,
    StateUnavailable,
    _bool,
    _n,
    _opt_int,
    _strings,
)
from detector.report.alerts import FIRST_SUCCESS, NEW, NEW_VALUE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class _Table(Protocol):
    """What the alert window uses of ``StateTable``."""

    table: str
    lease_seconds: int
    clock: Callable[[], float]

    @property
    def client(self) -> DynamoDBClient: ...
    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any: ...
    def _get(self, pk: str) -> dict[str, Any]: ...
    def _hold(
        self,
        pk: str,
        version: int | None,
        held: frozenset[str],
        held_total: int,
        fresh: frozenset[str],
    ) -> bool: ...


class AlertWindow:
    """``StateTable``'s alert window and Security Hub's RESOLVED (a mixin)."""

    # --- the dedup window ---------------------------------------------------------------
    def claim_alert(
        self: _Table,
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
        self: _Table,
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

    def confirm_alert(self: _Table, key_id: str, claim: AlertClaim) -> None:
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

    def release_alert(self: _Table, key_id: str) -> None:
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

    # --- Security Hub's RESOLVED: the alert window ends once per resolution ------------------
    def resolutions_acted(self: _Table, key_ids: Iterable[str]) -> set[str]:
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

    def reopen_window(self: _Table, key_id: str) -> bool:
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

    def forget_resolution(self: _Table, key_id: str) -> None:
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
