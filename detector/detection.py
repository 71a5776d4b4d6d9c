"""The detection's metadata: one place, shared by every output (CLI, SNS, Security Hub).

Taken from Splunk ESCU "ASL AWS ECR Container Upload Unknown User" (version 4, 2024-09-30).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Observable:
    field: str
    type: str
    role: str


@dataclass(frozen=True)
class Detection:
    id: str
    name: str
    version: int
    date: str
    author: str
    description: str
    mitre_attack_ids: tuple[str, ...]
    analytic_story: tuple[str, ...]
    confidence: int
    impact: int
    severity: str
    message_template: str
    references: tuple[str, ...]
    observables: tuple[Observable, ...]
    known_false_positives: str
    how_to_respond: str

    @property
    def risk_score(self) -> int:
        """ESCU risk = confidence * impact / 100 (70 * 70 / 100 = 49)."""
        return self.confidence * self.impact // 100

    def message(self, user: str) -> str:
        return self.message_template.format(user=user)


DETECTION = Detection(
    id="886a8f46-d7e2-4439-b9ba-aec238e31732",
    name="ASL AWS ECR Container Upload Unknown User",
    version=4,
    date="2024-09-30",
    author="Patrick Bareiss, Splunk (detection); this project (port)",
    description=(
        "A container image was pushed to Amazon ECR (PutImage) by a principal that is not on the "
        "list of principals allowed to publish images. An unknown publisher can mean stolen "
        "credentials or a compromised pipeline planting a malicious image that workloads will "
        "pull and run."
    ),
    mitre_attack_ids=("T1204.003", "T1204"),
    analytic_story=("Dev Sec Ops",),
    confidence=70,
    impact=70,
    # Splunk bands risk 41-60 as medium.
    severity="medium",
    message_template="Container uploaded from unknown user {user}",
    references=(
        "https://attack.mitre.org/techniques/T1204/003/",
        "https://research.splunk.com/cloud/886a8f46-d7e2-4439-b9ba-aec238e31732/",
        "https://docs.aws.amazon.com/AmazonECR/latest/userguide/logging-using-cloudtrail.html",
    ),
    observables=(
        Observable(field="src_ip", type="IP Address", role="Attacker"),
        Observable(field="user", type="User", role="Victim"),
    ),
    known_false_positives=(
        "New CI/CD pipelines, new roles or new engineers pushing images before they are added to "
        "the allowlist."
    ),
    how_to_respond=(
        "Confirm with the owner of the principal that the push was expected. If not: inspect the "
        "pushed image digest and tags, stop deployments from the repository, revoke the "
        "principal's sessions and keys, and look for other activity from the source IP. If it "
        "was expected, add the principal (or its role ARN) to the allowlist."
    ),
)
