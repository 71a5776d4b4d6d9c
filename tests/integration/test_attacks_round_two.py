"""The second attacker's pass, each through the Lambda handler with the state table and a
60-minute alert window: federated-user names (a silent push through an entry we recommended,
and a flood of alerts), callers recorded without an ARN (collapsed into one key), and
escalation storms (an email per new repository, and escalation that forgot what it reported).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector import handler
from detector.report.alerts import rollup
from detector.report.principals import principal_of
from tests import lake
from tests.integration.test_attacks import announce, emails, hub_findings, invoke
from tests.integration.world import Aws, end_windows
from tests.unit.helpers import parquet_bytes, scan

TABLE = "ecr-upload-detector-state"
MINUTE = 60_000
ACCOUNT = lake.ACCOUNT
MINTER = f"arn:aws:iam::{ACCOUNT}:user/power-user"
INTRUDER = f"arn:aws:iam::{ACCOUNT}:user/second-intruder"
FOREIGN = "999988887777"


def federated(name: str, i: int = 0, **more: Any) -> dict[str, Any]:
    """A push by a federated user made with sts:GetFederationToken by MINTER."""
    fields: dict[str, Any] = {
        "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/{name}",
        "principal_id": f"{ACCOUNT}:{name}",
        "user_type": "FederatedUser",
        "session_issuer": MINTER,
        "credential_uid": "ASIAFEDERATED",
        "time_ms": lake.T0_MS + i,
    }
    return lake.event(**(fields | more))


def arnless(principal_id: str, i: int = 0, **more: Any) -> dict[str, Any]:
    """A push CloudTrail records without a caller ARN: another account's principal."""
    fields: dict[str, Any] = {
        "arn": None,
        "principal_id": principal_id,
        "account": FOREIGN,
        "user_type": "AWSAccount",
        "session_issuer": None,
        "credential_uid": None,
        "time_ms": lake.T0_MS + i,
    }
    return lake.event(**(fields | more))


def test_300_federated_names_are_one_alert_naming_the_iam_user_who_minted_them(
    aws: Aws, state: str
):
    """Before: 301 alerts, 300 Security Hub findings, the JSON body kept 176 and the other
    intruder's push to prod/payments-api was in neither the email nor the JSON."""
    names = [f"build-{i}" for i in range(300)]
    events = [federated(n, i) for i, n in enumerate(names)]
    events.append(
        lake.event(
            arn=INTRUDER,
            session_issuer=None,
            user_type="IAMUser",
            request_json=lake.put_image_request("prod/payments-api", "v9"),
            time_ms=lake.T0_MS + 500,
        )
    )
    invoke(announce(aws, ("federated", events)))
    (digest,) = aws.digests()
    principals = [a["principal"] for a in digest["alerts"]]
    assert len(digest["alerts"]) <= 5 and sorted(principals) == sorted([MINTER, INTRUDER])
    minted = next(a for a in digest["alerts"] if a["principal"] == MINTER)
    assert minted["count"] == 300
    assert minted["sessions"]["total"] == 300  # every federated name counted, exactly
    assert len(minted["sessions"]["values"]) <= 20  # a bounded sample
    assert minted["caller_types"]["values"] == ["FederatedUser"]
    (email,) = emails(aws)
    flat = " ".join(email.split())
    assert MINTER in flat and "prod/payments-api" in flat and INTRUDER in flat
    # Trusting the federated ARN is never advised: the issuer is.
    advice = flat.split("If the push was expected")[1]
    assert MINTER in advice and f"arn:aws:sts::{ACCOUNT}:federated-user/" not in advice
    findings = hub_findings(aws)
    assert len(findings) <= 5
    ids = {f["Resources"][0]["Id"] for f in findings}
    assert ids == {MINTER, INTRUDER}
    # New names in a later object do not dodge the window: same key, no new email.
    invoke(announce(aws, ("more-names", [federated(f"other-{i}", 1000 + i) for i in range(50)])))
    assert aws.digests() == []
    assert len(hub_findings(aws)) == len(findings)


def test_a_federated_user_entry_is_refused_so_a_minted_name_cannot_push_silently(
    aws: Aws, state: str
):
    """Before: the email advised allowlisting the federated ARN and the allowlist accepted it;
    anyone allowed to call GetFederationToken then minted that name and pushed unseen."""
    aws.allowlist(f"{lake.CI_ROLE}\narn:aws:sts::{ACCOUNT}:federated-user/ci-deployer\n")
    result = invoke(announce(aws, ("spoof", [federated("ci-deployer")])))
    # The item fails (retried, then dead-lettered): judging against a list that is not the
    # one the operator wrote would be worse. The error names the entry and what to list.
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == ["m-spoof-0"]
    # Listing the issuer instead is accepted and trusts its federated users: no alert.
    aws.allowlist(f"{lake.CI_ROLE}\n{MINTER}\n")
    handler.reset()
    assert invoke(announce(aws, ("issuer", [federated("ci-deployer", 5)]))) == {
        "batchItemFailures": []
    }
    assert aws.digests() == []


