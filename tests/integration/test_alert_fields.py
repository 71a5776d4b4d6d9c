"""What a responder acts on, through the Lambda handler with the state table: the access key
the calls were signed with, whether MFA was used, why calls failed (error codes with counts),
severity by outcome, and the exact commands for the key and the role's sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector import handler
from tests import lake
from tests.integration.test_attacks import announce, emails, hub_findings, invoke
from tests.integration.world import Aws

TABLE = "ecr-upload-detector-state"
USER = f"arn:aws:iam::{lake.ACCOUNT}:user/old-contractor"
KEY = "AKIAEXAMPLEOLDCONTRACTOR"
ROLE = f"arn:aws:iam::{lake.ACCOUNT}:role/intruder"


def by_user(i: int, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "arn": USER,
        "session_issuer": None,
        "user_type": "IAMUser",
        "principal_id": "AIDAEXAMPLECONTRACTOR",
        "credential_uid": KEY,
        "mfa": False,
        "time_ms": lake.T0_MS + i,
    }
    return lake.event(**(fields | more))


def test_key_mfa_and_error_codes_reach_email_json_and_security_hub(aws: Aws, state: str):
    events = [
        by_user(0, status="Failure", error_code="AccessDenied"),
        by_user(1, status="Failure", error_code="AccessDenied"),
        by_user(2, status="Failure", error_code="ImageTagAlreadyExistsException"),
        by_user(3),  # an image landed
    ]
    invoke(announce(aws, ("fields", events)))
    (digest,) = aws.digests()
    (alert,) = digest["alerts"]
    assert alert["access_keys"] == {"values": [KEY], "total": 1}
    assert alert["mfa"]["values"] == ["false"]
    assert alert["error_codes"]["values"] == [
        {"code": "AccessDenied", "count": 2},
        {"code": "ImageTagAlreadyExistsException", "count": 1},
    ]
    assert alert["severity"] == "medium"  # an image landed: the spec's severity
    email = " ".join(emails(aws)[-1].split())
    assert f"Access key ids (1): {KEY}" in email
    assert "MFA used: no" in email
    assert "Why calls failed: AccessDenied x2, ImageTagAlreadyExistsException x1" in email
    assert f"--access-key-id {KEY}" in email and "--status Inactive" in email
    (finding,) = hub_findings(aws)
    keys = [r for r in finding["Resources"] if r["Type"] == "AwsIamAccessKey"]
    assert [k["Id"] for k in keys] == [KEY]
    assert keys[0]["Details"]["AwsIamAccessKey"]["AccessKeyId"] == KEY
    assert finding["Severity"]["Label"] == "MEDIUM"


def test_severity_follows_the_outcome(aws: Aws, state: str):
    """Every call refused: LOW (credentials probed, nothing landed), in the subject, the JSON
    and Security Hub; the first success after that is MEDIUM again."""
    refused = [by_user(i, status="Failure", error_code="AccessDenied") for i in range(4)]
    invoke(announce(aws, ("refused", refused)))
    (digest,) = aws.digests()
    assert digest["alerts"][0]["severity"] == "low" and digest["severity"] == "low"
    (finding,) = hub_findings(aws)
    assert finding["Severity"]["Label"] == "LOW"
    invoke(announce(aws, ("landed", [by_user(10)])))
    (digest,) = aws.digests()
    assert digest["alerts"][0]["reason"] == "first_success"
    assert digest["alerts"][0]["severity"] == "medium"
    (finding,) = hub_findings(aws)
    assert finding["Severity"]["Label"] == "MEDIUM"


def test_a_role_gets_the_revoke_sessions_command(aws: Aws, state: str):
    push = lake.event(
        arn=f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/intruder/s-1",
        session_issuer=ROLE,
        credential_uid="ASIAEXAMPLESESSION01",
        mfa=True,
    )
    invoke(announce(aws, ("role", [push])))
    email = " ".join(emails(aws)[-1].split())
    assert "aws iam put-role-policy" in email and "--role-name intruder" in email
    assert "AWSRevokeOlderSessions" in email and "aws:TokenIssueTime" in email
    assert "MFA used: yes" in email
    assert "update-access-key" not in email  # a session key is not disabled, it expires


def test_business_hours_alert_states_window_zone_and_local_times(
    aws: Aws, state: str, monkeypatch: pytest.MonkeyPatch
):
    """With Europe/Berlin and an end of 11:00, the email says why it fired: the window, the
    zone and each push's local time (10:30 UTC on a Friday in November is 11:30 in Berlin)."""
    monkeypatch.setenv("DETECTIONS", "ecr-upload-outside-business-hours")
    monkeypatch.setenv("BUSINESS_HOURS_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("BUSINESS_HOURS_END", "11:00")
    handler.reset()
    push = by_user(0, time_ms=lake.T0_MS + 30 * 60_000)  # 2026-11-20T10:30Z, a Friday
    invoke(announce(aws, ("late", [push])))
    email = " ".join(emails(aws)[-1].split())
    assert "Business hours: Monday to Friday 08:00-11:00, Europe/Berlin." in email
    assert "Fri 2026-11-20 11:30 (+01:00): 1 call(s)" in email


def test_the_image_digest_reaches_email_json_and_security_hub(aws: Aws, state: str):
    digest_ = "sha256:" + "c" * 64
    landed = by_user(
        0,
        request_json=lake.put_image_request("prod/payments-api", "v9"),
        response_json=(
            '{"image": {"registryId": "111122223333", "repositoryName": "prod/payments-api", '
            f'"imageId": {{"imageDigest": "{digest_}", "imageTag": "v9"}}}}}}'
        ),
    )
    invoke(announce(aws, ("digest", [landed])))
    digests = [d for d in aws.digests() if d["alerts"]]
    alert = digests[0]["alerts"][0]
    assert alert["image_digests"] == {"values": [digest_], "total": 1}
    email = " ".join(emails(aws)[0].split())
    assert "Image digests (1):" in email and digest_ in email
    assert f"--image-ids imageDigest={digest_}" in email and "batch-get-image" in email
    (finding,) = hub_findings(aws)
    images = [r for r in finding["Resources"] if r["Type"] == "AwsEcrContainerImage"]
    assert [i["Details"]["AwsEcrContainerImage"]["ImageDigest"] for i in images] == [digest_]
    assert images[0]["Details"]["AwsEcrContainerImage"]["RepositoryName"] == "prod/payments-api"


@pytest.mark.parametrize(
    ("version", "v1_request"), [(2, "flattened"), (1, "flattened"), (1, "json")]
)
def test_the_digest_is_read_from_either_version_and_layout(version: int, v1_request: str):
    """v2: ``api.response.data``; v1: ``unmapped`` flattened (``responseElements.image.imageId.
    imageDigest``) or one whole JSON value (``responseElements``)."""
    import io

    from detector.analysis import engine
    from detector.core.allowlist import Allowlist

    digest_ = "sha256:" + "d" * 64
    response = json.dumps({"image": {"imageId": {"imageDigest": digest_}}})
    landed = by_user(0, response_json=response)
    buf = io.BytesIO()
    lake.write_object(buf, [landed], version, v1_request=v1_request)
    buf.seek(0)
    result = engine.scan_object(buf, "o", Allowlist.of([]))
    [finding] = result.findings()
    record = finding.to_record()
    assert record["image_digests"] == record["succeeded_image_digests"] == [digest_]
