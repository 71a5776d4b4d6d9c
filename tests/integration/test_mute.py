"""Issue 19, "mute from where people triage", through the Lambda handler with the state table
and a 60-minute alert window: a finding SUPPRESSED in Security Hub mutes its principal's
ordinary pushes but not an escalation, RESOLVED makes the next push a new alert, the mute list
(MUTES_PARAMETER) mutes until it expires, and a Security Hub error never blocks the email.

What moto does and does not do here: moto 5.2.6 has no ``BatchUpdateFindings`` (the call a
person's "Suppress" or "Resolve" makes), so ``set_workflow`` writes ``Workflow.Status`` into
moto's stored finding, as that call would. Our later imports go through moto's
``BatchImportFindings``, which merges the imported fields into the stored finding: the status
surviving them shows our imports carry no ``Workflow`` (on AWS it is customer-owned and an
import must not send it). ``GetFindings`` is moto's; moto ignores its ``Filters``, so the
detector's own filtering by ``Id`` and ``ProductArn`` is what picks the findings here, and
the number of calls is counted by a thin wrapper around the client's ``get_findings``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from detector import handler
from tests import lake
from tests.integration.test_attacks import announce, emails, invoke
from tests.integration.test_handler import metric
from tests.integration.world import Aws, Context, end_windows

TABLE = "ecr-upload-detector-state"
MUTES = "/ecr-upload-detector/mutes"
ATTACKER = f"arn:aws:iam::{lake.ACCOUNT}:user/attacker"
LOAD_TEST = f"arn:aws:iam::{lake.ACCOUNT}:role/load-test"
MINUTE = 60_000


class Logs(logging.Handler):
    """The function's log records (message and extra fields)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def find(self, start: str) -> list[dict[str, Any]]:
        """The records whose message starts with ``start``, as dicts (extra fields too)."""
        return [
            vars(r) | {"message": r.getMessage()}
            for r in self.records
            if r.getMessage().startswith(start)
        ]


@pytest.fixture
def logs() -> Iterator[Logs]:
    rec = Logs()
    target = logging.getLogger(handler.SERVICE)
    target.addHandler(rec)
    yield rec
    target.removeHandler(rec)


def push(i: int, principal: str = ATTACKER, *, ok: bool = False, repo: str = "payments/api"):
    fields: dict[str, Any] = {
        "arn": principal,
        "session_issuer": None,
        "user_type": "Role" if ":role/" in principal else "IAMUser",
        "request_json": lake.put_image_request(repo, "v1"),
        "time_ms": lake.T0_MS + i * MINUTE,
    }
    if not ok:
        fields |= {"status": "Failure", "error_code": "AccessDenied"}
    return lake.event(**fields)


def findings(aws: Aws) -> dict[str, dict[str, Any]]:
    """Our findings by principal (the first resource)."""
    out = {}
    for page in aws.hub.get_paginator("get_findings").paginate():
        for f in page["Findings"]:
            out[f["Resources"][0]["Id"]] = f
    return out


def set_workflow(principal: str, status: str) -> None:
    """What BatchUpdateFindings(Workflow={"Status": status}) does to the stored finding (moto
    has no BatchUpdateFindings)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.securityhub.models import securityhub_backends

    backend = securityhub_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    (finding,) = [f for f in backend.findings if f.data["Resources"][0]["Id"] == principal]
    finding.data["Workflow"] = {"Status": status}


class Reads:
    """Stands in for the workflow reader's ``GetFindings``: counts the calls and passes them
    on to moto, or raises ``error`` while it is set."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.error: ClientError | None = None
        self.calls: list[int] = []  # Id filter values per call
        self.lock = threading.Lock()

    def __call__(self, **kwargs: Any) -> Any:
        with self.lock:
            self.calls.append(len(kwargs["Filters"]["Id"]))
        if self.error is not None:
            raise self.error
        return self.real(**kwargs)


def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """Wrap the workflow reader's ``get_findings`` (a function without one reads nothing)."""
    reader = getattr(getattr(handler.app(Context()), "mutes", None), "workflow", None)
    if reader is None:
        return Reads(None)
    stand_in = Reads(reader.client.get_findings)
    monkeypatch.setattr(reader.client, "get_findings", stand_in)
    return stand_in


def flat(text: str) -> str:
    """The email's words on one line, without the marks of a wrapped value ("| ")."""
    return " ".join(w for w in text.split() if w != "|")


