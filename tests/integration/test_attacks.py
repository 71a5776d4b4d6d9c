"""Issue 10's attacks, each through the Lambda handler with the state table and a 60-minute
dedup window, as an adversary with push rights (or who shapes CloudTrail fields) would try them.

Each test names what the attack did before: flood (3,001 findings -> 45 SNS messages, 488 s),
poison (one hostile value -> no email for the whole batch), decoys (the prod repository pushed
out of every sample), escalation (a successful push after an emailed failure -> no email) and a
crash that left locks behind.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector import handler
from detector.aws.dynamodb import StateTable
from tests import lake
from tests.integration.world import BUCKET, Aws, Context, load, parquet

TABLE = "ecr-upload-detector-state"
ATTACKER = f"arn:aws:iam::{lake.ACCOUNT}:user/attacker"
SECOND = f"arn:aws:iam::{lake.ACCOUNT}:user/second-intruder"
MINUTE = 60_000


def announce(aws: Aws, *objects: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Upload each (name, events) object and an SQS batch from the subscriber queue for them."""
    template = load("sqs-security-lake-subscriber.json")["Records"][0]
    records = []
    for i, (name, events) in enumerate(objects):
        key = lake.key_for(2, name=name)
        etag = aws.s3.put_object(Bucket=BUCKET, Key=key, Body=parquet(events, 2))["ETag"]
        body = json.loads(template["body"])
        body["detail"]["object"].update(key=key, etag=etag.strip('"'))
        records.append(template | {"messageId": f"m-{name}-{i}", "body": json.dumps(body)})
    return {"Records": records}


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = handler.lambda_handler(event, Context())
    return result


def hub_findings(aws: Aws) -> list[dict[str, Any]]:
    return list(aws.hub.get_findings()["Findings"])


