"""Delivers one invocation's alerts to its two sinks: one SNS message, and Security Hub.

The two are independent: ``detector.app.pipeline`` sends the email first and never lets Security
Hub hold it back (an outage, throttling, Security Hub not enabled), then imports the findings
on their own, with their own retries; the state table records which sink got what, so a retry
for Security Hub's sake does not email again. A finding Security Hub rejects for good is
reported (``Report.rejected``), one it did not take (``SecurityHubFailed.report``: ``failed``
may import later, ``blocked`` will not) is left to the caller to retry, log and count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from detector.aws.securityhub import Report, SecurityHubPublisher
from detector.aws.sns import SnsPublisher
from detector.report import asff, digest
from detector.report.alerts import Alert


class Alerts:
    def __init__(
        self,
        sns: SnsPublisher,
        hub: SecurityHubPublisher | None,
        *,
        account_id: str,
        region: str,
        partition: str = "aws",
        context: dict[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sns = sns
        self.hub = hub
        self.account_id = account_id
        self.region = region
        self.partition = partition
        # Shown in the email's "Run" section (e.g. which allowlist parameter to edit).
        self.context = context or {}
        self.clock = clock

    def security_hub(
        self,
        alerts: Sequence[Alert],
        created_at: Mapping[str, int] | None = None,
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report:
        """Import (or update) one ASFF finding per alert; no-op when Security Hub is off
        (``Report.disabled``).

        ``created_at`` (epoch seconds per alert id) keeps ``CreatedAt`` stable for known keys.
        Raises ``SecurityHubFailed`` (with the report) if some findings were not imported.
        """
        if self.hub is None:
            return Report(disabled=True)
        if not alerts:
            return Report()
        now = self.clock()
        created = created_at or {}
        return self.hub.publish(
            [
                asff.to_asff(
                    a,
                    account_id=self.account_id,
                    region=self.region,
                    partition=self.partition,
                    now=now,
                    created_at=(
                        datetime.fromtimestamp(created[a.id], tz=UTC) if a.id in created else None
                    ),
                )
                for a in alerts
            ],
            deadline=deadline,
        )

    def notify(self, alerts: Sequence[Alert]) -> None:
        """One SNS message for every alert, whatever their number."""
        if alerts:
            self.sns.publish([digest.message(alerts, context=self.context)])
