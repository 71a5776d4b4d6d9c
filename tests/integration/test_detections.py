"""Two detections in the Lambda: one read, one message, their own alerts, state and findings.

Through the handler with the state table, as deployed with ``DETECTIONS`` set to both ECR
detections: a push by an allowlisted role on Saturday night is only "outside business hours",
a weekday push by an intruder only "unknown user", an intruder at night both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from detector import handler
from detector.core.errors import ConfigError
from tests import lake
from tests.integration.test_attacks import announce, hub_findings, invoke
from tests.integration.test_handler import metric
from tests.integration.world import Aws, create_state_table

TABLE = "ecr-upload-detector-state"
UNKNOWN = "886a8f46-d7e2-4439-b9ba-aec238e31732"
HOURS = "739ed682-27e9-4ba0-80e5-a91b97698213"
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


def ms(*when: int) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


SATURDAY_NIGHT = ms(2026, 11, 21, 23, 30)
FRIDAY_MORNING = ms(2026, 11, 20, 10, 0)
FRIDAY_NIGHT = ms(2026, 11, 20, 22, 15)

EVENTS = [
    lake.event(time_ms=SATURDAY_NIGHT),  # the allowlisted CI role, at night
    lake.event(arn=INTRUDER, session_issuer=None, time_ms=FRIDAY_MORNING),
    lake.event(arn=INTRUDER, session_issuer=None, time_ms=FRIDAY_NIGHT),
]


@pytest.fixture
def both(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    create_state_table(TABLE)
    monkeypatch.setenv("STATE_TABLE", TABLE)
    monkeypatch.setenv("DEDUP_WINDOW_MINUTES", "60")
    monkeypatch.setenv("DETECTIONS", "ecr-upload-unknown-user,ecr-upload-outside-business-hours")
    handler.reset()
    return aws


def _by_detection(alerts: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for a in alerts:
        out.setdefault(a["detection_id"], {})[a["principal"]] = a["count"]
    return out


def test_both_detections_one_read_one_message_own_alerts(
    both: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    result = invoke(announce(both, ("night", EVENTS)))
    assert result == {"batchItemFailures": []}
    # Each detection counts the rows it reported under its own metric.
    out = capsys.readouterr().out
    assert metric(out, "UntrustedPutImage") == [2.0]
    assert metric(out, "PutImageOutsideBusinessHours") == [2.0]
    (digest,) = both.digests()  # one SNS message for both detections
    assert [d["id"] for d in digest["detections"]] == [UNKNOWN, HOURS]
    assert _by_detection(digest["alerts"]) == {
        UNKNOWN: {INTRUDER: 2},
        HOURS: {INTRUDER: 1, lake.CI_ROLE: 1},
    }
    ids = {(f["GeneratorId"], f["Id"]) for f in hub_findings(both)}
    assert {g for g, _ in ids} == {UNKNOWN, HOURS}
    assert len(ids) == 3  # the intruder has a finding per detection, under different ids
    # Announced again: each detection counted it once already, nobody is emailed again.
    assert invoke(announce(both, ("night", EVENTS))) == {"batchItemFailures": []}
    assert both.digests() == []
    counts = {
        (f["GeneratorId"], f["ProductFields"]["principal"]): f["ProductFields"]["count"]
        for f in hub_findings(both)
    }
    assert counts == {
        (UNKNOWN, INTRUDER): "2",
        (HOURS, INTRUDER): "1",
        (HOURS, lake.CI_ROLE): "1",
    }


def test_the_default_is_the_unknown_user_detection_alone(aws: Aws) -> None:
    invoke(announce(aws, ("night", EVENTS)))
    (digest,) = aws.digests()
    assert "detections" not in digest
    assert digest["detection"]["id"] == UNKNOWN
    assert _by_detection(digest["alerts"]) == {UNKNOWN: {INTRUDER: 2}}


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("DETECTIONS", "ecr-upload-unknown-user,no-such-detection", "no-such-detection"),
        ("BUSINESS_HOURS_TIMEZONE", "Mars/Olympus_Mons", "BUSINESS_HOURS_TIMEZONE"),
        ("BUSINESS_HOURS_EXCEPTIONS", "*", "BUSINESS_HOURS_EXCEPTIONS"),
    ],
)
def test_a_bad_detection_setting_fails_the_cold_start_naming_it(
    both: Aws, monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    handler.reset()
    with pytest.raises(ConfigError, match=named):
        invoke(announce(both, ("night", EVENTS)))
    assert both.digests() == []


def test_each_detection_keeps_cumulative_totals_across_objects(both: Aws) -> None:
    for i in range(2):
        night = lake.event(time_ms=SATURDAY_NIGHT + i * 60_000)
        assert invoke(announce(both, (f"night-{i}", [night]))) == {"batchItemFailures": []}
    counts = {
        (f["GeneratorId"], f["ProductFields"]["principal"]): f["ProductFields"]["count"]
        for f in hub_findings(both)
    }
    assert counts == {(HOURS, lake.CI_ROLE): "2"}
    assert len(both.digests()) == 1  # the second object, within the window, emails nobody
