"""ASL AWS Create Policy Version to allow all resources (ESCU 22cc7a62, version 9, TTP).

ESCU: ``api.operation=CreatePolicy`` (not CreatePolicyVersion, though its name and description
say so); the request JSON's ``policyDocument`` (itself a JSON string) read with ``spath`` and
kept when some statement's Action and some statement's Resource match the regex ``\\*``, that
is contain a ``*`` anywhere; grouped by caller and request. Failed calls are reported too (no
status filter), here as there.

Deviations, to port the evident intent (a policy granting every action on every resource):
both CreatePolicy and CreatePolicyVersion are watched; and one statement must have Effect
Allow with an Action of exactly ``*`` and a Resource of exactly ``*`` (as a string or inside a
list). ESCU's regexes also match ``s3:*`` or ``arn:aws:s3:::bucket/*`` and may take the Action
and the Resource from different statements, even a Deny: that reports most ordinary policies.

The sampled resource is the policy name (``policyName``, CreatePolicy's); a
CreatePolicyVersion call names its policy in ``policyArn`` instead, which stays in the request
(the CloudTrail lookup in the alert finds it), and the name sample is then empty.

Not watched, here or in ESCU: inline policies (PutUserPolicy, PutRolePolicy, PutGroupPolicy)
and NotAction/NotResource statements that grant nearly everything.
"""

from __future__ import annotations

import json
from typing import Any

from detector.core.requestjson import all_of, any_of, decoded, eq, present, some
from detector.core.spec import Example
from detector.detections import _escu

OPERATIONS = ("CreatePolicy", "CreatePolicyVersion")
SERVICE = "iam.amazonaws.com"
POLICY_ARN = f"{_escu.ARN}:policy/ci-deploy"


def _document(*statements: dict[str, Any], single: bool = False) -> str:
    """An IAM policy document as the JSON string CloudTrail records in the request."""
    body = statements[0] if single else list(statements)
    return json.dumps({"Version": "2012-10-17", "Statement": body})


def _allow(action: Any, resource: Any, effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


def _create(document: str, name: str = "ops-break-glass") -> dict[str, Any]:
    """CreatePolicy's requestParameters as CloudTrail records them."""
    return {"policyName": name, "policyDocument": document}


def _version(document: str) -> dict[str, Any]:
    """CreatePolicyVersion's requestParameters as CloudTrail records them."""
    return {"policyArn": POLICY_ARN, "policyDocument": document, "setAsDefault": True}


DETECTION = _escu.detection(
    id="22cc7a62-3884-48c4-82da-592b8199b72f",
    slug="create-policy-version-to-allow-all-resources",
    name="ASL AWS Create Policy Version to allow all resources",
    version=9,
    escu_type="TTP",
    mitre={"T1078.004": "Cloud Accounts"},
    description=(
        "An IAM managed policy or a new version of one was written that allows every action "
        "on every resource (an Allow statement with Action * and Resource *). Attached to a "
        "user or role, it makes that principal an administrator: a common privilege "
        "escalation, since CreatePolicyVersion with setAsDefault changes a policy already "
        "attached."
    ),
    analytic_story=("AWS IAM Privilege Escalation", "Scattered Lapsus$ Hunters"),
    operations=OPERATIONS,
    service=SERVICE,
    message="User {user} created a policy version that allows access to any resource",
    resource=("policy_name", "policyName", "policy"),
    # In lower case, as IAM reads action names; NotAction with Resource * allows all but a few.
    request_test=decoded(
        "policyDocument",
        some(
            "statement",
            all_of(
                eq("effect", "allow"),
                any_of(eq("action", "*"), present("notaction")),
                eq("resource", "*"),
            ),
        ),
        fold=True,
    ),
    deviations=(
        "CreatePolicyVersion is watched as well as CreatePolicy: ESCU's search filters "
        "CreatePolicy only, though its name and description are about policy versions.",
        "Action * and Resource * must be granted by one Allow statement and be exactly *: "
        "ESCU's regexes match any * (s3:*, bucket/*) and may take them from different "
        "statements, even a Deny.",
        "An Allow statement with NotAction and Resource * counts too (it grants everything "
        "but the actions listed), and the document is read without regard to case.",
    ),
    headline="An IAM policy allowing every action on every resource was written",
    verdict="ALLOW-ALL POLICY WRITTEN",
    known_false_positives=(
        "Administrators writing a break-glass or administrator policy (AWS's own "
        "AdministratorAccess is managed and does not appear here); account bootstrap "
        "templates."
    ),
    how_to_respond=(
        "Find the policy (its name or ARN is in the request) and what it is attached to (aws "
        "iam list-entities-for-policy --policy-arn <arn>). If the principal's owner did not "
        "mean to grant full access, set the previous version as default (set-default-policy-"
        "version) or detach and delete the policy, revoke the principal's sessions and keys, "
        "and review what the entities attached to it did since."
    ),
    references=(
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreatePolicy.html",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreatePolicyVersion.html",
        "https://rhinosecuritylabs.com/aws/aws-privilege-escalation-methods-mitigation/",
    ),
    examples=(
        Example(
            "an IAM user creates an allow-all policy",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request=_create(
                _document(_allow("s3:GetObject", "arn:aws:s3:::reports/*"), _allow("*", "*"))
            ),
        ),
        Example(
            "a new default version with a single statement object is reported",
            reported=True,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request=_version(_document(_allow("*", "*"), single=True)),
        ),
        Example(
            "NotAction with Resource * allows all but a few actions: reported",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_create(
                _document({"Effect": "Allow", "NotAction": "iam:CreateUser", "Resource": "*"})
            ),
        ),
        Example(
            "Action and Resource given as lists are reported",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_create(_document(_allow(["*"], ["*"]))),
        ),
        Example(
            "a refused allow-all version is still reported",
            reported=True,
            event=_escu.call(OPERATIONS[1], SERVICE, status="Failure", error_code="AccessDenied"),
            request=_version(_document(_allow("*", "*"))),
        ),
        Example(
            "every action on one bucket is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request=_create(_document(_allow("*", "arn:aws:s3:::reports/*"))),
        ),
        Example(
            "a deny-all statement is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request=_version(_document(_allow("*", "*", effect="Deny"))),
        ),
        Example(
            "all S3 actions on every resource is not reported (ESCU's regex would)",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_create(_document(_allow("s3:*", "*"))),
        ),
        Example(
            "Action * and Resource * in different statements is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_create(
                _document(_allow("*", "arn:aws:s3:::reports"), _allow("ec2:Describe*", "*"))
            ),
        ),
        Example(
            "an allow-all inline policy is not this detection's",
            reported=False,
            event=_escu.call("PutUserPolicy", SERVICE),
            request={
                "userName": "mallory",
                "policyName": "inline-admin",
                "policyDocument": _document(_allow("*", "*")),
            },
        ),
    ),
)
