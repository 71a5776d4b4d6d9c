"""detector.report.mutes: the mute list's strict format, what mutes an alert and when it escalates,
and the batched Security Hub workflow read (detector.aws.securityhub.WorkflowReader)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from detector.aws.securityhub import WorkflowReader
from detector.report import asff, asff_checks, digest
from detector.report.alerts import FIRST_SUCCESS, NEW, NEW_VALUE, Alert, rollup
from detector.report.mutes import (
    MAX_MUTE_DAYS,
    MuteList,
    MuteListInvalid,
    Mutes,
    MuteView,
    escalated,
    with_note,
)
from tests import lake
from tests.unit.helpers import parquet_bytes, scan

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ROLE = f"arn:aws:iam::{lake.ACCOUNT}:role/load-test"
PRODUCT = "arn:aws:securityhub:us-east-1:123456789012:product/123456789012/default"


def alert(principal: str = ROLE, *, ok: bool = True) -> Alert:
    fields: dict[str, Any] = {"arn": principal, "session_issuer": None, "user_type": "Role"}
    if not ok:
        fields |= {"status": "Failure", "error_code": "AccessDenied"}
    (a,) = rollup(scan(parquet_bytes([lake.event(**fields)], 2)).findings())
    return a


def parse(text: str) -> MuteList:
    return MuteList.parse(text, "test", now=NOW)


# --- the format -------------------------------------------------------------------------------


def test_an_entry_is_principal_until_and_why():
    mutes = parse(
        "# load tests\n\n"
        f"{ROLE}  until=2026-12-01T00:00Z  why=load test, ticket SEC-123 #4\n"
        f"\tarn:aws:iam::{lake.ACCOUNT}:user/bot-*\tuntil=2026-11-21T08:30:15Z\twhy=x\r\n"
    )
    first, second = mutes.entries
    assert (first.principal, first.until, first.why, first.line) == (
        ROLE,
        datetime(2026, 12, 1, tzinfo=UTC),
        "load test, ticket SEC-123 #4",  # the rest of the line, '#' included
        3,
    )
    assert second.until == datetime(2026, 11, 21, 8, 30, 15, tzinfo=UTC)
    assert second.matches(f"arn:aws:iam::{lake.ACCOUNT}:user/bot-7")
    assert not second.matches("arn:aws:iam::999999999999:user/bot-7")
    assert parse("# nothing muted\n").entries == ()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("* until=2026-12-01T00:00Z why=all", "any account"),
        ("arn:aws:iam::*:role/x until=2026-12-01T00:00Z why=x", "any account"),
        (
            f"arn:aws:sts::{lake.ACCOUNT}:federated-user/bob until=2026-12-01T00:00Z why=x",
            "federated user",
        ),
        (
            f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/load-test/s1 until=2026-12-01T00:00Z why=x",
            f"mute 'arn:aws:iam::{lake.ACCOUNT}:role/load-test'",
        ),
        ("AROAEXAMPLE until=2026-12-01T00:00Z why=x", "not an ARN"),
        (f"{ROLE}", "no until="),
        (f"{ROLE} why=x until=2026-12-01T00:00Z", "no until="),
        (f"{ROLE} until=2026-12-01 why=x", "not a UTC time"),
        (f"{ROLE} until=2026-12-01T00:00+01:00 why=x", "not a UTC time"),
        (f"{ROLE} until=2026-02-30T00:00Z why=x", "not a UTC time"),
        (f"{ROLE} until=2026-12-01T00:00Z", "no why="),
        (f"{ROLE} until=2026-12-01T00:00Z why=", "no why="),
        (f"{ROLE} until=2026-12-01T00:00Z because=x", "no why="),
        (f"{ROLE} until=2026-12-01T00:00Z why=a\x07b", "printable"),
        (f"{ROLE} until=2026-12-01T00:00Z why={'x' * 201}", "at most 200"),
        (f"{ROLE} until=2027-11-20T00:00Z why=forever", f"more than {MAX_MUTE_DAYS} days"),
    ],
)
def test_anything_else_refuses_the_whole_list_naming_the_line(line: str, says: str):
    with pytest.raises(MuteListInvalid) as err:
        parse(f"{ROLE} until=2026-12-01T00:00Z why=fine\n{line}\n")
    assert "line 2" in str(err.value) and says in str(err.value)


def test_too_many_entries_are_refused():
    with pytest.raises(MuteListInvalid, match="more than 500"):
        parse(f"{ROLE} until=2026-12-01T00:00Z why=x\n" * 501)


# --- what mutes an alert ----------------------------------------------------------------------


def test_an_entry_mutes_until_it_expires_and_then_says_so():
    mutes = parse(f"{ROLE} until=2026-11-20T13:00Z why=load test\n")
    a = alert()
    view = MuteView(now=NOW, mute_list=mutes)
    mute = view.mute_of(a)
    assert mute is not None and mute.by == "mute list"
    assert mute.note() == (
        "Muted until 2026-11-20 13:00 UTC (load test); emailed because it escalated."
    )
    later = MuteView(now=NOW + timedelta(hours=1), mute_list=mutes)
    assert later.mute_of(a) is None
    assert [(i, e.why) for i, e in later.expired] == [(a.id, "load test")]
    assert MuteView(now=NOW, mute_list=mutes).mute_of(alert(ROLE + "-other")) is None


def test_suppressed_in_security_hub_mutes_other_statuses_do_not():
    a = alert()
    assert MuteView(now=NOW, statuses={a.id: "SUPPRESSED"}).mute_of(a) is not None
    for status in ("NEW", "NOTIFIED", "RESOLVED"):
        assert MuteView(now=NOW, statuses={a.id: status}).mute_of(a) is None


def test_escalations_email_through_a_mute():
    failed, ok = alert(ok=False), alert()
    both = dataclasses.replace(ok, count=2, succeeded=1, failed=1)  # cumulative
    assert escalated(FIRST_SUCCESS, now=ok, total=both) == FIRST_SUCCESS
    assert escalated(NEW_VALUE, now=ok, total=both) == NEW_VALUE
    # A new window, and the first success after nothing but failures: news all the same.
    assert escalated(NEW, now=ok, total=both) == FIRST_SUCCESS
    # A first push that succeeds (nothing failed before), or one more success: muted.
    assert escalated(NEW, now=ok, total=ok) is None
    more = dataclasses.replace(ok, count=3, succeeded=2, failed=1)
    assert escalated(NEW, now=ok, total=more) is None
    assert escalated(NEW, now=failed, total=dataclasses.replace(failed, count=2)) is None
    # A new window whose push goes somewhere the last window never reported: news.
    pushed = set(ok.succeeded_values())
    assert escalated(NEW, now=ok, total=more, before=frozenset({"elsewhere"})) == NEW_VALUE
    assert escalated(NEW, now=ok, total=more, before=frozenset(pushed)) is None
    assert escalated(NEW, now=ok, total=more, before_overflow=True) == NEW_VALUE


def test_the_email_says_why_an_escalation_came_through_a_mute():
    a = dataclasses.replace(alert(), reason=FIRST_SUCCESS)
    noted = with_note(a, "Muted until 2026-11-20 13:00 UTC (load test\nSUBJECT: x); escalated.")
    assert noted.id == a.id and noted.count == a.count
    text = digest.email_text([noted])
    assert "Muted until 2026-11-20 13:00 UTC (load test\\nSUBJECT: x); escalated." in text
    assert "Muted until" not in digest.email_text([a])


# --- reading, never blocking --------------------------------------------------------------------


class Broken:
    name = "/mutes"

    def get(self) -> MuteList:
        raise MuteListInvalid("ssm:/mutes", "line 3: no why=")

    def statuses(self, finding_ids: Any, *, deadline: Any = None) -> Any:
        raise RuntimeError("bug")


def test_a_failed_read_mutes_nothing_and_is_reported():
    a = alert()
    view = Mutes(Broken(), Broken(), clock=lambda: NOW).check([a])
    assert view.list_failed and view.unread == 1
    assert view.mute_of(a) is None
    assert any("line 3" in p for p in view.problems)
    assert any("RuntimeError" in p for p in view.problems)


class Hub:
    """A GetFindings that ignores its filters, as moto does; records each call."""

    def __init__(self, findings: list[dict[str, Any]], *, page: int = 100) -> None:
        self.findings = findings
        self.page = page
        self.calls: list[dict[str, Any]] = []
        self.error: ClientError | None = None

    def get_findings(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        start = int(kwargs.get("NextToken", 0))
        end = start + self.page
        out: dict[str, Any] = {"Findings": self.findings[start:end]}
        if end < len(self.findings):
            out["NextToken"] = str(end)
        return out


def hub_finding(fid: str, status: str | None, product: str = PRODUCT) -> dict[str, Any]:
    f: dict[str, Any] = {"Id": fid, "ProductArn": product}
    if status:
        f["Workflow"] = {"Status": status}
    return f


def test_statuses_are_read_20_ids_a_call_and_only_ours_are_taken():
    ids = [f"d/principal/{i:03d}" for i in range(45)]
    hub = Hub(
        [hub_finding(i, "SUPPRESSED") for i in ids]
        + [hub_finding("d/principal/000", "RESOLVED", product=PRODUCT.replace("1234", "9999"))]
        + [hub_finding("someone-else", "SUPPRESSED")]
    )
    read = WorkflowReader(PRODUCT, hub).statuses(ids)  # type: ignore[arg-type]
    assert read.statuses == dict.fromkeys(ids, "SUPPRESSED")
    assert read.unread == [] and read.error is None
    assert read.calls == len(hub.calls) == 3
    for call in hub.calls:
        assert call["Filters"]["ProductArn"] == [{"Value": PRODUCT, "Comparison": "EQUALS"}]
        assert 1 <= len(call["Filters"]["Id"]) <= 20
        assert call["MaxResults"] == 100


def test_pages_are_followed_and_the_call_budget_holds():
    ids = [f"d/principal/{i:03d}" for i in range(45)]
    hub = Hub([hub_finding(i, "NEW") for i in reversed(ids)], page=10)
    read = WorkflowReader(PRODUCT, hub, max_calls=4).statuses(ids)  # type: ignore[arg-type]
    assert len(hub.calls) == 4 and read.error and "more than 4" in read.error
    assert set(read.statuses) | set(read.unread) == set(ids)
    assert not set(read.statuses) & set(read.unread)


def test_an_error_leaves_the_rest_unread():
    hub = Hub([])
    hub.error = ClientError({"Error": {"Code": "ThrottlingException"}}, "GetFindings")
    read = WorkflowReader(PRODUCT, hub).statuses(["a", "b"])  # type: ignore[arg-type]
    assert read.unread == ["a", "b"] and "ThrottlingException" in (read.error or "")
    reader = WorkflowReader(PRODUCT, Hub([]))  # type: ignore[arg-type]
    late = reader.statuses(["a"], deadline=lambda: True)
    assert late.unread == ["a"] and late.calls == 0


def test_our_imports_never_carry_the_customer_owned_workflow():
    finding = asff.to_asff(alert(), account_id="123456789012", region="us-east-1", now=NOW)
    assert not set(asff_checks.CUSTOMER_FIELDS) & set(finding)


def test_the_template_wires_the_mute_list_and_the_workflow_read():
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "scripts"))
    from check_template import translate

    cfn = translate(root / "template.yaml")
    fn = cfn["Resources"]["DetectorFunction"]["Properties"]
    assert fn["Environment"]["Variables"]["MUTES_PARAMETER"] == {"Ref": "MuteListParameter"}
    grants = {}
    for policy in cfn["Resources"]["DetectorFunctionRole"]["Properties"]["Policies"]:
        for st in policy["PolicyDocument"]["Statement"]:
            st = st["Fn::If"][1] if "Fn::If" in st else st
            grants[st.get("Sid")] = st
    read = grants["ReadSecurityHubWorkflowStatus"]
    assert read["Action"] == "securityhub:GetFindings"
    assert read["Resource"]["Fn::Sub"].endswith(":hub/default")
    assert grants["ReadTheMuteList"]["Action"] == "ssm:GetParameter"
    assert "dynamodb:BatchGetItem" in grants["KeepExactlyOnceState"]["Action"]
    names = cfn["Resources"]["AllowlistChangeRule"]["Properties"]["EventPattern"]["detail"]
    assert {"Ref": "MuteListParameter"} in names["name"]  # a new mute is an email too
