"""ASL AWS Detect Users creating keys with encrypt policy without MFA (ESCU 16ae9076, version 8,
TTP).

ESCU: ``api.operation`` PutKeyPolicy or CreateKey; the request JSON's ``policy`` (itself a JSON
string) read with ``spath``; the i-th ``Statement{}.Action`` value zipped (``mvzip``) with the
i-th ``Statement{}.Principal`` value, and a pair kept when the action matches ``kms*`` and the
principal contains ``*``: a KMS key anyone may use. Grouped by caller and request. Failed calls
are reported too (no status filter), here as there.

Despite the name, nothing in ESCU's search (or here) looks at MFA: neither the caller's MFA nor
an ``aws:MultiFactorAuthPresent`` condition in the policy.

Deviations, to port the evident intent: one statement must have Effect Allow, a ``kms:``
action (or ``*``) and the principal ``*`` or ``{"AWS": "*"}``. ESCU's zip pairs values by
position across the whole document, so with a list of actions, or a principal written as an
object (which ``spath`` splits into ``Principal.AWS``), the pairs it judges are not the
statement's; it ignores Effect; and ``action=kms*`` does not match an Action of ``*``.

Not read, here or in ESCU: a statement's Condition. A statement open to ``*`` but limited by
``kms:CallerAccount`` or ``kms:ViaService`` (as AWS's service-generated policies are) is
reported all the same.
"""

from __future__ import annotations

import json
from typing import Any

from detector.core.requestjson import all_of, any_of, decoded, eq, prefix, some
from detector.core.spec import Example
from detector.detections import _escu

OPERATIONS = ("PutKeyPolicy", "CreateKey")
SERVICE = "kms.amazonaws.com"
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROOT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"{_escu.ARN}:root"},
    "Action": "kms:*",
    "Resource": "*",
}


def _policy(*statements: dict[str, Any], single: bool = False) -> str:
    """A key policy as the JSON string CloudTrail records in the request."""
    body = statements[0] if single else list(statements)
    return json.dumps({"Version": "2012-10-17", "Id": "key-policy", "Statement": body})


