"""ASL AWS ECR Container Upload Unknown User (Splunk ESCU, version 4, 2024-09-30).

``PutImage`` calls whose caller is not on the allowlist (SSM parameter ``ALLOWLIST_PARAMETER``,
or ``scan --allowlist``): the caller ARN, the session issuer (a role covers its sessions) and
the calling AWS service are matched; a call with none of those is matched by its source domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import Context, Detection, Example, Step
from detector.core.sqlparts import trusted_sql
from detector.detections import _ecr, _principal


def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    return pc.invert(_ecr.trusted(rows, ctx.allowlist))


def sql_predicate(cols: Mapping[str, str], ctx: Context) -> str | None:
    trusted = trusted_sql([cols[c] for c in _ecr.IDENTITY], ctx.allowlist)
    return None if trusted is None else f"NOT {trusted}"


def check_next(alert: Any, region: str, window: tuple[str, str] | None) -> list[Step]:
    return [
        *_ecr.images_steps(alert, region, window),
        *_principal.steps(alert),
        _ecr.entry_step(alert, "If the push was expected, add to the allowlist (see end):"),
    ]


def trust_steps(context: Mapping[str, str]) -> list[Step]:
    return _ecr.parameter_steps(context.get("allowlist_parameter", ""), "allowlist")


ARN = "arn:aws:iam::111122223333"
DETECTION = Detection(
    id="886a8f46-d7e2-4439-b9ba-aec238e31732",
    slug="ecr-upload-unknown-user",
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
    mitre_attack_ids=_ecr.MITRE_IDS,
    mitre_names=_ecr.MITRE_NAMES,
    analytic_story=("Dev Sec Ops",),
    confidence=70,
    impact=70,
    # Splunk bands risk 41-60 as medium.
    severity="medium",
    message_template="Container uploaded from unknown user {user}",
    references=(
        _ecr.MITRE_URL,
        "https://research.splunk.com/cloud/886a8f46-d7e2-4439-b9ba-aec238e31732/",
        _ecr.CLOUDTRAIL_URL,
    ),
    observables=_ecr.OBSERVABLES,
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
    operations=(_ecr.OPERATION,),
    predicate_columns=_ecr.IDENTITY,
    predicate=predicate,
    sql_predicate=sql_predicate,
    request_fields=_ecr.REQUEST_FIELDS,
    samples=_ecr.SAMPLES,
    extra_samples=_ecr.EXTRA_SAMPLES,
    escalate_on=_ecr.ESCALATE_ON,
    deviations=(
        "The allowlist holds ARNs and globs matched against the caller ARN, its session issuer "
        "(a role trusts its sessions) and the calling service, kept in SSM; ESCU's macro "
        "matches actor.user.name IN (admin).",
        "Ported from version 4 (2024-09-30); the search of the newest version (12) applies the "
        "same rule.",
    ),
    new_value_reason=_ecr.NEW_VALUE_REASON,
    metric="UntrustedPutImage",
    # Every call refused: credentials probed ECR, no image landed.
    severity_failed_only="low",
    email=_ecr.email(
        headline="ECR image push by a principal not on the allowlist",
        subject="ECR push by unknown principal: ",
        summary=(
            "{calls} PutImage call(s) by {principals} principal(s) that are not on the list of "
            "principals allowed to push images; {succeeded} succeeded."
        ),
        check_next=check_next,
        trust_title="How to allowlist an expected publisher",
        trust_steps=trust_steps,
        none_found=(
            "No findings: every PutImage came from an allowlisted principal (or none was seen)."
        ),
        found="{findings} finding(s), {calls} PutImage call(s) by principals not on the allowlist.",
    ),
    asff=_ecr.asff(
        "{count} PutImage call(s) ({succeeded} succeeded, {failed} failed) by {who}, which is "
        "not on the allowlist of image publishers."
    ),
    examples=(
        Example(
            "an IAM user not on the allowlist pushes",
            reported=True,
            event={"arn": f"{ARN}:user/old-contractor", "session_issuer": None},
            request=_ecr.request("payments/api", "latest"),
            allowlist=(f"{ARN}:role/ci-deployer",),
        ),
        Example(
            "a failed push by an unknown role session is still reported",
            reported=True,
            event={
                "arn": "arn:aws:sts::111122223333:assumed-role/intruder/s-1",
                "session_issuer": f"{ARN}:role/intruder",
                "status": "Failure",
            },
            allowlist=(f"{ARN}:role/ci-deployer",),
        ),
        Example(
            "a session of an allowlisted role pushes",
            reported=False,
            allowlist=(f"{ARN}:role/ci-deployer",),
        ),
        Example(
            "replication by ECR itself, trusted by its source domain",
            reported=False,
            event={
                "arn": None,
                "session_issuer": None,
                "principal_id": None,
                "src_domain": "ecr.amazonaws.com",
                "src_ip": None,
            },
            allowlist=("ecr.amazonaws.com",),
        ),
        Example(
            "another operation by an unknown user is not this detection's",
            reported=False,
            event={"operation": "BatchGetImage", "arn": f"{ARN}:user/old-contractor"},
            allowlist=(f"{ARN}:role/ci-deployer",),
        ),
    ),
)
