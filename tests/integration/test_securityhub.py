"""Security Hub publishing of one ASFF finding per alert: batching and re-import under moto;
rejections, retries and call errors with Stubber or a recording fake client.

moto records what it is sent (no limits, no partial failures), so partial failures, throttling
and 5xx errors are injected with ``botocore.stub.Stubber`` on a real client (one batch: one
thread, so the order of calls is known) or with ``Recorder`` (thread-safe, for batches sent in
parallel; it can pass what it accepts on to a moto client).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws

from detector.analysis.findings import Finding
from detector.aws.securityhub import (
    MAX_BATCH_BYTES,
    MAX_PARALLEL_BATCHES,
    Report,
    SecurityHubPublisher,
    _batches,
)
from detector.core.errors import PublishFailed
from detector.report import asff, asff_checks
from detector.report.alerts import Alert, rollup
from tests import lake
from tests.unit.helpers import parquet_bytes, scan

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ACTOR = "111122223333"
NOW = datetime(2026, 11, 20, 11, tzinfo=UTC)
# A barrier that is never met fails the test instead of hanging it; nothing is timed.
BARRIER_SAFETY = 30


def alert(i: int, *, count: int = 1, account: str = ACTOR, agents: int = 1) -> Alert:
    """The alert of IAM user ``u{i}`` in ``account``: ``agents`` findings (one per user agent)
    of ``count`` successful calls each."""
    findings = []
    for a in range(agents):
        f = Finding(
            key=(
                "PutImage",
                f"arn:aws:iam::{account}:user/u{i}",
                account,
                f"docker/24.0.{a}",
                f"198.51.{i // 256}.{i % 256}",
                None,
                REGION,
            ),
            count=count,
            first_ms=lake.T0_MS,
            last_ms=lake.T0_MS + count,
            succeeded=count,
        )
        f.repositories.add(["app"], priority=True)
        findings.append(f)
    [one] = rollup(findings)
    return one


def to_asff(a: Alert, now: datetime = NOW, created_at: datetime | None = None) -> dict[str, Any]:
    return asff.to_asff(a, account_id=ACCOUNT, region=REGION, now=now, created_at=created_at)


def many(n: int) -> list[dict[str, Any]]:
    return [to_asff(alert(i)) for i in range(n)]


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def jittered(calls: list[float], ceilings: list[float]) -> bool:
    """The backoff doubles from 0.5 s, each delay at random between half its ceiling and the
    ceiling (equal jitter), so invocations throttled together do not retry together."""
    return len(calls) == len(ceilings) and all(
        c / 2 <= s <= c for s, c in zip(calls, ceilings, strict=True)
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECURITYHUB"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("securityhub", region_name=REGION)


def spy_batches(client: Any) -> list[int]:
    """Sizes of the BatchImportFindings calls the client makes."""
    sizes: list[int] = []
    lock = threading.Lock()

    def record(params: dict[str, Any], **_: Any) -> None:
        with lock:
            sizes.append(len(params["Findings"]))

    client.meta.events.register("provide-client-params.securityhub.BatchImportFindings", record)
    return sizes


def all_findings(client: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in client.get_paginator("get_findings").paginate():
        out += page["Findings"]
    return out


def client_error(code: str, status: int = 400) -> ClientError:
    body: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(body, "BatchImportFindings")


class Recorder:
    """A thread-safe client: records each call's Ids and how many calls were active at once.

    ``reject`` maps an Id to the ``ErrorCode`` it fails with; ``throttle`` holds Ids whose
    whole call fails with ``ThrottlingException``; the first ``meet`` calls wait for each other
    at a barrier (so they must run at the same time); ``backend`` (a moto client) imports
    whatever is accepted.
    """

    def __init__(
        self,
        *,
        reject: dict[str, str] | None = None,
        throttle: set[str] | None = None,
        meet: int = 0,
        backend: Any = None,
    ) -> None:
        self.reject = reject or {}
        self.throttle = throttle or set()
        self.barrier = threading.Barrier(meet) if meet else None
        self.meet = meet
        self.backend = backend
        self.lock = threading.Lock()
        self.calls: list[list[str]] = []
        self.active = 0
        self.max_active = 0

    def batch_import_findings(self, **kwargs: Any) -> dict[str, Any]:
        findings = kwargs["Findings"]
        ids = [f["Id"] for f in findings]
        with self.lock:
            self.calls.append(ids)
            n = len(self.calls)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.barrier is not None and n <= self.meet:
                self.barrier.wait(timeout=BARRIER_SAFETY)
            if self.throttle & set(ids):
                raise client_error("ThrottlingException")
            failed = [
                {"Id": i, "ErrorCode": self.reject[i], "ErrorMessage": "no\x1b[31m\nway"}
                for i in ids
                if i in self.reject
            ]
            accepted = [f for f in findings if f["Id"] not in self.reject]
            if self.backend is not None and accepted:
                self.backend.batch_import_findings(Findings=accepted)
            return {
                "FailedCount": len(failed),
                "SuccessCount": len(accepted),
                "FailedFindings": failed,
            }
        finally:
            with self.lock:
                self.active -= 1

    @property
    def sent(self) -> list[str]:
        return [i for call in self.calls for i in call]


def publisher(client: Any, sleeps: Callable[[float], None] | None = None) -> SecurityHubPublisher:
    return SecurityHubPublisher(client, sleep=sleeps or Sleeps())


# --- moto: batching and re-import ---------------------------------------------------------------


def test_250_alerts_in_three_calls(hub: Any) -> None:
    sizes = spy_batches(hub)
    sleeps = Sleeps()
    findings = many(250)
    report = SecurityHubPublisher(hub, sleep=sleeps).publish(findings)
    assert report == Report(imported=250, rejected=[])
    assert sorted(sizes) == [50, 100, 100]
    assert sleeps.calls == []
    stored = all_findings(hub)
    assert len(stored) == 250
    assert {f["Id"] for f in stored} == {f["Id"] for f in findings}
    one = next(f for f in stored if f["Id"] == findings[7]["Id"])
    assert one["ProductFields"]["principal"] == f"arn:aws:iam::{ACTOR}:user/u7"
    assert one["ProductFields"]["count"] == "1"
    assert one["Severity"]["Label"] == "MEDIUM"
    assert one["Resources"][0]["Type"] == "AwsIamUser"


def test_one_finding_per_principal_from_a_flood(hub: Any) -> None:
    # 120 sessions of one role and 80 user agents of one user: two alerts, two findings.
    role = f"arn:aws:iam::{ACTOR}:role/intruder"
    user = f"arn:aws:iam::{ACTOR}:user/mallory"
    events = [
        lake.event(
            arn=f"arn:aws:sts::{ACTOR}:assumed-role/intruder/s{i}",
            session_issuer=role,
            user_agent=f"ua/{i}",
        )
        for i in range(120)
    ] + [lake.event(arn=user, session_issuer=None, user_agent=f"x/{i}") for i in range(80)]
    alerts = rollup(scan(parquet_bytes(events, 2)).aggregate.findings())
    report = publisher(hub).publish([to_asff(a) for a in alerts])
    assert report.imported == 2 and report.rejected == []
    stored = {f["ProductFields"]["principal"]: f for f in all_findings(hub)}
    assert set(stored) == {role, user}
    assert stored[role]["ProductFields"]["count"] == "120"
    assert stored[role]["ProductFields"]["groups"] == "120"
    assert stored[user]["ProductFields"]["count"] == "80"
    assert stored[role]["Resources"][0] == {
        "Type": "AwsIamRole",
        "Id": role,
        "Partition": "aws",
        "Region": REGION,
        "Details": stored[role]["Resources"][0]["Details"],
    }


def test_reimport_same_key_updates_instead_of_duplicating(hub: Any) -> None:
    pub = publisher(hub)
    first = to_asff(alert(1, count=2))
    pub.publish([first, to_asff(alert(2))])
    later = NOW + timedelta(hours=1)
    # Same principal, more calls and another user agent: the same finding, updated.
    again = to_asff(alert(1, count=7, agents=2), now=later, created_at=NOW)
    assert again["Id"] == first["Id"]
    assert pub.publish([again]).imported == 1
    stored = all_findings(hub)
    assert len(stored) == 2
    updated = next(f for f in stored if f["Id"] == first["Id"])
    assert updated["ProductFields"]["count"] == "14"
    assert updated["ProductFields"]["groups"] == "2"
    assert updated["CreatedAt"] == "2026-11-20T11:00:00.000Z"
    assert updated["UpdatedAt"] == "2026-11-20T12:00:00.000Z"


def test_same_principal_in_another_account_is_another_finding(hub: Any) -> None:
    a, b = to_asff(alert(1)), to_asff(alert(1, account="777788889999"))
    assert a["Id"] != b["Id"]
    assert publisher(hub).publish([a, b]).imported == 2
    assert len(all_findings(hub)) == 2


def test_nothing_to_publish(hub: Any) -> None:
    sizes = spy_batches(hub)
    assert SecurityHubPublisher(hub).publish([]) == Report()
    assert sizes == []


def test_lazy_default_client(hub: Any) -> None:
    assert SecurityHubPublisher(sleep=Sleeps()).publish([to_asff(alert(1))]).imported == 1
    assert len(all_findings(hub)) == 1


# --- rejected findings: reported, never raised ---------------------------------------------------


def test_invalid_finding_is_rejected_not_sent_and_does_not_raise(hub: Any) -> None:
    sizes = spy_batches(hub)
    good = to_asff(alert(1))
    bad = to_asff(alert(2))
    bad["Title"] = "t" * 300
    worse = to_asff(alert(3))
    worse["Id"] = "evil\x1b[31m\n"
    report = publisher(hub).publish([good, bad, worse])
    assert report.imported == 1
    assert [fid for fid, _ in report.rejected] == [bad["Id"], "evil\\x1b[31m\\n"]
    assert report.rejected[0][1].startswith("invalid: ASFF Title")
    assert report.rejected[1][1].startswith("invalid: ASFF Id")
    assert sizes == [1]
    assert [f["Id"] for f in all_findings(hub)] == [good["Id"]]


def test_only_invalid_findings_makes_no_call(hub: Any) -> None:
    sizes = spy_batches(hub)
    bad = to_asff(alert(1))
    bad["Workflow"] = {"Status": "NEW"}
    report = publisher(hub).publish([bad])
    assert report.imported == 0
    [(fid, why)] = report.rejected
    assert fid == bad["Id"]
    assert why.startswith("invalid: ASFF Workflow: customer-owned field")
    assert sizes == []


def test_invalid_input_from_security_hub_is_rejected_others_imported(hub: Any) -> None:
    findings = many(5)
    ours = to_asff(alert(99))
    ours["ProductFields"] = {f"k{i}": "v" for i in range(51)}  # fails our own validation
    theirs = findings[2]["Id"]
    client = Recorder(reject={theirs: "InvalidInput"}, backend=hub)
    sleeps = Sleeps()
    report = publisher(client, sleeps).publish([*findings, ours])
    assert report.imported == 4
    why = dict(report.rejected)
    assert set(why) == {theirs, ours["Id"]}
    assert why[theirs] == f"{theirs}: InvalidInput no\\x1b[31m\\nway"  # escaped
    assert why[ours["Id"]].startswith("invalid: ASFF ProductFields")
    assert sleeps.calls == [] and len(client.calls) == 1  # not retried
    stored = {f["Id"] for f in all_findings(hub)}
    assert stored == {f["Id"] for f in findings} - {theirs}


@pytest.mark.parametrize("code", ["InvalidInput", "InvalidInputException", "AccessDeniedException"])
def test_permanent_finding_codes_rejected_without_retry(code: str) -> None:
    findings = many(3)
    client = Recorder(reject={findings[0]["Id"]: code})
    sleeps = Sleeps()
    report = publisher(client, sleeps).publish(findings)
    assert report.imported == 2
    assert [fid for fid, _ in report.rejected] == [findings[0]["Id"]]
    assert code in report.rejected[0][1]
    assert sleeps.calls == [] and len(client.calls) == 1


def test_later_batches_still_sent_after_a_rejected_finding() -> None:
    findings = many(150)
    first = findings[0]["Id"]
    client = Recorder(reject={first: "InvalidInput"})
    report = publisher(client).publish(findings)
    assert report.imported == 149
    assert [fid for fid, _ in report.rejected] == [first]
    assert sorted(len(c) for c in client.calls) == [50, 100]


# --- Stubber: transient failures and call errors (one batch) --------------------------------------


@pytest.fixture
def stubbed(aws_env: None) -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("securityhub", region_name=REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def response(*failed: tuple[str, str], sent: int) -> dict[str, Any]:
    return {
        "FailedCount": len(failed),
        "SuccessCount": sent - len(failed),
        "FailedFindings": [
            {"Id": fid, "ErrorCode": code, "ErrorMessage": f"{code} happened"}
            for fid, code in failed
        ],
    }


def test_transient_failed_finding_retried_then_publish_failed(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    a, b, c = (to_asff(alert(i)) for i in range(3))
    # b is rejected for good (not retried); c fails with a transient error every time.
    stubber.add_response(
        "batch_import_findings",
        response((b["Id"], "InvalidInput"), (c["Id"], "InternalError"), sent=3),
        {"Findings": [a, b, c]},
    )
    stubber.add_response(
        "batch_import_findings", response((c["Id"], "InternalError"), sent=1), {"Findings": [c]}
    )
    stubber.add_response(
        "batch_import_findings", response((c["Id"], "InternalError"), sent=1), {"Findings": [c]}
    )
    sleeps = Sleeps()
    with pytest.raises(PublishFailed) as err:
        SecurityHubPublisher(client, max_attempts=3, sleep=sleeps).publish([a, b, c])
    text = str(err.value)
    assert err.value.target == "securityhub"
    assert text.startswith("securityhub: 1 finding(s) failed: ")
    assert f"{c['Id']}: InternalError InternalError happened" in text
    assert b["Id"] not in text
    assert "(1 imported)" in text
    assert jittered(sleeps.calls, [0.5, 1.0])


def test_failed_finding_succeeds_on_retry(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a, b = to_asff(alert(1)), to_asff(alert(2))
    stubber.add_response(
        "batch_import_findings",
        response((b["Id"], "LimitExceededException"), sent=2),
        {"Findings": [a, b]},
    )
    stubber.add_response("batch_import_findings", response(sent=1), {"Findings": [b]})
    sleeps = Sleeps()
    assert SecurityHubPublisher(client, sleep=sleeps).publish([a, b]) == Report(imported=2)
    assert jittered(sleeps.calls, [0.5])


def test_failed_count_without_list_retries_whole_batch(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(alert(1))
    stubber.add_response(
        "batch_import_findings",
        {"FailedCount": 1, "SuccessCount": 0, "FailedFindings": []},
        {"Findings": [a]},
    )
    stubber.add_response("batch_import_findings", response(sent=1), {"Findings": [a]})
    assert SecurityHubPublisher(client, sleep=Sleeps()).publish([a]).imported == 1


def test_call_error_on_a_retry_keeps_what_was_imported(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a, b = to_asff(alert(1)), to_asff(alert(2))
    stubber.add_response(
        "batch_import_findings", response((b["Id"], "InternalError"), sent=2), {"Findings": [a, b]}
    )
    stubber.add_client_error(
        "batch_import_findings", service_error_code="AccessDeniedException", http_status_code=400
    )
    with pytest.raises(PublishFailed) as err:
        SecurityHubPublisher(client, sleep=Sleeps()).publish([a, b])
    text = str(err.value)
    assert text.startswith("securityhub: 1 finding(s) failed: ")
    assert "AccessDeniedException" in text and "(1 imported)" in text
    assert isinstance(err.value.__cause__, ClientError)


def test_throttling_and_500_retried_with_backoff(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(alert(1))
    stubber.add_client_error(
        "batch_import_findings", service_error_code="ThrottlingException", http_status_code=400
    )
    stubber.add_client_error(
        "batch_import_findings", service_error_code="InternalException", http_status_code=500
    )
    stubber.add_response("batch_import_findings", response(sent=1), {"Findings": [a]})
    sleeps = Sleeps()
    assert SecurityHubPublisher(client, sleep=sleeps).publish([a]).imported == 1
    assert jittered(sleeps.calls, [0.5, 1.0])


def test_unknown_5xx_and_429_codes_are_retried(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(alert(1))
    stubber.add_client_error(
        "batch_import_findings", service_error_code="SomethingNew", http_status_code=503
    )
    stubber.add_client_error(
        "batch_import_findings", service_error_code="SlowDown", http_status_code=429
    )
    stubber.add_response("batch_import_findings", response(sent=1))
    assert SecurityHubPublisher(client, sleep=Sleeps()).publish([a]).imported == 1


def test_throttled_until_attempts_run_out(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    for _ in range(4):
        stubber.add_client_error(
            "batch_import_findings", service_error_code="ThrottlingException", http_status_code=400
        )
    sleeps = Sleeps()
    with pytest.raises(PublishFailed) as err:
        SecurityHubPublisher(client, max_attempts=4, sleep=sleeps).publish([to_asff(alert(1))])
    assert "ThrottlingException" in str(err.value)
    assert "after 4 attempt(s)" in str(err.value)
    assert isinstance(err.value.__cause__, ClientError)
    assert jittered(sleeps.calls, [0.5, 1.0, 2.0])


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "InvalidAccessException", "InvalidInputException"]
)
def test_permanent_call_error_raises_at_once(stubbed: tuple[Any, Stubber], code: str) -> None:
    client, stubber = stubbed
    stubber.add_client_error("batch_import_findings", service_error_code=code, http_status_code=400)
    sleeps = Sleeps()
    with pytest.raises(PublishFailed, match=code) as err:
        SecurityHubPublisher(client, sleep=sleeps).publish([to_asff(alert(1))])
    assert "after 1 attempt(s)" in str(err.value)
    assert isinstance(err.value.__cause__, ClientError)
    assert sleeps.calls == []


def test_error_message_text_is_not_used_for_decisions(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "batch_import_findings",
        service_error_code="AccessDeniedException",
        service_message="Rate exceeded, throttling, please retry",
        http_status_code=400,
    )
    sleeps = Sleeps()
    with pytest.raises(PublishFailed):
        SecurityHubPublisher(client, sleep=sleeps).publish([to_asff(alert(1))])
    assert sleeps.calls == []


class Unreachable:
    """A client whose endpoint cannot be reached (no Stubber hook for connection errors)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def batch_import_findings(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise EndpointConnectionError(endpoint_url="https://securityhub.example")
        n = len(kwargs["Findings"])
        return {"FailedCount": 0, "SuccessCount": n, "FailedFindings": []}


def test_connection_errors_retried() -> None:
    client = Unreachable(failures=1)
    sleeps = Sleeps()
    assert publisher(client, sleeps).publish([to_asff(alert(1))]).imported == 1
    assert jittered(sleeps.calls, [0.5])


def test_connection_errors_exhausted() -> None:
    client = Unreachable(failures=5)
    with pytest.raises(PublishFailed, match="EndpointConnectionError") as err:
        publisher(client).publish([to_asff(alert(1))])
    assert isinstance(err.value.__cause__, EndpointConnectionError)
    assert client.calls == 3


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        SecurityHubPublisher(Unreachable(0), max_attempts=0)  # type: ignore[arg-type]


# --- parallel batches ---------------------------------------------------------------------------


def test_three_batches_sent_in_parallel() -> None:
    findings = many(250)
    # Each of the three calls waits until all three are under way: sent one after the other,
    # the first would never get past the barrier.
    client = Recorder(meet=3)
    report = publisher(client).publish(findings)
    assert report == Report(imported=250)
    assert client.max_active == 3
    assert sorted(len(c) for c in client.calls) == [50, 100, 100]
    assert sorted(client.sent) == sorted(f["Id"] for f in findings)


def test_parallel_batches_capped() -> None:
    findings = many(1000)
    client = Recorder(meet=MAX_PARALLEL_BATCHES)  # the first four calls run at once
    report = publisher(client).publish(findings)
    assert report.imported == 1000
    assert len(client.calls) == 10
    assert client.max_active == MAX_PARALLEL_BATCHES
    assert len(client.sent) == len(set(client.sent)) == 1000


def test_a_throttled_batch_fails_after_the_others_are_sent() -> None:
    findings = many(250)
    client = Recorder(throttle={findings[0]["Id"]})
    sleeps = Sleeps()
    with pytest.raises(PublishFailed) as err:
        publisher(client, sleeps).publish(findings)
    text = str(err.value)
    assert text.startswith("securityhub: 100 finding(s) failed: ")
    assert "ThrottlingException" in text and "(150 imported)" in text
    assert isinstance(err.value.__cause__, ClientError)
    assert jittered(sleeps.calls, [0.5, 1.0])
    assert len(client.calls) == 2 + 3  # two good batches, the third tried three times


# --- deadline -------------------------------------------------------------------------------------


def test_deadline_reached_raises_without_calling() -> None:
    client = Recorder()
    with pytest.raises(PublishFailed) as err:
        publisher(client).publish(many(250), deadline=lambda: True)
    text = str(err.value)
    assert text.startswith("securityhub: 250 finding(s) failed: ")
    assert "out of time" in text and "(0 imported)" in text
    assert client.calls == []


def test_deadline_reached_after_the_first_batch() -> None:
    lock = threading.Lock()
    asked = []

    def deadline() -> bool:
        with lock:
            asked.append(1)
            return len(asked) > 1

    client = Recorder()
    with pytest.raises(PublishFailed) as err:
        publisher(client).publish(many(300), deadline=deadline)
    assert len(client.calls) == 1
    assert "200 finding(s) failed" in str(err.value)
    assert "(100 imported)" in str(err.value)
    assert len(asked) == 3


def test_deadline_not_reached() -> None:
    client = Recorder()
    assert publisher(client).publish(many(3), deadline=lambda: False).imported == 3


def test_deadline_with_only_rejected_findings_does_not_raise() -> None:
    bad = to_asff(alert(1))
    bad["Severity"] = {"Label": "SEVERE"}
    client = Recorder()
    report = publisher(client).publish([bad], deadline=lambda: True)
    assert [fid for fid, _ in report.rejected] == [bad["Id"]]
    assert client.calls == []


# --- batching by size -----------------------------------------------------------------------------


def test_batches_respect_the_6mb_request_limit() -> None:
    big = []
    for i in range(60):
        item = to_asff(alert(i))
        item["Resources"][1]["Details"]["AwsEcrRepository"]["RepositoryPolicyText"] = "p" * (
            200 * 1024
        )
        asff_checks.validate(item)
        big.append(item)
    batches = list(_batches(big))
    assert sum(len(b) for b in batches) == 60
    assert len(batches) >= 3
    assert all(len(b) <= 100 for b in batches)
    for b in batches:
        assert sum(len(json.dumps(f).encode()) for f in b) <= MAX_BATCH_BYTES


def test_big_findings_published_in_size_bounded_calls() -> None:
    big = []
    for i in range(60):
        item = to_asff(alert(i))
        item["Resources"][1]["Details"]["AwsEcrRepository"]["RepositoryPolicyText"] = "p" * (
            200 * 1024
        )
        big.append(item)
    client = Recorder()
    assert publisher(client).publish(big).imported == 60
    assert len(client.calls) >= 3
    assert sorted(client.sent) == sorted(f["Id"] for f in big)
