"""What the state table's modules share (``detector.aws.dynamodb`` and its alert window,
``detector.aws.dynamodb_window``): the items' lifetimes and bounds, the error that the table
could not be used, the records read from a key item (totals, an alert claim), and the
conversions to and from DynamoDB's attribute values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detector.core.errors import DetectorError
from detector.report.alerts import Contribution

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


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _opt_int(item: dict[str, Any], name: str) -> int | None:
    raw = item.get(name)
    return int(raw["N"]) if raw and "N" in raw else None


def _strings(item: dict[str, Any], name: str) -> frozenset[str]:
    raw = item.get(name)
    return frozenset(raw["SS"]) if raw and "SS" in raw else frozenset()


def _bool(item: dict[str, Any], name: str) -> bool:
    raw = item.get(name)
    return bool(raw and raw.get("BOOL"))
