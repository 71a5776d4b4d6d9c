"""Attacks on the catalogue's engine (an attacker's pass, issue 20), each through the real
reader and, where it applies, the SQL on DuckDB: every test here failed on the code before its
fix.

- A policy written with JSON escapes (``\\u0041llow``, ``\\u004bMS:Encrypt``) is what IAM reads
  as ``Allow``/``KMS:Encrypt``: folding to lower case before parsing let it through.
- Invalid UTF-8 in the error code of a row no detection keeps failed the whole object once a
  detection watched every operation (the other detections' findings lost with it).
- An event time past 2^53 ms failed a threshold detection's scan.
- A threshold alert's email failed on a bucket outside years 1-9999, and carried a distinct
  value (300,000 characters, control characters) raw.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector import detections
from detector.analysis import athena_results, athena_sql, engine
from detector.core.allowlist import Allowlist
from detector.lake.schema import SchemaVersion
from detector.report import alerts, digest
from tests.lake import T0_MS, columns_from_events, event, key_for, nest, write_object
from tests.unit.athena_duckdb import REGION, athena_on_duckdb, rows_of

NOBODY = Allowlist.of([])
KMS = "detect-users-creating-keys-with-encrypt-policy-without-mfa"
POLICY = "create-policy-version-to-allow-all-resources"
STOP = "defense-evasion-stop-logging-cloudtrail"
DENIED = "iam-accessdenied-discovery-events"
SESSIONS = "concurrent-sessions-from-different-ips"

# Escaped as a caller may write them: IAM (any JSON parser) reads the letters.
ESCAPED_KMS = (
    '{"\\u0053tatement":[{"\\u0045ffect":"\\u0041llow","\\u0050rincipal":"*",'
    '"Action":"\\u004bMS:Encrypt","Resource":"*"}]}'
)
ESCAPED_ADMIN = '{"Statement":{"Effect":"\\u0041llow","Action":"\\u002a","Resource":"*"}}'


def _scan(events: list[dict[str, Any]], version: int, slugs: list[str], **layout: Any) -> Any:
    buf = io.BytesIO()
    write_object(buf, events, version, **layout)
    active = detections.activate(slugs)
    return engine.scan_object(io.BytesIO(buf.getvalue()), "x", NOBODY, key_for(version), active)


def _count(result: Any, slug: str) -> int:
    return sum(f.count for f in result.aggregates[detections.get(slug).id].findings())


@pytest.mark.parametrize(("version", "v1_request"), [(1, "flattened"), (1, "json"), (2, None)])
def test_escaped_policies_are_read_as_iam_reads_them(tmp_path: Path, version: int, v1_request):
    events = [
        event(
            operation="PutKeyPolicy",
            service="kms.amazonaws.com",
            request_json=json.dumps({"keyId": "k-1", "policy": ESCAPED_KMS}),
        ),
        event(
            operation="CreatePolicy",
            service="iam.amazonaws.com",
            request_json=json.dumps({"policyName": "p", "policyDocument": ESCAPED_ADMIN}),
        ),
    ]
    layout = {"v1_request": v1_request} if v1_request else {}
    result = _scan(events, version, [KMS, POLICY], **layout)
    assert _count(result, KMS) == 1 and _count(result, POLICY) == 1
    # The Athena statement agrees (on DuckDB, Trino's json_parse/json_format emulated).
    path = tmp_path / key_for(version)
    path.parent.mkdir(parents=True)
    write_object(path, events, version, **layout)
    con = athena_on_duckdb([(path, version)])
    schema_version = SchemaVersion.V1 if version == 1 else SchemaVersion.V2
    for slug in (KMS, POLICY):
        [active] = detections.activate([slug])
        query = athena_sql.Query(
            REGION, schema_version, athena_sql.Period.parse("2026-11-01", "2026-12-31")
        )
        rows = rows_of(con, athena_sql.build(query, NOBODY, active), active.detection)
        assert len(athena_results.findings(rows, active.detection)) == 1, slug


def _invalid_utf8(arr: pa.Array, row: int) -> pa.Array:
    values = [None if v is None else v.encode() for v in arr.to_pylist()]
    values[row] = (values[row] or b"") + b"\xff\xfe"
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), raw.null_count)


def _with_bad_error_code(table: pa.Table, row: int) -> pa.Table:
    i = table.schema.get_field_index("api")
    api = table.column("api").combine_chunks()
    response = api.field("response")
    error = _invalid_utf8(response.field("error"), row)
    fields = [response.field(j) for j in range(response.type.num_fields)]
    names = [f.name for f in response.type]
    fields[names.index("error")] = error
    new_response = pa.StructArray.from_arrays(fields, names=names, mask=response.is_null())
    top = [api.field(j) for j in range(api.type.num_fields)]
    top_names = [f.name for f in api.type]
    top[top_names.index("response")] = new_response
    return table.set_column(i, "api", pa.StructArray.from_arrays(top, names=top_names))


@pytest.mark.parametrize("version", [1, 2])
def test_a_bad_error_code_in_a_row_nobody_keeps_does_not_fail_the_object(version: int):
    events = [
        event(
            operation="StopLogging", service="cloudtrail.amazonaws.com", request_json='{"name":"t"}'
        ),
        event(
            operation="GetObject",
            service="s3.amazonaws.com",
            status="Failure",
            error_code="NoSuchKey",
        ),
    ]
    table = _with_bad_error_code(nest(columns_from_events(events), version), row=1)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    active = detections.activate([STOP, DENIED])
    result = engine.scan_object(io.BytesIO(buf.getvalue()), "x", NOBODY, key_for(version), active)
    assert _count(result, STOP) == 1 and _count(result, DENIED) == 0


@pytest.mark.parametrize("version", [1, 2])
def test_a_time_past_2_53_ms_is_in_no_bucket(version: int):
    denied = dict(
        operation="AssumeRole",
        service="sts.amazonaws.com",
        arn="arn:aws:iam::111122223333:user/x",
        user_type="IAMUser",
        session_issuer=None,
        status="Failure",
        error_code="AccessDenied",
    )
    events = [event(time_ms=2**62, **denied)] + [
        event(time_ms=T0_MS + i, **denied) for i in range(3)
    ]
    result = _scan(events, version, ["iam-assume-role-policy-brute-force"])
    run = engine.Run(NOBODY, detections.activate(["iam-assume-role-policy-brute-force"]))
    run.add(result)
    assert sum(f.count for f in run.findings()) == 3  # the three with a time; none lost


def test_a_threshold_email_survives_any_bucket_and_escapes_its_values():
    huge = "198.51.100.7\x1b[31m\n" + "9" * 300_000
    base = dict(
        operation="DescribeEventAggregates",
        service="health.amazonaws.com",
        arn="arn:aws:iam::111122223333:user/alice",
        user_type="IAMUser",
        session_issuer=None,
    )
    year_zero = -62_200_000_000_000  # before 0001-01-01: no calendar date
    events = [
        event(time_ms=year_zero, src_ip="203.0.113.9", **base),
        event(time_ms=year_zero + 1000, src_ip=huge, **base),
    ]
    result = _scan(events, 2, [SESSIONS])
    rolled = alerts.rollup(result.findings())
    assert len(rolled) == 1 and alerts.reaches(rolled[0])
    message = digest.message(rolled)
    email = json.loads(message.message)["email"]
    assert "\x1b" not in email and "9" * 1000 not in email
    assert "ms since 1970" in email and "(the threshold is 2)" in " ".join(email.split())


def test_bucket_arithmetic_is_in_double_in_sql():
    [active] = detections.activate(["iam-assume-role-policy-brute-force"])
    query = athena_sql.Query(
        REGION, SchemaVersion.V2, athena_sql.Period.parse("2026-11-01", "2026-11-02")
    )
    sql = athena_sql.build(query, NOBODY, active)
    # 3600000.0 would be a DECIMAL in Trino (its quotient rounded to one place).
    assert "CAST(3600000 AS DOUBLE)" in sql and "3600000.0" not in sql
