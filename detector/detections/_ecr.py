"""What the ECR image-push detections share: the request fields, samples, ASFF resources, the
commands a responder runs next, and the trust rule against an allowlist of principals."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from detector.core.allowlist import Allowlist
from detector.core.spec import (
    AsffSpec,
    Command,
    EmailText,
    Observable,
    RequestField,
    SampleSpec,
    Step,
)

OPERATION = "PutImage"
SERVICE = "ecr.amazonaws.com"

REQUEST_FIELDS = (
    RequestField("repository", "repositoryName"),
    RequestField("image_tag", "imageTag"),
    # What PutImage returned: the digest of the image it wrote (the exact image to inspect).
    RequestField(
        "image_digest", "imageDigest", source="response", path="image.imageId.imageDigest"
    ),
)
SAMPLES = (
    SampleSpec("repositories", "repository", "Repositories", "succeeded_repositories"),
    SampleSpec("image_tags", "image_tag", "Image tags", "succeeded_image_tags"),
)
# After the contract's keys: the image digests pushed (successful calls first).
EXTRA_SAMPLES = (
    SampleSpec("image_digests", "image_digest", "Image digests", "succeeded_image_digests"),
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # an ECR image tag
ESCALATE_ON = "repositories"
NEW_VALUE_REASON = "new_repository"
MITRE_NAMES = {"T1204.003": "User Execution: Malicious Image", "T1204": "User Execution"}
MITRE_IDS = tuple(MITRE_NAMES)
OBSERVABLES = (
    Observable(field="src_ip", type="IP Address", role="Attacker"),
    Observable(field="user", type="User", role="Victim"),
)
MITRE_URL = "https://attack.mitre.org/techniques/T1204/003/"
CLOUDTRAIL_URL = (
    "https://docs.aws.amazon.com/AmazonECR/latest/userguide/logging-using-cloudtrail.html"
)

# The identity columns an allowlist is matched against, in ``Allowlist.trust_mask`` order.
IDENTITY = ("user", "session_issuer", "invoked_by", "src_domain")

# Only values of these shapes are put into shell commands (and they are quoted anyway): a
# responder pastes these, so a hostile repository name must never become shell syntax.
# Lengths are checked first: a name of the right shape can still be a megabyte long.
_REPOSITORY = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_REPOSITORY_MAX = 256  # ECR's limit on repository names
_ENTRY = re.compile(r"[!-~]{1,2048}")
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,2048}")


def trusted(rows: Mapping[str, pa.Array], allowlist: Allowlist) -> pa.Array:
    """True where the allowlist trusts the caller (see ``Allowlist.trust_mask``)."""
    n = len(next(iter(rows.values())))
    return allowlist.trust_mask(*(rows.get(c, pa.nulls(n, pa.string())) for c in IDENTITY))


def valid_repository(name: object) -> bool:
    return (
        isinstance(name, str)
        and 2 <= len(name) <= _REPOSITORY_MAX
        and _REPOSITORY.fullmatch(name) is not None
    )


def images_steps(alert: Any, region: str, window: tuple[str, str] | None) -> list[Step]:
    """The images pushed and every push around then: the first steps of "Check next"."""
    region_opt = (("--region", region),) if region else ()
    steps = []
    repos_all, _, _ = alert.sample("repositories")
    repos = [r for r in repos_all if len(r) <= _REPOSITORY_MAX and _REPOSITORY.fullmatch(r)]
    digests = [d for d in alert.sample("image_digests")[0] if _DIGEST.fullmatch(d)]
    pushed_to = [r for r in alert.succeeded_values("repositories") if r in repos] or repos
    if digests and pushed_to:
        repo = pushed_to[0]
        image_ids = (("--image-ids", f"imageDigest={digests[0]}"),)
        steps.append(
            Step(
                "The exact image pushed, and its manifest (layers, config):",
                commands=(
                    Command(
                        ("aws", "ecr", "describe-images"),
                        (*region_opt, ("--repository-name", repo), *image_ids),
                    ),
                    Command(
                        ("aws", "ecr", "batch-get-image"),
                        (
                            *region_opt,
                            ("--repository-name", repo),
                            *image_ids,
                            ("--query", "images[0].imageManifest"),
                            ("--output", "text"),
                        ),
                    ),
                ),
                notes=(
                    f"({len(digests)} digest(s) pushed; for another one, or another repository, "
                    "change --image-ids / --repository-name)",
                )
                if len(digests) > 1 or len(pushed_to) > 1
                else (),
            )
        )
    if repos:
        steps.append(
            Step(
                "The images pushed (newest five per repository):",
                commands=tuple(
                    Command(
                        ("aws", "ecr", "describe-images"),
                        (
                            *region_opt,
                            ("--repository-name", repo),
                            ("--query", "sort_by(imageDetails,&imagePushedAt)[-5:]"),
                        ),
                    )
                    for repo in repos[:3]
                ),
                notes=("(add --registry-id if the repository is in another account)",),
            )
        )
    elif repos_all:
        steps.append(Step("Repository names above are not valid ECR names: check by hand."))
    if window:
        steps.append(
            Step(
                f"Every {OPERATION} around then, in the repository's account:",
                commands=(
                    Command(
                        ("aws", "cloudtrail", "lookup-events"),
                        (
                            *region_opt,
                            (
                                "--lookup-attributes",
                                f"AttributeKey=EventName,AttributeValue={OPERATION}",
                            ),
                            ("--start-time", window[0]),
                            ("--end-time", window[1]),
                        ),
                    ),
                ),
            )
        )
    return steps


def entry_step(alert: Any, text: str) -> Step:
    """ "If expected, add it to <the list>": the principal as an entry, when it can be one."""
    who = alert.who()
    if _ENTRY.fullmatch(who):
        return Step(text, data=(who,))
    return Step(text, notes=("(no caller ARN usable as an allowlist entry was recorded)",))


def parameter_steps(name: str, what: str) -> list[Step]:
    """How to add an entry to a list held in an SSM parameter called ``name``."""
    shown = name if _PARAMETER_NAME.fullmatch(name) else f"<{what} parameter>"
    return [
        Step(
            "Entries are ARNs or globs; a role ARN trusts all its sessions. Read the parameter:",
            commands=(
                Command(
                    ("aws", "ssm", "get-parameter"),
                    (("--name", shown), ("--query", "Parameter.Value"), ("--output", "text")),
                ),
            ),
        ),
        Step(
            "then write it back with the entry added, in the format it already uses (lines, "
            "commas or a JSON array):",
            commands=(
                Command(
                    ("aws", "ssm", "put-parameter", "--overwrite"),
                    (("--name", shown), ("--value", "<current value>,<entry>")),
                ),
            ),
        ),
    ]


def repositories(
    names: Iterable[object], partition: str, region: str, account: str, limit: int
) -> list[dict[str, Any]]:
    """One ``AwsEcrRepository`` per valid repository name, at most ``limit``. A name that is
    not a valid ECR repository name (possible in a failed call) stays out of the ARNs; it is
    still shown, escaped, in ``Description`` and ``ProductFields``."""
    out = []
    for name in [n for n in names if valid_repository(n)][:limit]:
        arn = f"arn:{partition}:ecr:{region}:{account}:repository/{name}"
        resource: dict[str, Any] = {"Type": "AwsEcrRepository", "Id": arn}
        if partition in ("aws", "aws-cn", "aws-us-gov", "aws-us-iso", "aws-us-iso-b"):
            resource["Partition"] = partition
        resource["Region"] = region
        resource["Details"] = {"AwsEcrRepository": {"Arn": arn, "RepositoryName": name}}
        out.append(resource)
    return out


def container_images(
    alert: Any, partition: str, region: str, account: str, limit: int
) -> list[dict[str, Any]]:
    """The images pushed, as ``AwsEcrContainerImage`` resources (digest, repository, tags):
    only digests of successful pushes, with the first repository pushed to."""
    digests = [d for d in alert.succeeded_values("image_digests") if _DIGEST.fullmatch(d)]
    repos = [r for r in alert.succeeded_values("repositories") if valid_repository(r)]
    if not digests or not repos:
        return []
    tags = [t for t in alert.succeeded_values("image_tags") if _TAG.fullmatch(t)]
    out = []
    for digest in digests[:limit]:
        details: dict[str, Any] = {
            "RegistryId": account,
            "RepositoryName": repos[0],
            "ImageDigest": digest,
        }
        if tags:
            details["ImageTags"] = tags[:10]
        resource: dict[str, Any] = {
            "Type": "AwsEcrContainerImage",
            "Id": f"arn:{partition}:ecr:{region}:{account}:repository/{repos[0]}@{digest}",
            "Region": region,
            "Details": {"AwsEcrContainerImage": details},
        }
        if partition in ("aws", "aws-cn", "aws-us-gov", "aws-us-iso", "aws-us-iso-b"):
            resource["Partition"] = partition
        out.append(resource)
    return out


def asff(lead: str) -> AsffSpec:
    return AsffSpec(
        types=("TTPs/Execution/T1204.003-User Execution: Malicious Image",),
        api=OPERATION,
        service=SERVICE,
        lead=lead,
        listings=(
            ("Pushed to", "succeeded:repositories", 80),
            ("Repositories", "repositories", 80),
            ("Tags", "image_tags", 60),
        ),
        resources=repositories,
        resource_sample="repositories",
        more_resources=container_images,
    )


def request(repository: str, tag: str | None = "v1") -> dict[str, Any]:
    """A PutImage requestParameters (for the examples)."""
    body: dict[str, Any] = {"repositoryName": repository, "registryId": "111122223333"}
    if tag is not None:
        body["imageTag"] = tag
    body["imageManifest"] = '{"schemaVersion":2,"config":{"digest":"sha256:' + "b" * 64 + '"}}'
    return body


def email(**text: Any) -> EmailText:
    """The email words every ECR push detection shares; ``text`` gives the rest (headline,
    subject, summary, check_next, trust_title, trust_steps, none_found, found)."""
    shared: dict[str, Any] = {
        "pushed": "{count} principal(s) pushed an image: they are listed first.",
        "verdict_success": "IMAGE PUSHED",
        "verdict_attempt": "PUSH ATTEMPTED",
        "calls": f"{OPERATION} calls",
        "calls_noun": f"{OPERATION} call(s)",
        "rest_success": ", {count} with a successful push",
        "all_failed": (
            "No push succeeded, so no image was written; the credentials still reached ECR."
        ),
        "outcome_unknown": (
            "No push is known to have succeeded: the outcome of some calls was not recorded."
        ),
        "first_success": (
            "Again within the alert window: the first successful push after failed ones."
        ),
        "new_value": (
            "Again within the alert window: a successful push to a repository not reported before."
        ),
    }
    return EmailText(**(shared | text))
