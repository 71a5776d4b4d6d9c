"""Security Hub publishing: batching and re-import under moto; failures and retries with Stubber.

moto records what it is sent (no limits, no partial failures), so partial failures, throttling
and 5xx errors are injected with ``botocore.stub.Stubber`` on a real client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws

from detector import asff
from detector.aws.securityhub import MAX_BATCH_BYTES, SecurityHubPublisher, _batches
from detector.errors import PublishFailed
from detector.findings import Finding

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)


def finding(i: int, *, count: int = 1) -> Finding:
    f = Finding(
        key=(
            "PutImage",
            f"arn:aws:iam::111122223333:user/u{i}",
            "111122223333",
            "docker/24.0.7",
            f"198.51.{i // 256}.{i % 256}",
            None,
            REGION,
        ),
        count=count,
        first_ms=1_795_168_800_000,
        last_ms=1_795_168_800_000 + count,
        succeeded=count,
    )
    f.repositories.add(["app"])
    return f


def to_asff(f: Finding, now: datetime = NOW) -> dict[str, Any]:
    return asff.to_asff(f, account_id=ACCOUNT, region=REGION, now=now)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


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

    def record(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["Findings"]))

    client.meta.events.register("provide-client-params.securityhub.BatchImportFindings", record)
    return sizes


def all_findings(client: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in client.get_paginator("get_findings").paginate():
        out += page["Findings"]
    return out


# --- moto: batching and re-import ---------------------------------------------------------------


def test_250_findings_in_three_calls(hub: Any) -> None:
    sizes = spy_batches(hub)
    sleeps = Sleeps()
    findings = [to_asff(finding(i)) for i in range(250)]
    assert SecurityHubPublisher(hub, sleep=sleeps).publish(findings) == 250
    assert sizes == [100, 100, 50]
    assert sleeps.calls == []
    stored = all_findings(hub)
    assert len(stored) == 250
    assert {f["Id"] for f in stored} == {f["Id"] for f in findings}
    one = next(f for f in stored if f["Id"] == findings[7]["Id"])
    assert one["ProductFields"]["user"] == "arn:aws:iam::111122223333:user/u7"
    assert one["Severity"]["Label"] == "MEDIUM"
    assert one["Resources"][0]["Type"] == "AwsIamUser"


def test_reimport_same_key_updates_instead_of_duplicating(hub: Any) -> None:
    publisher = SecurityHubPublisher(hub, sleep=Sleeps())
    publisher.publish([to_asff(finding(1, count=2)), to_asff(finding(2))])
    later = NOW + timedelta(hours=1)
    assert publisher.publish([to_asff(finding(1, count=7), now=later)]) == 1
    stored = all_findings(hub)
    assert len(stored) == 2
    again = next(f for f in stored if f["ProductFields"]["user"].endswith("/u1"))
    assert again["ProductFields"]["count"] == "7"
    assert again["UpdatedAt"] == "2026-11-20T12:00:00.000Z"


def test_nothing_to_publish(hub: Any) -> None:
    sizes = spy_batches(hub)
    assert SecurityHubPublisher(hub).publish([]) == 0
    assert sizes == []


def test_invalid_finding_is_not_sent_and_is_reported(hub: Any) -> None:
    good = to_asff(finding(1))
    bad = to_asff(finding(2))
    bad["Title"] = "t" * 300
    with pytest.raises(PublishFailed) as err:
        SecurityHubPublisher(hub, sleep=Sleeps()).publish([good, bad])
    assert err.value.target == "securityhub"
    assert f"{bad['Id']}: invalid ASFF Title" in str(err.value)
    assert "1 finding(s) failed" in str(err.value)
    assert [f["Id"] for f in all_findings(hub)] == [good["Id"]]


def test_lazy_default_client(hub: Any) -> None:
    assert SecurityHubPublisher(sleep=Sleeps()).publish([to_asff(finding(1))]) == 1
    assert len(all_findings(hub)) == 1


# --- Stubber: partial failures and call errors ----------------------------------------------------


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


def test_failed_findings_retried_then_publish_failed(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a, b, c = (to_asff(finding(i)) for i in range(3))
    # b fails for good (not retried); c fails with a transient error every time.
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
    assert text.startswith("securityhub: 2 finding(s) failed: ")
    assert f"{b['Id']}: InvalidInput InvalidInput happened" in text
    assert f"{c['Id']}: InternalError InternalError happened" in text
    assert "(1 imported)" in text
    assert sleeps.calls == [0.5, 1.0]


def test_failed_finding_succeeds_on_retry(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a, b = to_asff(finding(1)), to_asff(finding(2))
    stubber.add_response(
        "batch_import_findings",
        response((b["Id"], "LimitExceededException"), sent=2),
        {"Findings": [a, b]},
    )
    stubber.add_response("batch_import_findings", response(sent=1), {"Findings": [b]})
    sleeps = Sleeps()
    assert SecurityHubPublisher(client, sleep=sleeps).publish([a, b]) == 2
    assert sleeps.calls == [0.5]


def test_failed_count_without_list_retries_whole_batch(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(finding(1))
    stubber.add_response(
        "batch_import_findings",
        {"FailedCount": 1, "SuccessCount": 0, "FailedFindings": []},
        {"Findings": [a]},
    )
    stubber.add_response("batch_import_findings", response(sent=1), {"Findings": [a]})
    assert SecurityHubPublisher(client, sleep=Sleeps()).publish([a]) == 1


def test_permanent_failure_not_retried(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(finding(1))
    stubber.add_response(
        "batch_import_findings", response((a["Id"], "InvalidInput"), sent=1), {"Findings": [a]}
    )
    sleeps = Sleeps()
    with pytest.raises(PublishFailed, match="1 finding\\(s\\) failed"):
        SecurityHubPublisher(client, sleep=sleeps).publish([a])
    assert sleeps.calls == []


def test_throttling_and_500_retried_with_backoff(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(finding(1))
    stubber.add_client_error(
        "batch_import_findings", service_error_code="ThrottlingException", http_status_code=400
    )
    stubber.add_client_error(
        "batch_import_findings", service_error_code="InternalException", http_status_code=500
    )
    stubber.add_response("batch_import_findings", response(sent=1), {"Findings": [a]})
    sleeps = Sleeps()
    assert SecurityHubPublisher(client, sleep=sleeps).publish([a]) == 1
    assert sleeps.calls == [0.5, 1.0]


def test_unknown_5xx_code_is_retried(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    a = to_asff(finding(1))
    stubber.add_client_error(
        "batch_import_findings", service_error_code="SomethingNew", http_status_code=503
    )
    stubber.add_response("batch_import_findings", response(sent=1))
    assert SecurityHubPublisher(client, sleep=Sleeps()).publish([a]) == 1


def test_throttled_until_attempts_run_out(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    for _ in range(4):
        stubber.add_client_error(
            "batch_import_findings", service_error_code="ThrottlingException", http_status_code=400
        )
    sleeps = Sleeps()
    with pytest.raises(PublishFailed) as err:
        SecurityHubPublisher(client, max_attempts=4, sleep=sleeps).publish([to_asff(finding(1))])
    assert "ThrottlingException" in str(err.value)
    assert "after 4 attempt(s)" in str(err.value)
    assert isinstance(err.value.__cause__, ClientError)
    assert sleeps.calls == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "InvalidAccessException", "InvalidInputException"]
)
def test_permanent_call_error_raises_at_once(stubbed: tuple[Any, Stubber], code: str) -> None:
    client, stubber = stubbed
    stubber.add_client_error("batch_import_findings", service_error_code=code, http_status_code=400)
    sleeps = Sleeps()
    with pytest.raises(PublishFailed, match=code) as err:
        SecurityHubPublisher(client, sleep=sleeps).publish([to_asff(finding(1))])
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
        SecurityHubPublisher(client, sleep=sleeps).publish([to_asff(finding(1))])
    assert sleeps.calls == []


def test_later_batches_still_sent_after_a_failed_finding(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    findings = [to_asff(finding(i)) for i in range(150)]
    first = findings[0]["Id"]
    stubber.add_response(
        "batch_import_findings",
        response((first, "InvalidInput"), sent=100),
        {"Findings": findings[:100]},
    )
    stubber.add_response("batch_import_findings", response(sent=50), {"Findings": findings[100:]})
    with pytest.raises(PublishFailed) as err:
        SecurityHubPublisher(client, sleep=Sleeps()).publish(findings)
    assert "1 finding(s) failed" in str(err.value)
    assert "(149 imported)" in str(err.value)


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
    assert SecurityHubPublisher(client, sleep=sleeps).publish([to_asff(finding(1))]) == 1  # type: ignore[arg-type]
    assert sleeps.calls == [0.5]


def test_connection_errors_exhausted() -> None:
    client = Unreachable(failures=5)
    with pytest.raises(PublishFailed, match="EndpointConnectionError") as err:
        SecurityHubPublisher(client, sleep=Sleeps()).publish([to_asff(finding(1))])  # type: ignore[arg-type]
    assert isinstance(err.value.__cause__, EndpointConnectionError)
    assert client.calls == 3


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        SecurityHubPublisher(Unreachable(0), max_attempts=0)  # type: ignore[arg-type]


# --- batching by size -----------------------------------------------------------------------------


def test_batches_respect_the_6mb_request_limit() -> None:
    big = []
    for i in range(60):
        item = to_asff(finding(i))
        item["Resources"][1]["Details"]["AwsEcrRepository"]["RepositoryPolicyText"] = "p" * (
            200 * 1024
        )
        asff.validate(item)
        big.append(item)
    batches = list(_batches(big))
    assert sum(len(b) for b in batches) == 60
    assert len(batches) >= 3
    assert all(len(b) <= 100 for b in batches)
    for b in batches:
        assert sum(len(json.dumps(f).encode()) for f in b) <= MAX_BATCH_BYTES
