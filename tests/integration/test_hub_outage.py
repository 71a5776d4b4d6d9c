"""A Security Hub outage does not stop the email (issue "Trust under attack, round two", item 5).

Through the Lambda handler with the state table, under moto. Security Hub is made unreachable,
throttled or "not enabled" by a stand-in for ``BatchImportFindings`` that fails while the outage
lasts and passes calls on to moto afterwards. What must hold:

- the email goes out on the first attempt, whatever Security Hub does;
- the item is retried for Security Hub only: the redelivered record sends no second email
  (with the dedup window on or off), counts nothing twice, and Security Hub gets the finding
  once it is back;
- Security Hub not enabled (or refusing us for good) is counted and logged, not retried;
- a finding that never reaches Security Hub is counted (``SecurityHubUndelivered``) and logged
  with its alert id; calls stay at 100 findings or fewer; retries are jittered, adaptive.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from detector import handler
from detector.aws.securityhub import SecurityHubPublisher
from detector.detection import DETECTION
from detector.report.principals import AlertKey
from tests import lake
from tests.integration.test_attacks import announce, aws_items, emails, invoke
from tests.integration.test_handler import metric
from tests.integration.test_securityhub import alert, to_asff
from tests.integration.world import Aws, Context

TABLE = "ecr-upload-detector-state"
ATTACKER = f"arn:aws:iam::{lake.ACCOUNT}:user/attacker"


def throttled() -> ClientError:
    body: Any = {
        "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": 429},
    }
    return ClientError(body, "BatchImportFindings")


def not_enabled() -> ClientError:
    body: Any = {
        "Error": {
            "Code": "InvalidAccessException",
            "Message": "Account 123456789012 is not subscribed to AWS Security Hub",
        },
        "ResponseMetadata": {"HTTPStatusCode": 401},
    }
    return ClientError(body, "BatchImportFindings")


class Outage:
    """Stands in for ``BatchImportFindings``: raises ``error()`` while ``down`` (for every call,
    or for calls holding one of the ``only`` Ids), else passes the call on to moto. Records the
    Ids of every call. Thread-safe: batches are sent in parallel."""

    def __init__(self, real: Any, error: Any, only: set[str] | None = None) -> None:
        self.real = real
        self.error = error
        self.only = only
        self.down = True
        self.lock = threading.Lock()
        self.calls: list[list[str]] = []

    def __call__(self, **kwargs: Any) -> Any:
        ids = [f["Id"] for f in kwargs["Findings"]]
        with self.lock:
            self.calls.append(ids)
        if self.down and (self.only is None or self.only & set(ids)):
            raise self.error()
        return self.real(**kwargs)


def outage(monkeypatch: pytest.MonkeyPatch, error: Any, only: set[str] | None = None) -> Outage:
    hub = handler.app(Context()).alerts.hub
    assert hub is not None
    stand_in = Outage(hub.client.batch_import_findings, error, only)
    monkeypatch.setattr(hub.client, "batch_import_findings", stand_in)
    monkeypatch.setattr(hub, "sleep", lambda _: None)
    return stand_in


def finding_id(principal: str) -> str:
    return f"{DETECTION.id}/principal/{AlertKey(DETECTION.id, lake.ACCOUNT, principal).id}"


def hub_findings(aws: Aws) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for page in aws.hub.get_paginator("get_findings").paginate():
        for f in page["Findings"]:
            out[f["ProductFields"]["principal"]] = f
    return out


def push(principal: str = ATTACKER, i: int = 0) -> dict[str, Any]:
    return lake.event(arn=principal, session_issuer=None, time_ms=lake.T0_MS + i)


def failed_ids(result: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def undelivered_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "Security Hub did not get a finding"]


@pytest.mark.parametrize("window", ["60", "0"])
def test_unreachable_security_hub_does_not_stop_the_email_nor_repeat_it(
    aws: Aws,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    window: str,
):
    # With the window off (0) nothing but the state table's record of what the email covered
    # keeps the retry from emailing again.
    monkeypatch.setenv("DEDUP_WINDOW_MINUTES", window)
    handler.reset()
    hub = outage(monkeypatch, lambda: EndpointConnectionError(endpoint_url="https://hub"))
    event = announce(aws, ("down", [push()]))

    first = invoke(event)
    assert len(emails(aws)) == 1  # the email did not wait for Security Hub
    (digest,) = aws.digests()
    assert digest["alerts"][0]["principal"] == ATTACKER
    assert failed_ids(first) == ["m-down-0"]  # retried, for Security Hub's sake
    assert hub_findings(aws) == {}
    assert metric(capsys.readouterr().out, "SecurityHubUndelivered") == [1.0]
    (logged,) = undelivered_logs(caplog)
    assert logged.levelno == logging.ERROR
    assert logged.__dict__["alert_id"] == AlertKey(DETECTION.id, lake.ACCOUNT, ATTACKER).id
    assert logged.__dict__["finding_id"] == finding_id(ATTACKER)
    assert logged.__dict__["retried"] is True
    assert "EndpointConnectionError" in logged.__dict__["error"]
    # Nothing is left held: the retry does not wait for a lease to run out.
    assert not any("alert_lease" in i for i in aws_items(TABLE))
    assert not any(i.get("status", {}).get("S") == "IN_PROGRESS" for i in aws_items(TABLE))

    hub.down = False  # Security Hub is back; SQS redelivers the same record
    caplog.clear()
    assert invoke(event) == {"batchItemFailures": []}
    assert len(emails(aws)) == 1 and aws.digests() == []  # no second email
    (finding,) = hub_findings(aws).values()
    assert finding["Id"] == finding_id(ATTACKER)
    assert finding["ProductFields"]["count"] == "1"  # counted once despite the retry
    assert metric(capsys.readouterr().out, "SecurityHubUndelivered") == [0.0]
    assert undelivered_logs(caplog) == []

    # Delivered everywhere now: a further redelivery is a duplicate, nothing is sent.
    assert invoke(event) == {"batchItemFailures": []}
    assert len(emails(aws)) == 1 and len(hub_findings(aws)) == 1


def test_throttled_for_a_while_every_finding_arrives_in_calls_of_at_most_100(
    aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # 150 principals: 150 findings, two BatchImportFindings calls (100 and 50) a time.
    principals = [f"arn:aws:iam::{lake.ACCOUNT}:user/u{i}" for i in range(150)]
    event = announce(aws, ("storm", [push(p, i) for i, p in enumerate(principals)]))
    hub = outage(monkeypatch, throttled)

    first = invoke(event)  # throttled throughout this invocation
    assert failed_ids(first) == ["m-storm-0"]
    (digest,) = aws.digests()  # but the email went out, with every principal
    assert digest["alert_count"] == 150
    assert metric(capsys.readouterr().out, "SecurityHubUndelivered") == [150.0]

    assert hub.calls and all(len(c) <= 100 for c in hub.calls)

    hub.down = False
    hub.calls.clear()
    assert invoke(event) == {"batchItemFailures": []}
    assert aws.digests() == [] and len(emails(aws)) == 1
    stored = hub_findings(aws)
    assert set(stored) == set(principals)
    assert all(f["ProductFields"]["count"] == "1" for f in stored.values())
    assert sorted(len(c) for c in hub.calls) == [50, 100]
    assert metric(capsys.readouterr().out, "SecurityHubUndelivered") == [0.0]


class SlowFor:
    """Stands in for ``BatchImportFindings``: the call succeeds, but the findings with the
    ``slow`` Ids fail in it (``LimitExceededException``, per finding) while ``down``; the others
    go to moto. Records the Ids of every call."""

    def __init__(self, real: Any, slow: set[str]) -> None:
        self.real = real
        self.slow = slow
        self.down = True
        self.lock = threading.Lock()
        self.calls: list[list[str]] = []

    def __call__(self, **kwargs: Any) -> Any:
        ids = [f["Id"] for f in kwargs["Findings"]]
        with self.lock:
            self.calls.append(ids)
        bad = [i for i in ids if self.down and i in self.slow]
        ok = [f for f in kwargs["Findings"] if f["Id"] not in bad]
        if ok:
            self.real(Findings=ok)
        return {
            "FailedCount": len(bad),
            "SuccessCount": len(ok),
            "FailedFindings": [
                {"Id": i, "ErrorCode": "LimitExceededException", "ErrorMessage": "slow down"}
                for i in bad
            ],
        }


def test_only_the_items_whose_findings_failed_are_retried_and_only_those_findings_resent(
    aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch
):
    second = f"arn:aws:iam::{lake.ACCOUNT}:user/second"
    event = announce(aws, ("one", [push()]), ("two", [push(second, 1)]))
    hub = handler.app(Context()).alerts.hub
    assert hub is not None
    slow = SlowFor(hub.client.batch_import_findings, {finding_id(second)})
    monkeypatch.setattr(hub.client, "batch_import_findings", slow)
    monkeypatch.setattr(hub, "sleep", lambda _: None)

    first = invoke(event)
    assert failed_ids(first) == ["m-two-1"]  # "one" is delivered everywhere and completes
    (digest,) = aws.digests()
    assert {a["principal"] for a in digest["alerts"]} == {ATTACKER, second}
    assert set(hub_findings(aws)) == {ATTACKER}

    slow.down = False
    slow.calls.clear()
    assert invoke(event) == {"batchItemFailures": []}  # "one" again is a duplicate
    assert len(emails(aws)) == 1 and aws.digests() == []
    assert set(hub_findings(aws)) == {ATTACKER, second}
    assert slow.calls == [[finding_id(second)]]  # what Security Hub already had is not resent


def test_security_hub_not_enabled_is_counted_and_logged_not_retried_forever(
    aws: Aws,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    hub = outage(monkeypatch, not_enabled)
    event = announce(aws, ("off", [push()]))
    assert invoke(event) == {"batchItemFailures": []}  # not dead-lettered for Security Hub
    assert len(emails(aws)) == 1
    assert len(hub.calls) == 1  # retrying cannot enable Security Hub
    assert metric(capsys.readouterr().out, "SecurityHubUndelivered") == [1.0]
    (logged,) = undelivered_logs(caplog)
    assert logged.__dict__["finding_id"] == finding_id(ATTACKER)
    assert logged.__dict__["retried"] is False
    assert "InvalidAccessException" in logged.__dict__["error"]
    # The object is done: announced again, it is a duplicate (no email, no call).
    assert invoke(event) == {"batchItemFailures": []}
    assert len(emails(aws)) == 1 and len(hub.calls) == 1


def test_an_outage_that_outlasts_the_retries_is_given_up_counted_and_logged(
    aws: Aws,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    outage(monkeypatch, lambda: EndpointConnectionError(endpoint_url="https://hub"))
    event = announce(aws, ("long", [push()]))
    results = [invoke(event) for _ in range(4)]
    # Retried twice for Security Hub, then given up (before the queue would dead-letter it).
    assert [failed_ids(r) for r in results] == [["m-long-0"], ["m-long-0"], [], []]
    assert len(emails(aws)) == 1
    out = capsys.readouterr().out
    emf = [line for line in out.splitlines() if "SecurityHubUndelivered" in line]
    assert len(emf) == 4
    logged = undelivered_logs(caplog)
    assert [r.__dict__["retried"] for r in logged] == [True, True, False]
    assert {r.__dict__["alert_id"] for r in logged} == {
        AlertKey(DETECTION.id, lake.ACCOUNT, ATTACKER).id
    }
    assert all(i.get("status", {}).get("S") != "IN_PROGRESS" for i in aws_items(TABLE))


def test_the_client_retries_adaptively(aws: Aws):
    retries = SecurityHubPublisher().client.meta.config.retries
    assert retries is not None and retries["mode"] == "adaptive"


def test_backoff_is_jittered():
    from detector.aws.securityhub import SecurityHubFailed

    sleeps: list[float] = []
    draws = iter([0.0, 1.0])

    class Throttled:
        def batch_import_findings(self, **kwargs: Any) -> Any:
            raise throttled()

    pub = SecurityHubPublisher(
        Throttled(),  # type: ignore[arg-type]
        max_attempts=3,
        sleep=sleeps.append,
        rand=lambda: next(draws),
    )
    finding = to_asff(alert(1))
    with pytest.raises(SecurityHubFailed) as err:
        pub.publish([finding])
    # Equal jitter: half the exponential delay, plus up to as much again at random.
    assert sleeps == [0.25, 1.0]
    assert [fid for fid, _ in err.value.report.failed] == [finding["Id"]]
    assert err.value.report.blocked == [] and err.value.report.imported == 0


class Sorted:
    """A client that answers each call by what its first finding is: ``throttle`` and
    ``refuse`` (not enabled) hold Ids whose whole call fails; anything else is imported."""

    def __init__(self, throttle: set[str], refuse: set[str]) -> None:
        self.throttle, self.refuse = throttle, refuse
        self.lock = threading.Lock()
        self.calls: list[list[str]] = []

    def batch_import_findings(self, **kwargs: Any) -> Any:
        ids = [f["Id"] for f in kwargs["Findings"]]
        with self.lock:
            self.calls.append(ids)
        if ids[0] in self.throttle:
            raise throttled()
        if ids[0] in self.refuse:
            raise not_enabled()
        return {"FailedCount": 0, "SuccessCount": len(ids), "FailedFindings": []}


def test_deliver_tells_what_may_import_later_from_what_never_will():
    findings = [to_asff(alert(i)) for i in range(250)]
    ids = [f["Id"] for f in findings]
    client = Sorted(throttle={ids[100]}, refuse={ids[200]})
    pub = SecurityHubPublisher(client, sleep=lambda _: None)  # type: ignore[arg-type]
    report = pub.deliver(findings)  # never raises for Security Hub's sake
    assert report.imported == 100
    assert [fid for fid, _ in report.failed] == ids[100:200]  # throttled: a retry may import
    assert all("ThrottlingException" in why for _, why in report.failed)
    assert [fid for fid, _ in report.blocked] == ids[200:]  # not enabled: no retry helps
    assert all("InvalidAccessException" in why for _, why in report.blocked)
    assert sum(1 for c in client.calls if c[0] == ids[200]) == 1  # refused once, not retried
    assert sum(1 for c in client.calls if c[0] == ids[100]) == 3
    assert all(len(c) <= 100 for c in client.calls)


def test_no_retry_starts_once_the_function_is_out_of_time():
    finding = to_asff(alert(1))
    client = Sorted(throttle={finding["Id"]}, refuse=set())
    sleeps: list[float] = []
    calls = {"n": 0}

    def deadline() -> bool:  # time enough for the first call, then none
        calls["n"] += 1
        return calls["n"] > 1

    pub = SecurityHubPublisher(client, sleep=sleeps.append)  # type: ignore[arg-type]
    report = pub.deliver([finding], deadline=deadline)
    assert len(client.calls) == 1 and sleeps == []
    assert [fid for fid, _ in report.failed] == [finding["Id"]]
