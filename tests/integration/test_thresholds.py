"""Threshold detections through the handler with the state table: a count in a time bucket is
kept across objects and invocations, exactly once per object, and alerts once per bucket and
principal.

As deployed with ``DETECTIONS`` naming the AssumeRole brute-force detection (at least three
refused AssumeRole calls per caller in an hour) and the concurrent-sessions one (two or more
source IPs for one user's console in five minutes).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector import handler
from tests import lake
from tests.integration.test_attacks import announce, emails, hub_findings, invoke
from tests.integration.world import Aws, create_state_table

TABLE = "ecr-upload-detector-state"
BRUTE = "726959fe-316d-445c-a584-fa187d64e295"
SESSIONS = "b3424bbe-3204-4469-887b-ec144483a336"
SCANNER = f"arn:aws:iam::{lake.ACCOUNT}:user/scanner"
ALICE = f"arn:aws:iam::{lake.ACCOUNT}:user/alice"
MINUTE = 60_000
HOUR = 60 * MINUTE
# The start of an hour (T0 is 10:00:00 UTC): buckets are whole hours since the epoch.
START = lake.T0_MS


def refused(minute: int, who: str = SCANNER) -> dict[str, Any]:
    return lake.event(
        operation="AssumeRole",
        service="sts.amazonaws.com",
        arn=who,
        principal_id="AIDAEXAMPLE",
        user_type="IAMUser",
        session_issuer=None,
        status="Failure",
        error_code="AccessDenied",
        time_ms=START + minute * MINUTE,
        request_json=json.dumps({"roleArn": f"arn:aws:iam::{lake.ACCOUNT}:role/admin"}),
        response_json=None,
    )


def console(minute: float, ip: str) -> dict[str, Any]:
    return lake.event(
        operation="DescribeEventAggregates",
        service="health.amazonaws.com",
        arn=ALICE,
        principal_id="AIDAALICE",
        user_type="IAMUser",
        session_issuer=None,
        src_ip=ip,
        time_ms=START + int(minute * MINUTE),
        request_json=json.dumps({"aggregateField": "eventTypeCategory"}),
        response_json=None,
    )


@pytest.fixture
def world(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    create_state_table(TABLE)
    monkeypatch.setenv("STATE_TABLE", TABLE)
    monkeypatch.setenv("DEDUP_WINDOW_MINUTES", "60")
    monkeypatch.setenv(
        "DETECTIONS", "iam-assume-role-policy-brute-force,concurrent-sessions-from-different-ips"
    )
    handler.reset()
    return aws


def alerts(aws: Aws, detection: str) -> list[dict[str, Any]]:
    return [a for d in aws.digests() for a in d["alerts"] if a["detection_id"] == detection]


def hub(aws: Aws, detection: str) -> list[dict[str, Any]]:
    return [f for f in hub_findings(aws) if f["GeneratorId"] == detection]


def test_a_threshold_reached_only_across_two_objects_alerts_once(world: Aws) -> None:
    assert invoke(announce(world, ("a", [refused(1), refused(2)]))) == {"batchItemFailures": []}
    assert world.digests() == [] and hub(world, BRUTE) == []  # two: below the threshold
    assert invoke(announce(world, ("b", [refused(30)]))) == {"batchItemFailures": []}
    (alert,) = alerts(world, BRUTE)
    assert alert["principal"] == SCANNER and alert["count"] == 3  # the totals, both objects
    (finding,) = hub(world, BRUTE)
    assert finding["ProductFields"]["count"] == "3"
    # A fourth refusal in the same hour: counted (Security Hub), not emailed again.
    assert invoke(announce(world, ("c", [refused(40)]))) == {"batchItemFailures": []}
    assert world.digests() == []
    (finding,) = hub(world, BRUTE)
    assert finding["ProductFields"]["count"] == "4"


def test_a_redelivered_object_does_not_count_twice(world: Aws) -> None:
    first = announce(world, ("a", [refused(1), refused(2)]))
    assert invoke(first) == {"batchItemFailures": []}
    assert invoke(first) == {"batchItemFailures": []}  # the same object again
    assert invoke(first) == {"batchItemFailures": []}
    assert world.digests() == [] and hub(world, BRUTE) == []  # still two
    assert invoke(announce(world, ("b", [refused(3)]))) == {"batchItemFailures": []}
    (alert,) = alerts(world, BRUTE)
    assert alert["count"] == 3


def test_buckets_are_apart_and_each_alerts_once(world: Aws) -> None:
    # Two refusals late in one hour, one early in the next: no bucket reaches three.
    assert invoke(announce(world, ("a", [refused(58), refused(59)]))) == {"batchItemFailures": []}
    assert invoke(announce(world, ("b", [refused(61)]))) == {"batchItemFailures": []}
    assert world.digests() == []
    # Two more in the second hour: it alerts, as an alert of its own (its own finding).
    assert invoke(announce(world, ("c", [refused(62), refused(70)]))) == {"batchItemFailures": []}
    (alert,) = alerts(world, BRUTE)
    assert alert["count"] == 3
    assert [f["bucket"] for f in alert["findings"]["values"]] == ["2026-11-20T11:00:00"]
    assert alert["threshold"] | {"value": None} == {
        "bucket_start": "2026-11-20T11:00:00",
        "bucket_end": "2026-11-20T12:00:00",
        "minimum": 3,
        "counted": "refused AssumeRole calls",
        "distinct": None,
        "value": None,
    }
    (email,) = emails(world)
    flat = " ".join(part.strip(" |") for part in email.splitlines())
    assert (
        "3 refused AssumeRole calls between 2026-11-20 11:00 and 2026-11-20 12:00 UTC "
        "(the threshold is 3)" in flat
    )
    (finding,) = hub(world, BRUTE)
    # The first hour, when it reaches three, is another alert.
    assert invoke(announce(world, ("d", [refused(10)]))) == {"batchItemFailures": []}
    (alert,) = alerts(world, BRUTE)
    assert alert["count"] == 3
    assert {f["Id"] for f in hub(world, BRUTE)} > {finding["Id"]}


def test_distinct_source_ips_across_objects(world: Aws) -> None:
    assert invoke(announce(world, ("a", [console(1, "198.51.100.7"), console(2, "198.51.100.7")])))
    assert world.digests() == []  # one address
    assert invoke(announce(world, ("b", [console(3, "203.0.113.9")]))) == {"batchItemFailures": []}
    (alert,) = alerts(world, SESSIONS)
    assert alert["principal"] == ALICE
    assert alert["threshold"]["values"] == ["198.51.100.7", "203.0.113.9"]
    assert alert["threshold"]["value"] == 2 and alert["threshold"]["distinct"] == "src_ip"
    assert alert["src_ips"]["values"] == ["203.0.113.9"]  # this object's calls
    (email,) = emails(world)
    assert "Source IPs: 198.51.100.7, 203.0.113.9" in email
    # The same two addresses again in that bucket: nothing new to say.
    assert invoke(announce(world, ("c", [console(4, "203.0.113.9")]))) == {"batchItemFailures": []}
    assert world.digests() == []
    # Another five minutes, one address: below the threshold there.
    assert invoke(announce(world, ("d", [console(6, "203.0.113.9")]))) == {"batchItemFailures": []}
    assert world.digests() == []


def test_one_object_alone_can_cross_the_threshold(world: Aws) -> None:
    events = [refused(i) for i in range(5)] + [refused(1, who=ALICE)]
    assert invoke(announce(world, ("a", events))) == {"batchItemFailures": []}
    (alert,) = alerts(world, BRUTE)  # alice's one refusal is no alert
    assert alert["principal"] == SCANNER and alert["count"] == 5