def test_two_callers_without_an_arn_are_two_alerts_with_their_principal_ids(aws: Aws, state: str):
    """Before: both shared the key (unknown principal); the second's push was silenced by the
    first's window, and no principal id was shown anywhere."""
    invoke(announce(aws, ("first", [arnless("AIDAFIRSTCALLER0001")])))
    (first,) = aws.digests()
    (alert,) = first["alerts"]
    assert alert["principal"] == "principal id AIDAFIRSTCALLER0001"
    assert alert["principal_ids"]["values"] == ["AIDAFIRSTCALLER0001"]
    assert alert["caller_types"]["values"] == ["AWSAccount"]
    # Another caller of the same account, same IP and agent, inside the window: emailed.
    invoke(announce(aws, ("second", [arnless("AROASECONDCALLER0002:session-a", 10)])))
    (second,) = aws.digests()
    (alert2,) = second["alerts"]
    assert alert2["principal"] == "principal id AROASECONDCALLER0002"
    assert alert2["alert_id"] != alert["alert_id"]
    flat = " ".join(emails(aws)[-1].split())
    assert "AROASECONDCALLER0002:session-a" in flat and "AWSAccount" in flat
    # A role's sessions are one principal: a new session name is not a new alert.
    invoke(announce(aws, ("third", [arnless("AROASECONDCALLER0002:session-b", 20)])))
    assert aws.digests() == []
    assert len(hub_findings(aws)) == 2


def test_two_arnless_callers_in_one_object_are_two_alerts(aws: Aws, state: str):
    events = [arnless("AIDAFIRSTCALLER0001"), arnless("AIDAOTHERCALLER0003", 1)]
    invoke(announce(aws, ("both", events)))
    (digest,) = aws.digests()
    assert sorted(a["principal"] for a in digest["alerts"]) == [
        "principal id AIDAFIRSTCALLER0001",
        "principal id AIDAOTHERCALLER0003",
    ]


def test_30_new_repositories_in_one_window_are_at_most_4_emails_and_none_forgotten(
    aws: Aws, state: str
):
    """Before: one email per invocation (30 emails); past 200 remembered repositories the rest
    were forgotten and alerted again."""
    attacker = f"arn:aws:iam::{ACCOUNT}:user/storm"

    def push(i: int, repo: str) -> dict[str, Any]:
        return lake.event(
            arn=attacker,
            session_issuer=None,
            user_type="IAMUser",
            request_json=lake.put_image_request(repo, "v1"),
            time_ms=lake.T0_MS + i * MINUTE // 2,
        )

    for i in range(30):
        invoke(announce(aws, (f"storm-{i}", [push(i, f"repo-{i:02d}")])))
    sent = emails(aws)
    assert len(sent) <= 4  # first sight, and one new-repository escalation
    (finding,) = hub_findings(aws)
    assert finding["ProductFields"]["count"] == "30"
    # Reported repositories are never new again in the window, however many.
    for i in range(30):
        invoke(announce(aws, (f"again-{i}", [push(40 + i, f"repo-{i:02d}")])))
    assert len(emails(aws)) == len(sent)
    # The repositories held back are listed in the key's next email (the next window).
    late = lake.event(
        arn=attacker, session_issuer=None, user_type="IAMUser", time_ms=lake.T0_MS + 200 * MINUTE
    )
    aws.digests()
    end_windows()
    invoke(announce(aws, ("late", [late])))
    (digest,) = aws.digests()
    (alert,) = digest["alerts"]
    held = alert["held_values"]
    assert held["total"] >= 27
    assert set(held["values"]) <= {f"repo-{i:02d}" for i in range(30)}
    assert "since the last email" in " ".join(emails(aws)[-1].split())


# --- how each CloudTrail identity type becomes a principal -----------------------------------