def test_suppressed_mutes_an_ordinary_push_but_not_the_first_success_after_failures(
    aws: Aws, state: str, capsys: pytest.CaptureFixture[str]
):
    invoke(announce(aws, ("fail-1", [push(0)])))
    assert len(emails(aws)) == 1
    set_workflow(ATTACKER, "SUPPRESSED")
    end_windows()  # an ordinary push would be a new email now
    capsys.readouterr()

    invoke(announce(aws, ("fail-2", [push(1)])))
    assert len(emails(aws)) == 1  # muted: no email
    assert metric(capsys.readouterr().out, "AlertsMuted") == [1.0]
    finding = findings(aws)[ATTACKER]
    assert finding["ProductFields"]["count"] == "2"  # Security Hub still updated
    assert finding["Workflow"]["Status"] == "SUPPRESSED"  # our import did not overwrite it

    invoke(announce(aws, ("ok-3", [push(2, ok=True)])))
    sent = emails(aws)
    assert len(sent) == 2  # the first successful push escalates past the mute
    (digest,) = aws.digests()[-1:]
    assert digest["alerts"][0]["reason"] == "first_success"
    assert "Muted in Security Hub (workflow status SUPPRESSED); emailed because it escalated" in (
        flat(sent[-1])
    )
    invoke(announce(aws, ("ok-4", [push(3, ok=True)])))
    assert len(emails(aws)) == 2  # an ordinary push again: muted (and in the window anyway)
    assert findings(aws)[ATTACKER]["ProductFields"]["count"] == "4"


def test_a_first_success_after_failures_escalates_even_after_the_window_ended(aws: Aws, state: str):
    invoke(announce(aws, ("fail-1", [push(0)])))
    set_workflow(ATTACKER, "SUPPRESSED")
    end_windows()
    invoke(announce(aws, ("ok-2", [push(1, ok=True)])))
    assert len(emails(aws)) == 2
    assert aws.digests()[-1]["alerts"][0]["reason"] == "first_success"


def test_resolved_makes_the_next_push_a_new_email_once(aws: Aws, state: str):
    invoke(announce(aws, ("one", [push(0)])))
    assert len(emails(aws)) == 1
    set_workflow(ATTACKER, "RESOLVED")
    aws.digests()

    invoke(announce(aws, ("two", [push(1)])))  # inside the window: a new alert all the same
    sent = emails(aws)
    assert len(sent) == 2
    (digest,) = aws.digests()
    assert digest["alerts"][0]["reason"] == "new"
    assert "Resolved in Security Hub since the last email: this is a new alert" in flat(sent[-1])

    invoke(announce(aws, ("three", [push(2)])))  # still RESOLVED: acted on once, window again
    assert len(emails(aws)) == 2
    set_workflow(ATTACKER, "NOTIFIED")  # reopened by a person ...
    invoke(announce(aws, ("four", [push(3)])))
    assert len(emails(aws)) == 2
    set_workflow(ATTACKER, "RESOLVED")  # ... and resolved again: the next push is new again
    invoke(announce(aws, ("five", [push(4)])))
    assert len(emails(aws)) == 3
    assert findings(aws)[ATTACKER]["ProductFields"]["count"] == "5"


def mute_list(aws: Aws, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    aws.ssm.put_parameter(Name=MUTES, Type="String", Value=value, Overwrite=True)
    monkeypatch.setenv("MUTES_PARAMETER", MUTES)
    monkeypatch.setenv("ALLOWLIST_CACHE_SECONDS", "0")
    handler.reset()


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def test_a_mute_list_entry_mutes_until_it_expires_on_its_own(
    aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
):
    until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2)
    mute_list(
        aws,
        monkeypatch,
        f"# load tests\n{LOAD_TEST}  until={stamp(until)}  why=load test, ticket SEC-123\n",
    )
    invoke(announce(aws, ("lt-1", [push(0, LOAD_TEST, ok=True)])))
    assert emails(aws) == []  # muted from its first push
    assert LOAD_TEST in findings(aws)  # and in Security Hub
    (line,) = logs.find("alert muted, not emailed")
    assert line["why"] == "load test, ticket SEC-123" and line["muted_by"] == "mute list"

    # A new repository in the window escalates past the mute, and says until when.
    invoke(announce(aws, ("lt-2", [push(1, LOAD_TEST, ok=True, repo="prod/other")])))
    (email,) = emails(aws)
    assert f"Muted until {until:%Y-%m-%d %H:%M} UTC (load test, ticket SEC-123)" in flat(email)

    # Three hours later the mute has expired by itself: the next push is emailed again.
    later = datetime.now(UTC) + timedelta(hours=3)
    monkeypatch.setattr("detector.report.mutes.utcnow", lambda: later)
    end_windows()
    invoke(announce(aws, ("lt-3", [push(2, LOAD_TEST, ok=True)])))
    assert len(emails(aws)) == 2
    (expired,) = logs.find("mute expired")
    assert expired["principal"] == LOAD_TEST and expired["why"] == "load test, ticket SEC-123"


