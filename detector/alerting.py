"""Delivers one invocation's findings: Security Hub first, then the SNS digest.

Security Hub goes first because re-importing a finding with the same Id only updates it: if SNS
then fails, the retry re-imports harmlessly and sends the email once. The other order would
email twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from detector import asff, digest
from detector.aws.securityhub import SecurityHubPublisher
from detector.aws.sns import SnsPublisher
from detector.findings import Finding, GroupKey


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

    def __call__(self, findings: Sequence[Finding]) -> None:
        self.security_hub(findings)
        self.notify(findings)

    def security_hub(
        self, findings: Sequence[Finding], created_at: Mapping[GroupKey, int] | None = None
    ) -> None:
        """Import (or update) one ASFF finding per finding; no-op when Security Hub is off.

        ``created_at`` (epoch seconds per key) keeps ``CreatedAt`` stable for known keys.
        """
        if self.hub is None or not findings:
            return
        now = self.clock()
        created = created_at or {}
        self.hub.publish(
            [
                asff.to_asff(
                    f,
                    account_id=self.account_id,
                    region=self.region,
                    partition=self.partition,
                    now=now,
                    created_at=(
                        datetime.fromtimestamp(created[f.key], tz=UTC) if f.key in created else None
                    ),
                )
                for f in findings
            ]
        )

    def notify(self, findings: Sequence[Finding]) -> None:
        """The SNS digest (split only if it would exceed SNS's size limit)."""
        if findings:
            self.sns.publish(digest.messages(findings, context=self.context))