ROLE = f"arn:aws:iam::{ACCOUNT}:role/deployer"
TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("Root", {"arn": f"arn:aws:iam::{ACCOUNT}:root", "principal_id": ACCOUNT}, "arn"),
    ("IAMUser", {"arn": f"arn:aws:iam::{ACCOUNT}:user/alice", "principal_id": "AIDA1"}, "arn"),
    (
        "AssumedRole",
        {
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/s1",
            "principal_id": "AROA1:s1",
            "session_issuer": ROLE,
        },
        ROLE,
    ),
    ("Role", {"arn": ROLE, "principal_id": "AROA1"}, "arn"),
    (
        "FederatedUser",
        {
            "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/bob",
            "principal_id": f"{ACCOUNT}:bob",
            "session_issuer": MINTER,
        },
        MINTER,
    ),
    ("AWSAccount", {"arn": None, "principal_id": "AIDA9"}, "principal id AIDA9"),
    (
        "AWSService",
        {"arn": None, "principal_id": None, "invoked_by": "ecr.amazonaws.com"},
        "ecr.amazonaws.com",
    ),
    (
        "IdentityCenterUser",
        {"arn": None, "principal_id": "d-9067642ac7.5ab7b4b8-1234"},
        "principal id d-9067642ac7.5ab7b4b8-1234",
    ),
    (
        "WebIdentityUser",
        {"arn": None, "principal_id": "accounts.google.com:1234"},
        "principal id accounts.google.com",
    ),
    (
        "SAMLUser",
        {"arn": None, "principal_id": "SAMLProvider:alice"},
        "principal id SAMLProvider",
    ),
    ("Unknown", {"arn": None, "principal_id": "AIDAUNKNOWN"}, "principal id AIDAUNKNOWN"),
    ("Unknown", {"arn": None, "principal_id": None}, "(unknown principal)"),
]


@pytest.mark.parametrize(("user_type", "fields", "expected"), TYPES, ids=[t[0] for t in TYPES])
@pytest.mark.parametrize("version", [1, 2])
def test_each_identity_type_becomes_the_documented_principal(
    user_type: str, fields: dict[str, Any], expected: str, version: int
):
    event = lake.event(
        **({"session_issuer": None, "user_type": user_type, "src_domain": None} | fields)
    )
    result = scan(parquet_bytes([event], version))
    (alert,) = rollup(result.findings())
    want = fields["arn"] if expected == "arn" else expected
    assert principal_of(alert.findings[0]) == want == alert.key.principal
    assert alert.to_record()["caller_types"]["values"] == [user_type]
    assert json.loads(json.dumps(alert.to_record()))["principal"] == want


# --- accounts ---------------------------------------------------------------------------------


def test_a_cross_account_push_names_the_repository_owner(aws: Aws, state: str):
    """Before: the repository was placed in the caller's account (999988887777) and the owner
    (111122223333) appeared nowhere."""
    caller = f"arn:aws:iam::{FOREIGN}:user/x"
    push = lake.event(arn=caller, account=FOREIGN, session_issuer=None, user_type="IAMUser")
    invoke(announce(aws, ("cross", [push])))  # recorded in 111122223333 (the key's accountId=)
    (digest,) = aws.digests()
    (alert,) = digest["alerts"]
    assert alert["actor.user.account.uid"] == FOREIGN
    assert alert["resource_accounts"]["values"] == [ACCOUNT]
    flat = " ".join(emails(aws)[-1].split())
    assert f"CROSS-ACCOUNT: a principal of {FOREIGN} called into {ACCOUNT}" in flat
    (finding,) = hub_findings(aws)
    assert finding["AwsAccountId"] == "123456789012"  # the detector's own (product ARN)
    repos = [r for r in finding["Resources"] if r["Type"] == "AwsEcrRepository"]
    assert repos and all(f":{ACCOUNT}:repository/" in r["Id"] for r in repos)


def test_a_same_account_push_is_not_called_cross_account(aws: Aws, state: str):
    push = lake.event(arn=INTRUDER, session_issuer=None, user_type="IAMUser")
    invoke(announce(aws, ("same", [push])))
    assert "CROSS-ACCOUNT" not in emails(aws)[-1]


def test_arnless_callers_with_caller_chosen_names_are_one_principal(aws: Aws, state: str):
    """Found by an attacker's pass: another account's federated users recorded without an ARN
    (principal id ``ACCOUNT:NAME``) made a principal per name: five names, five emails."""
    pushes = [arnless(f"{FOREIGN}:name-{i}", i) for i in range(5)]
    for i, push in enumerate(pushes):
        invoke(announce(aws, (f"fed-{i}", [push])))
    assert len(emails(aws)) == 1
    (finding,) = hub_findings(aws)
    assert finding["Resources"][0]["Id"] == f"principal id {FOREIGN}"