def test_an_invalid_mute_list_mutes_nothing_and_says_so(
    aws: Aws,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs: Logs,
):
    until = stamp(datetime.now(UTC) + timedelta(hours=2))
    mute_list(aws, monkeypatch, f"{LOAD_TEST}  until={until}  why=ok\n* until={until} why=all\n")
    invoke(announce(aws, ("lt-1", [push(0, LOAD_TEST, ok=True)])))
    assert len(emails(aws)) == 1  # nothing is muted by a list that does not mean what it says
    out = capsys.readouterr().out
    assert metric(out, "MuteListFailed") == [1.0]
    (error,) = logs.find("mute check failed")
    assert "line 2" in error["error"]


def test_a_security_hub_error_does_not_block_the_email(
    aws: Aws,
    state: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs: Logs,
):
    invoke(announce(aws, ("fail-1", [push(0)])))
    set_workflow(ATTACKER, "SUPPRESSED")
    end_windows()
    stand_in = reads(monkeypatch)
    stand_in.error = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetFindings"
    )
    capsys.readouterr()
    result = invoke(announce(aws, ("fail-2", [push(1)])))
    assert result == {"batchItemFailures": []}
    assert len(emails(aws)) == 2  # emailed as if not muted
    out = capsys.readouterr().out
    assert metric(out, "SecurityHubWorkflowUnread") == [1.0]
    assert metric(out, "AlertsMuted") == [0.0]
    (error,) = logs.find("mute check failed")
    assert "AccessDeniedException" in error["error"]
    assert findings(aws)[ATTACKER]["ProductFields"]["count"] == "2"


def test_workflow_reads_are_batched(aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch):
    principals = [f"arn:aws:iam::{lake.ACCOUNT}:user/u{i:02d}" for i in range(45)]
    invoke(announce(aws, ("first", [push(0, p) for p in principals])))
    assert len(findings(aws)) == 45
    for p in principals:
        set_workflow(p, "SUPPRESSED")
    end_windows()
    stand_in = reads(monkeypatch)
    invoke(announce(aws, ("second", [push(1, p) for p in principals])))
    assert len(emails(aws)) == 1  # all 45 read and muted: only the first email
    assert 1 <= len(stand_in.calls) <= 3 and max(stand_in.calls) <= 20  # 20 Ids a call


def test_a_muted_principal_pushing_to_a_repository_never_reported_is_emailed(
    aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mute silences the ordinary, not news: a push to a repository nobody was told about,
    even as the first push of a new alert window, escalates (found by an attacker's pass)."""
    until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2)
    mute_list(aws, monkeypatch, f"{LOAD_TEST}  until={stamp(until)}  why=load test\n")
    invoke(announce(aws, ("lt-1", [push(0, LOAD_TEST, ok=True, repo="load-test/app")])))
    assert emails(aws) == []
    end_windows()
    invoke(announce(aws, ("lt-2", [push(90, LOAD_TEST, ok=True, repo="load-test/app")])))
    assert emails(aws) == []  # the same repository again: still muted
    end_windows()
    invoke(announce(aws, ("lt-3", [push(180, LOAD_TEST, ok=True, repo="prod/payments-api")])))
    (email,) = emails(aws)
    assert "prod/payments-api" in email


def test_a_suppressed_principal_pushing_to_a_new_repository_is_emailed(
    aws: Aws, state: str
) -> None:
    attacker = "arn:aws:iam::111122223333:user/attacker"
    invoke(announce(aws, ("a-1", [push(0, ok=True, repo="sandbox/app")])))
    assert len(emails(aws)) == 1
    set_workflow(attacker, "SUPPRESSED")
    end_windows()
    invoke(announce(aws, ("a-2", [push(90, ok=True, repo="prod/payments-api")])))
    assert len(emails(aws)) == 2