def emails(aws: Aws) -> list[str]:
    """The email bodies published so far (moto keeps each notification's envelope)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns import sns_backends

    topic = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].topics[aws.topic]
    return [json.loads(n[1])["email"] for n in topic.sent_notifications]


def failed_push(i: int, **more: Any) -> dict[str, Any]:
    return lake.event(
        arn=ATTACKER,
        session_issuer=None,
        status="Failure",
        error_code="AccessDenied",
        time_ms=lake.T0_MS + i,
        **more,
    )


def test_flood_of_failed_calls_gives_one_message_naming_both_callers(aws: Aws, state: str):
    flood = [failed_push(i, user_agent=f"flood-agent/{i}") for i in range(3000)]
    push = lake.event(arn=SECOND, session_issuer=None, time_ms=lake.T0_MS + 5 * MINUTE)
    result = invoke(announce(aws, ("flood", [*flood, push])))
    assert result == {"batchItemFailures": []}
    (digest,) = aws.digests()  # one message, not 45
    assert digest["finding_count"] == 3001 and digest["alert_count"] == 2
    first, second = digest["alerts"]
    assert first["principal"] == SECOND and first["succeeded"] == 1  # the push comes first
    assert second["principal"] == ATTACKER
    assert (second["count"], second["failed"], second["groups"]) == (3000, 3000, 3000)
    assert second["user_agents"]["total"] == 3000 and second["truncated"]["user_agents"]
    (email,) = emails(aws)
    assert email.index(SECOND) < email.index(ATTACKER)
    assert {f["ProductFields"]["principal"] for f in hub_findings(aws)} == {SECOND, ATTACKER}


def test_hostile_ipv6_zone_id_does_not_hold_back_the_email(aws: Aws, state: str):
    hostile = "fe80::1%\x1b[31m\u202eevil\n\x00zone"
    events = [
        lake.event(arn=ATTACKER, session_issuer=None, src_ip=hostile),
        lake.event(arn=SECOND, session_issuer=None, time_ms=lake.T0_MS + 1),
    ]
    assert invoke(announce(aws, ("poison", events))) == {"batchItemFailures": []}
    (digest,) = aws.digests()
    assert {a["principal"] for a in digest["alerts"]} == {ATTACKER, SECOND}
    (email,) = emails(aws)
    assert "\x1b" not in email and "\u202e" not in email and "\x00" not in email
    findings = {f["ProductFields"]["principal"]: f for f in hub_findings(aws)}
    assert findings[ATTACKER]["Network"]["SourceIpV6"] == "fe80::1"  # the zone id is dropped


def test_decoy_failures_cannot_push_the_prod_repository_out(aws: Aws, state: str):
    decoys = [
        failed_push(i, request_json=lake.put_image_request(f"decoy-{i:02d}", "x"))
        for i in range(60)
    ]
    prod = lake.event(
        arn=ATTACKER,
        session_issuer=None,
        time_ms=lake.T0_MS + 10 * MINUTE,
        request_json=lake.put_image_request("prod/payments-api", "v9"),
    )
    assert invoke(announce(aws, ("decoys", [*decoys, prod]))) == {"batchItemFailures": []}
    (digest,) = aws.digests()
    (alert,) = digest["alerts"]
    assert alert["repositories"]["values"][0] == "prod/payments-api"
    assert alert["succeeded_repositories"]["values"] == ["prod/payments-api"]
    (email,) = emails(aws)
    assert "Repositories pushed to (1): prod/payments-api" in email
    (finding,) = hub_findings(aws)
    repos = [r["Id"] for r in finding["Resources"] if r["Type"] == "AwsEcrRepository"]
    assert repos[0].endswith(":repository/prod/payments-api")
    assert finding["ProductFields"]["succeeded_repositories"] == "prod/payments-api"


def test_a_successful_push_after_an_emailed_failure_is_emailed_again(aws: Aws, state: str):
    invoke(announce(aws, ("tries", [failed_push(0)])))
    (first,) = aws.digests()
    assert first["alerts"][0]["reason"] == "new" and first["alerts"][0]["succeeded"] == 0
    success = lake.event(arn=ATTACKER, session_issuer=None, time_ms=lake.T0_MS + 10 * MINUTE)
    invoke(announce(aws, ("pushes", [success])))
    (second,) = aws.digests()  # inside the 60-minute window, and still emailed
    (alert,) = second["alerts"]
    assert alert["reason"] == "first_success"
    assert (alert["count"], alert["succeeded"], alert["failed"]) == (2, 1, 1)  # cumulative
    assert "the first successful push after failed ones" in " ".join(emails(aws)[-1].split())
    # The same push again (another object) says nothing new: Security Hub only.
    again = lake.event(arn=ATTACKER, session_issuer=None, time_ms=lake.T0_MS + 11 * MINUTE)
    invoke(announce(aws, ("again", [again])))
    assert aws.digests() == []
    (finding,) = hub_findings(aws)
    assert finding["ProductFields"]["count"] == "3"


def test_a_time_at_the_end_of_year_9999_fails_nothing_and_holds_no_lock(aws: Aws, state: str):
    end_of_time = 253_402_300_770_000  # 9999-12-31T23:59:30Z: a minute later does not exist
    event = announce(
        aws,
        ("late", [lake.event(arn=ATTACKER, session_issuer=None, time_ms=end_of_time)]),
        ("good", [lake.event(arn=SECOND, session_issuer=None)]),
    )
    assert invoke(event) == {"batchItemFailures": []}
    (digest,) = aws.digests()
    assert {a["principal"] for a in digest["alerts"]} == {ATTACKER, SECOND}
    (email,) = emails(aws)
    assert "9999-12-31 23:59:30 UTC" in email
    # Nothing is left claimed: the objects are completed, no alert lease is held.
    items = aws_items(TABLE)
    assert all(i["status"]["S"] == "COMPLETED" for i in items if i["pk"]["S"].startswith("obj#"))
    assert not any("alert_lease" in i for i in items)


def test_an_unexpected_error_while_publishing_releases_what_it_holds(
    aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch
):
    event = announce(aws, ("one", [lake.event(arn=ATTACKER, session_issuer=None)]))
    calls = {"n": 0}
    real = handler.app(Context()).alerts.notify

    def broken(alerts: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the email")
        real(alerts)

    monkeypatch.setattr(handler.app(Context()).alerts, "notify", broken)
    first = invoke(event)
    assert [f["itemIdentifier"] for f in first["batchItemFailures"]] == ["m-one-0"]
    assert not any("alert_lease" in i for i in aws_items(TABLE))
    # The retry is not refused as busy: it runs at once and the email goes out.
    assert invoke(event) == {"batchItemFailures": []}
    (digest,) = aws.digests()
    assert digest["alerts"][0]["count"] == 1  # counted once despite the retry


def aws_items(table: str) -> list[dict[str, Any]]:
    return list(StateTable(table).client.scan(TableName=table)["Items"])