def _grant(principal: Any, action: Any, effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Principal": principal, "Action": action, "Resource": "*"}


def _put(policy: str) -> dict[str, Any]:
    """PutKeyPolicy's requestParameters as CloudTrail records them."""
    return {
        "keyId": KEY_ARN,
        "policyName": "default",
        "policy": policy,
        "bypassPolicyLockoutSafetyCheck": False,
    }


def _create(policy: str) -> dict[str, Any]:
    """CreateKey's requestParameters as CloudTrail records them (no key id yet)."""
    return {
        "policy": policy,
        "description": "",
        "keyUsage": "ENCRYPT_DECRYPT",
        "keySpec": "SYMMETRIC_DEFAULT",
        "origin": "AWS_KMS",
        "bypassPolicyLockoutSafetyCheck": False,
    }


DETECTION = _escu.detection(
    id="16ae9076-d1d5-411c-8fdd-457504b33dac",
    slug="detect-users-creating-keys-with-encrypt-policy-without-mfa",
    name="ASL AWS Detect Users creating keys with encrypt policy without MFA",
    version=8,
    escu_type="TTP",
    mitre={"T1486": "Data Encrypted for Impact"},
    description=(
        "A KMS key policy was set (CreateKey or PutKeyPolicy) that allows KMS actions to any "
        "principal (Principal *). Such a key can be used from any AWS account: the set-up of "
        "cloud ransomware, where the attacker encrypts a victim's S3 objects with a key the "
        "victim does not control."
    ),
    analytic_story=("Ransomware Cloud",),
    operations=OPERATIONS,
    service=SERVICE,
    message=(
        "AWS account is potentially compromised and user {user} is trying to compromise "
        "other accounts"
    ),
    resource=("kms_key", "keyId", "KMS key"),
    # In lower case: IAM reads action names without regard to case ("KMS:*" is "kms:*").
    request_test=decoded(
        "policy",
        some(
            "statement",
            all_of(
                eq("effect", "allow"),
                any_of(prefix("action", "kms:"), eq("action", "*")),
                any_of(eq("principal", "*"), eq("principal.aws", "*")),
            ),
        ),
        fold=True,
    ),
    deviations=(
        "The KMS action and the principal * must be in the same statement: ESCU pairs the "
        "i-th Action with the i-th Principal across the whole document (mvzip).",
        "The statement must have Effect Allow: ESCU ignores Effect.",
        "The policy is read without regard to case, as IAM reads action names (Kms:* is "
        "kms:*): ESCU's search matches kms* in the case written.",
        'A principal written {"AWS": "*"} and an Action of * count too: ESCU reads only a '
        "principal written as the bare string * and actions matching kms*.",
        "Despite its name, neither ESCU nor this port checks MFA.",
    ),
    headline="A KMS key policy open to any AWS principal was set",
    verdict="OPEN KEY POLICY SET",
    known_false_positives=(
        "Key policies open to * but limited by a Condition (kms:CallerAccount, "
        "kms:ViaService, aws:PrincipalOrgID), as service-generated policies are; keys shared "
        "on purpose with many accounts of an organization."
    ),
    how_to_respond=(
        "Read the key's policy now (aws kms get-key-policy --key-id <key> --policy-name "
        "default). Unless a Condition limits it to your accounts, replace it with one naming "
        "your own principals (put-key-policy), disable the key if it is not in use "
        "(disable-key), revoke the principal's sessions and keys, and check S3 for objects "
        "recently re-encrypted with this key (SSE-KMS CopyObject/PutObject data events)."
    ),
    references=(
        "https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html",
        "https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateKey.html",
        "https://rhinosecuritylabs.com/aws/s3-ransomware-part-1-attack-vector/",
    ),
    remedy=_escu.Remedy(
        "The key's policy now (put back one without the open statement with put-key-policy):",
        ("aws", "kms", "get-key-policy"),
        "--key-id",
        r"[A-Za-z0-9:/_-]{1,256}",
        (("--policy-name", "default"), ("--output", "text")),
    ),
    examples=(
        Example(
            "an IAM user opens a key's encrypt permission to everyone",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request=_put(_policy(ROOT, _grant("*", "kms:Encrypt"))),
        ),
        Example(
            "a new key with a single statement object is reported",
            reported=True,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request=_create(_policy(_grant({"AWS": "*"}, "kms:*"), single=True)),
        ),
        Example(
            "actions given as a list are reported",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_put(
                _policy(ROOT, _grant({"AWS": ["*"]}, ["kms:Encrypt", "kms:GenerateDataKey"]))
            ),
        ),
        Example(
            "an action in another case is the same action to IAM",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_put(_policy(ROOT, _grant("*", "KMS:Encrypt"))),
        ),
        Example(
            "a refused open key policy is still reported",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE, status="Failure", error_code="AccessDenied"),
            request=_put(_policy(ROOT, _grant("*", "kms:Encrypt"))),
        ),
        Example(
            "the default policy naming the account root is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[1], SERVICE, **_escu.user("mallory")),
            request=_create(_policy(ROOT)),
        ),
        Example(
            "a deny to everyone is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_put(_policy(ROOT, _grant("*", "kms:Encrypt", effect="Deny"))),
        ),
        Example(
            "encrypt granted to one other account is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_put(
                _policy(ROOT, _grant({"AWS": "arn:aws:iam::444455556666:root"}, "kms:Encrypt"))
            ),
        ),
        Example(
            "scheduling a key's deletion is not this detection's",
            reported=False,
            event=_escu.call("ScheduleKeyDeletion", SERVICE),
            request={"keyId": KEY_ARN, "pendingWindowInDays": 7},
        ),
    ),
)
