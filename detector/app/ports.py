"""What the pipeline reads from and writes to, as protocols: the allowlist and the announced
objects, the alert sinks, and the state table that makes alerting exactly-once. The AWS adapters
(``detector.aws``) and ``detector.app.sinks`` implement them; tests stand in for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Literal, Protocol

from detector.core.allowlist import Allowlist
from detector.core.objects import ObjectRef
from detector.report.alerts import Alert, Contribution, CountsLike

if TYPE_CHECKING:
    from detector.aws.dynamodb_items import AlertClaim
    from detector.aws.securityhub import Report


class AllowlistSource(Protocol):
    def get(self) -> Allowlist: ...


class ObjectSource(Protocol):
    def open(self, ref: ObjectRef) -> IO[bytes]: ...


class AlertSink(Protocol):
    def security_hub(
        self,
        alerts: Sequence[Alert],
        created_at: Mapping[str, int] | None = None,
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report: ...

    def notify(self, alerts: Sequence[Alert]) -> None: ...


class Totals(CountsLike, Protocol):
    """An alert key's cumulative numbers, as the state table keeps them."""

    @property
    def created_at(self) -> int: ...
    @property
    def version(self) -> int: ...


class StateStore(Protocol):
    def claim_object(self, ref: ObjectRef) -> Literal["new", "done", "busy"]: ...
    def complete_objects(self, refs: Sequence[ObjectRef]) -> None: ...
    def release_objects(self, refs: Sequence[ObjectRef]) -> None: ...
    def add(self, key_id: str, ref: ObjectRef, part: Contribution) -> Totals: ...
    def totals(self, key_id: str) -> Totals: ...
    def claim_alert(
        self,
        key_id: str,
        window_seconds: int,
        *,
        success: bool = False,
        values: Iterable[str] = (),
    ) -> AlertClaim | None: ...
    def confirm_alert(self, key_id: str, claim: AlertClaim) -> None: ...
    def release_alert(self, key_id: str) -> None: ...
    # Which sink got what (see ``detector.app.pipeline``).
    def email_handled(self, ref: ObjectRef) -> int | None: ...
    def mark_email_handled(self, refs: Sequence[ObjectRef]) -> None: ...
    def count_security_hub_retry(self, refs: Sequence[ObjectRef]) -> None: ...
    def security_hub_version(self, key_id: str) -> int: ...
    def record_security_hub(self, key_id: str, version: int) -> None: ...
    # Security Hub's RESOLVED ends the alert window once (``detector.report.mutes``).
    def resolutions_acted(self, key_ids: Iterable[str]) -> set[str]: ...
    def reopen_window(self, key_id: str) -> bool: ...
    def forget_resolution(self, key_id: str) -> None: ...
