"""The unknown-user detection's output, byte for byte, as it was before detections became specs.

Issue 12 reshaped the engine around detection specs and promised that the default detection's
output does not change. This test holds it to that: the jsonl, JSON and table of ``scan``, the
SNS message (subject, email, JSON body, attributes), the ASFF findings and the Athena statements
of both source versions are compared with files written by the code before the change.

Regenerate (only for an intended change, and say so in the README): ``GOLDEN_UPDATE=1 pytest
tests/unit/test_unchanged.py``.
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detector.analysis import athena_sql, output
from detector.core.allowlist import Allowlist
from detector.report import alerts, asff, digest
from tests.lake import ACCOUNT, CI_ROLE, T0_MS, event, put_image_request
from tests.unit.helpers import nested, run_over, table_bytes

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "unknown_user"
STS = f"arn:aws:sts::{ACCOUNT}:assumed-role"
ALLOWLIST = Allowlist.of([CI_ROLE, "ecr.amazonaws.com"])


def _events() -> list[dict]:
    return [
        event(),  # the allowlisted CI role
        event(
            arn=f"arn:aws:iam::{ACCOUNT}:user/old-contractor",
            session_issuer=None,
            principal_id="AIDAEXAMPLE",
            user_type="IAMUser",
            src_ip="203.0.113.9",
            request_json=put_image_request("payments/api", "latest"),
        ),
        event(
            arn=f"arn:aws:iam::{ACCOUNT}:user/old-contractor",
            session_issuer=None,
            time_ms=T0_MS + 3_600_000,
            status="Failure",
            error_code="RepositoryNotFoundException",
            request_json=put_image_request("decoy\u202e/x", "v\n2"),
            user_agent="evil\x1b[31m agent",
        ),
        event(
            arn=f"{STS}/intruder/s-1",
            session_issuer=f"arn:aws:iam::{ACCOUNT}:role/intruder",
            time_ms=T0_MS + 7 * 3_600_000,
            region="eu-west-1",
            src_ip="2001:db8::1",
        ),
        event(
            arn=None,
            session_issuer=None,
            principal_id=None,
            invoked_by=None,
            src_domain="replication.example.com",
            src_ip=None,
        ),
        event(operation="GetObject", arn=f"arn:aws:iam::{ACCOUNT}:user/old-contractor"),
    ]


def _outputs() -> dict[str, str]:
    evs = _events()
    objects = [
        (
            f"aws/CLOUD_TRAIL_MGMT/{v}.0/region=us-east-1/obj{v}.parquet",
            table_bytes(nested(evs[v - 1 :: 2] if v == 1 else evs, v)),
        )
        for v in (1, 2)
    ]
    run = run_over(objects, ALLOWLIST)
    findings = run.findings()
    out: dict[str, str] = {}
    buf = io.StringIO()
    output.write_jsonl(findings, buf)
    out["scan.jsonl"] = buf.getvalue()
    buf = io.StringIO()
    output.write_json(findings, buf)
    out["scan.json"] = buf.getvalue()
    buf = io.StringIO()
    output.write_table(findings, buf)
    out["scan.txt"] = buf.getvalue()
    rolled = alerts.rollup(findings)
    msg = digest.message(rolled, context={"allowlist_parameter": "/ecr-upload-detector/allowlist"})
    envelope = json.loads(msg.message)
    out["sns.subject.txt"] = msg.subject + "\n"
    out["sns.email.txt"] = envelope["email"]
    out["sns.default.json"] = envelope["default"] + "\n"
    out["sns.attributes.json"] = json.dumps(msg.attributes, indent=1, sort_keys=True) + "\n"
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    findings_asff = [
        asff.to_asff(a, account_id=ACCOUNT, region="us-east-1", now=now) for a in rolled
    ]
    out["asff.json"] = json.dumps(findings_asff, indent=1, sort_keys=True) + "\n"
    for version in ("1", "2"):
        query = athena_sql.Query(
            region="us-east-1",
            version=athena_sql.parse_version(version),
            period=athena_sql.Period.parse("2026-11-01", "2026-11-20"),
            accounts=(ACCOUNT,),
        )
        out[f"athena.v{version}.sql"] = athena_sql.build(query, ALLOWLIST) + "\n"
    return out


def test_unknown_user_output_is_unchanged() -> None:
    got = _outputs()
    if os.environ.get("GOLDEN_UPDATE"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text, encoding="utf-8", newline="")
        pytest.skip("golden files rewritten")
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(got)
    for name, text in got.items():
        want = (GOLDEN / name).read_text(encoding="utf-8")
        assert text == want, f"{name} changed"
    # Guard against an empty snapshot passing: the fixture must produce real alerts.
    assert got["scan.jsonl"].count("\n") >= 4
    assert "old-contractor" in got["sns.email.txt"]
