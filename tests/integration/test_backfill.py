"""``backfill`` and ``suggest-allowlist --from-athena`` through the Athena API, under moto.

Moto's Athena runs no SQL: it returns results queued through its documented moto-api endpoint.
The tests queue what the statement computes on DuckDB over generated objects (see
``tests/unit/test_athena_sql.py``), shaped as Athena returns it (a header row, lowercased column
names, NULL as a datum without ``VarCharValue``), and compare the command's findings with
``scan``. What moto cannot do (a FAILED query with its reason, bytes scanned, several result
pages) is added to its answers with botocore event hooks, or played with botocore's Stubber.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import Stubber
from moto import mock_aws
from moto.athena.models import athena_backends
from moto.moto_api import state_manager

from detector import detections
from detector.analysis import athena_results, athena_sql
from detector.app.cli import main
from detector.aws import athena as athena_adapter
from detector.aws.dynamodb import StateTable
from detector.core.allowlist import Allowlist
from detector.core.objects import ObjectRef
from detector.core.spec import Active
from detector.report.alerts import rollup
from detector.report.asff import finding_id
from tests.integration.world import create_state_table, findings_inbox, read_digests
from tests.lake import ACCOUNT, key_for, write_object
from tests.unit.test_athena_sql import (
    ALLOWLIST,
    DAYS,
    athena_on_duckdb,
    comparable,
    events_of_day,
    scan,
    trino_on_duckdb,
)

REGION = "us-east-1"
MOTO_ACCOUNT = "123456789012"
WORKGROUP = "primary"
OUTPUT = "s3://athena-results/backfill/"
TABLE = "ecr-upload-detector-state"


def run(*argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), err or io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- the world -------------------------------------------------------------------------------


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sqs = boto3.client("sqs")
        self.sns = boto3.client("sns")
        self.hub = boto3.client("securityhub")
        self.hub.enable_security_hub()
        self.topic, self.queue = findings_inbox(self.sns, self.sqs)
        boto3.client("s3").create_bucket(Bucket="athena-results")
        self.allowlist = tmp / "allowlist.txt"
        self.allowlist.write_text("\n".join(ALLOWLIST.entries) + "\n")

    # Athena as moto plays it
    @property
    def executions(self) -> dict[str, Any]:
        return athena_backends[MOTO_ACCOUNT][REGION].executions

    def queue_result(self, rows: list[list[str | None]]) -> None:
        """The next query's result, as Athena returns a SELECT's (header row first)."""
        names = [c.lower() for c in athena_results.RESULT_COLUMNS]
        body = {
            "account_id": MOTO_ACCOUNT,
            "region": REGION,
            "results": [
                {
                    "rows": [{"Data": [{"VarCharValue": n} for n in names]}]
                    + [
                        {"Data": [{} if v is None else {"VarCharValue": v} for v in row]}
                        for row in rows
                    ],
                    "column_info": [
                        {"Name": n, "Label": n, "Type": "varchar", "Nullable": "UNKNOWN"}
                        for n in names
                    ],
                }
            ],
        }
        got = requests.post(
            "http://motoapi.amazonaws.com/moto-api/static/athena/query-results",
            json=body,
            timeout=10,
        )
        assert got.status_code == 201

    # what was published
    def digests(self) -> list[dict[str, Any]]:
        return read_digests(self.sqs, self.queue)

    def hub_findings(self) -> list[dict[str, Any]]:
        return list(self.hub.get_findings()["Findings"])


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr(athena_adapter, "FIRST_POLL_S", 0.0)
    monkeypatch.setattr(athena_adapter, "MAX_POLL_S", 0.0)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    with mock_aws():
        boto3.setup_default_session()
        # QUEUED, then RUNNING, then SUCCEEDED: one step per GetQueryExecution.
        state_manager.set_transition("athena::execution", {"progression": "manual", "times": 1})
        try:
            yield World(tmp_path)
        finally:
            state_manager.unset_transition("athena::execution")


def set_execution(world: World, **changes: Any) -> Callable[..., None]:
    """Hook the clients the command builds (boto3's default session): GetQueryExecution answers
    get what moto cannot give (a final state, its reason, bytes scanned)."""

    def hook(parsed: dict[str, Any], **_: Any) -> None:
        execution = parsed["QueryExecution"]
        status, stats = execution["Status"], execution["Statistics"]
        if "state" in changes and status["State"] not in ("QUEUED",):
            status["State"] = changes["state"]
        if "reason" in changes:
            status["StateChangeReason"] = changes["reason"]
        if "scanned" in changes:
            stats["DataScannedInBytes"] = changes["scanned"]

    boto3.DEFAULT_SESSION.events.register("after-call.athena.GetQueryExecution", hook)
    return hook


# --- a lake, and what the statement computes on it ------------------------------------------


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> list[tuple[Path, int, str]]:
    rng = random.Random(21)
    root = tmp_path_factory.mktemp("backfill-lake")
    written = []
    for day in DAYS[:3]:
        for version in (1, 2):
            eventday = f"{day:%Y%m%d}"
            path = root / key_for(version, day=eventday)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_object(path, events_of_day(rng, day, ACCOUNT, 80), version)
            written.append((path, version, eventday))
    return written


def athena_rows(lake_: list[tuple[Path, int, str]], version: int, sql: str) -> list[Any]:
    con = athena_on_duckdb([(p, v) for p, v, _ in lake_ if v == version])
    return [
        [None if v is None else str(v) for v in row]
        for row in con.execute(trino_on_duckdb(sql)).fetchall()
    ]


def statement(version: int, allowlist: Allowlist = ALLOWLIST, active: Active | None = None) -> str:
    q = athena_sql.Query(
        REGION,
        athena_sql.parse_version(str(version)),
        athena_sql.Period.parse("2026-11-18", "2026-11-19"),
    )
    return athena_sql.build(q, allowlist, active)


def backfill_args(world: World, version: int, *extra: str) -> list[str]:
    return [
        "backfill",
        "--allowlist",
        str(world.allowlist),
        "--region",
        REGION,
        "--source-version",
        str(version),
        "--start",
        "2026-11-18",
        "--end",
        "2026-11-19",
        "--workgroup",
        WORKGROUP,
        "--output",
        OUTPUT,
        *extra,
    ]


def records(jsonl: str) -> list[dict[str, Any]]:
    out = []
    for line in jsonl.splitlines():
        rec = json.loads(line)
        del rec["event_ids"], rec["source_objects"]
        out.append(rec)
    return sorted(out, key=repr)


# --- the flow --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_dry_run_prints_what_scan_finds_and_publishes_nothing(world, lake, version):
    sql = statement(version)
    world.queue_result(athena_rows(lake, version, sql))
    code, out, err = run(*backfill_args(world, version, "--dry-run", "--format", "jsonl"))
    assert code == 0, err
    # The statement Athena received is the one the tests ran on DuckDB.
    [execution] = world.executions.values()
    assert execution.query == sql
    assert execution.workgroup.name == WORKGROUP
    assert execution.config["OutputLocation"].startswith(OUTPUT)
    inside = [p for p, v, day in lake if v == version and day in ("20261118", "20261119")]
    expected = comparable(scan(inside))
    assert records(out) == sorted(expected, key=repr)
    assert len(expected) > 5
    assert list(json.loads(out.splitlines()[0]))[:3] == [
        "api.operation",
        "user",
        "actor.user.account.uid",
    ]
    assert "succeeded" in err and "Athena scanned" in err
    assert "dry run" in err and "nothing published" in err
    assert world.digests() == []
    assert world.hub_findings() == []


def test_table_output_and_json_document(world, lake):
    world.queue_result(athena_rows(lake, 2, statement(2)))
    code, out, _ = run(*backfill_args(world, 2, "--dry-run", "--format", "json"))
    assert code == 0
    doc = json.loads(out)
    assert doc["detection"]["id"] == "886a8f46-d7e2-4439-b9ba-aec238e31732"
    assert doc["inputs"]["athena"]["table"].endswith("cloud_trail_mgmt_2_0")
    assert doc["inputs"]["athena"]["start"] == "2026-11-18T00:00:00Z"
    assert doc["inputs"]["athena"]["end"] == "2026-11-20T00:00:00Z"
    world.queue_result(athena_rows(lake, 2, statement(2)))
    code, out, _ = run(*backfill_args(world, 2, "--dry-run"))
    assert code == 0
    assert "finding(s)" in out and "PutImage call(s)" in out


def test_progress_state_elapsed_and_bytes_on_a_terminal(world, lake):
    world.queue_result(athena_rows(lake, 2, statement(2)))
    set_execution(world, scanned=5 * 1024**3)
    tty = Tty()
    code, _, err = run(*backfill_args(world, 2, "--dry-run"), err=tty)
    assert code == 0, err
    assert "\rAthena " in err and ": RUNNING, " in err and "5.00 GB scanned" in err
    # $5 per TB: 5 GB is about 2.4 cents.
    assert "Athena scanned 5.00 GB: about $0.0244" in err


def test_no_progress_line_when_not_a_terminal(world, lake):
    world.queue_result(athena_rows(lake, 2, statement(2)))
    code, _, err = run(*backfill_args(world, 2, "--dry-run"))
    assert code == 0
    assert "\r" not in err and "\x1b" not in err


def test_failed_query_exits_1_with_athena_reason(world):
    reason = "COLUMN_NOT_FOUND: line 3:5: Column 'eventday' cannot be resolved"
    set_execution(world, state="FAILED", reason=reason)
    code, out, err = run(*backfill_args(world, 1, "--dry-run"))
    assert code == 1
    assert out == ""
    assert "FAILED" in err and reason in err
    assert world.digests() == [] and world.hub_findings() == []


def test_cancelled_query_exits_1_and_reports_what_was_billed(world):
    set_execution(world, state="CANCELLED", reason="Query cancelled by user", scanned=3 * 1024**3)
    code, _, err = run(*backfill_args(world, 2, "--topic-arn", world.topic))
    assert code == 1
    assert "CANCELLED" in err and "Query cancelled by user" in err
    assert "3.00 GB" in err and "(billed)" in err
    assert world.digests() == []


def test_interrupt_stops_the_query(world):
    def interrupt(**_: Any) -> None:
        raise KeyboardInterrupt

    boto3.DEFAULT_SESSION.events.register("after-call.athena.GetQueryExecution", interrupt)
    code, _, err = run(*backfill_args(world, 2, "--dry-run"))
    assert code == 130
    [execution] = world.executions.values()
    assert execution.status == "CANCELLED"
    assert "cancelled" in err


def test_publishes_to_security_hub_then_one_sns_digest(world, lake):
    rows = athena_rows(lake, 2, statement(2))
    alerts = rollup(athena_results.findings(rows))
    world.queue_result(rows)
    code, out, err = run(*backfill_args(world, 2, "--topic-arn", world.topic, "--format", "jsonl"))
    assert code == 0, err
    printed = records(out)
    assert len(printed) == len(rows)  # the jsonl keeps the Splunk groups
    # One Security Hub finding per alert (principal), each with the alert's total.
    assert 1 < len(alerts) < len(rows)
    hub = world.hub_findings()
    assert sorted(f["Id"] for f in hub) == sorted(finding_id(a) for a in alerts)
    assert {f["AwsAccountId"] for f in hub} == {MOTO_ACCOUNT}
    assert all(f["ProductArn"].split(":")[3] == REGION for f in hub)
    by_id = {a.id: a for a in alerts}
    plain = 0
    for f in hub:
        alert = by_id[f["Id"].rsplit("/", 1)[1]]
        assert f["ProductFields"]["count"] == str(alert.count)
        if alert.key.principal.isascii() and alert.key.principal.isprintable():
            # (hostile names are escaped, see tests/unit/test_asff.py)
            assert f["ProductFields"]["principal"] == alert.key.principal
            plain += 1
    assert plain > 1
    # One SNS message with every alert; their totals add up to the groups printed.
    [digest] = world.digests()
    sent = digest["alerts"]
    assert sorted(a["alert_id"] for a in sent) == sorted(by_id)
    assert sum(a["count"] for a in sent) == sum(r["count"] for r in printed)
    assert sum(a["groups"] for a in sent) == len(printed)
    assert digest["alert_count"] == len(alerts) and digest["finding_count"] == len(rows)
    assert digest["context"]["run"] == "backfill"
    assert f"published: {len(alerts)} alert(s) imported into Security Hub ({REGION})" in err
    assert f"{len(alerts)} alert(s) in the SNS message" in err
    # Running the same backfill again updates the Security Hub findings (same Ids).
    world.queue_result(rows)
    code, _, _ = run(*backfill_args(world, 2, "--topic-arn", world.topic))
    assert code == 0
    assert len(world.hub_findings()) == len(alerts)


def test_security_hub_only_and_sns_only(world, lake):
    rows = athena_rows(lake, 1, statement(1))
    world.queue_result(rows)
    code, _, err = run(*backfill_args(world, 1))
    assert code == 0, err
    alerts = rollup(athena_results.findings(rows))
    assert len(world.hub_findings()) == len(alerts) and world.digests() == []
    assert "SNS" not in err
    world.queue_result(rows)
    code, _, err = run(*backfill_args(world, 1, "--no-security-hub", "--topic-arn", world.topic))
    assert code == 0, err
    [digest] = world.digests()
    assert len(digest["alerts"]) == len(alerts)
    assert "Security Hub" not in err


def test_no_findings_publishes_nothing(world):
    world.queue_result([])
    code, out, err = run(*backfill_args(world, 2, "--topic-arn", world.topic))
    assert code == 0, err
    assert "No findings" in out and "nothing to publish" in err
    assert world.digests() == [] and world.hub_findings() == []


def test_state_table_holds_back_keys_the_lambda_already_alerted(world, lake):
    create_state_table(TABLE)
    rows = athena_rows(lake, 2, statement(2))
    alerts = rollup(athena_results.findings(rows))
    known = alerts[0]
    # The Lambda has seen and mailed this alert a moment ago (with what the backfill finds).
    state = StateTable(TABLE)
    state.add(known.id, ObjectRef(key="obj", bucket="lake", etag="e"), known.contribution())
    claim = state.claim_alert(
        known.id,
        3600,
        success=known.succeeded > 0,
        values=known.succeeded_values(),
    )
    assert claim is not None
    state.confirm_alert(known.id, claim)

    world.queue_result(rows)
    code, _, err = run(*backfill_args(world, 2, "--topic-arn", world.topic, "--state-table", TABLE))
    assert code == 0, err
    # Not re-imported: the Lambda keeps that alert's cumulative finding current.
    assert sorted(f["Id"] for f in world.hub_findings()) == sorted(
        finding_id(a) for a in alerts if a.id != known.id
    )
    [digest] = world.digests()
    assert sorted(a["alert_id"] for a in digest["alerts"]) == sorted(
        a.id for a in alerts if a.id != known.id
    )
    assert all(a["reason"] == "new" for a in digest["alerts"])
    assert f"{len(alerts) - 1} alert(s) in the SNS message, 1 held back" in err
    # Mailed alerts are now in the window like the Lambda's: a second backfill mails nothing.
    world.queue_result(rows)
    code, _, err = run(*backfill_args(world, 2, "--topic-arn", world.topic, "--state-table", TABLE))
    assert code == 0, err
    assert world.digests() == []
    assert f"0 alert(s) in the SNS message, {len(alerts)} held back" in err
    # No lease is left behind by either run.
    items = boto3.client("dynamodb").scan(TableName=TABLE)["Items"]
    assert not any("alert_lease" in i for i in items)


def test_suggest_allowlist_from_athena(world, lake):
    sql = statement(2, Allowlist.of([]))
    world.queue_result(athena_rows(lake, 2, sql))
    code, out, err = run(
        "suggest-allowlist",
        "--from-athena",
        "--region",
        REGION,
        "--source-version",
        "2",
        "--start",
        "2026-11-18",
        "--end",
        "2026-11-19",
        "--workgroup",
        WORKGROUP,
    )
    assert code == 0, err
    [execution] = world.executions.values()
    assert execution.query == sql  # no allowlist: every push is listed
    assert "NOT (" not in execution.query
    parsed = Allowlist.parse(out)
    assert f"arn:aws:iam::{ACCOUNT}:role/ci-deployer" in parsed.entries
    assert f"arn:aws:iam::{ACCOUNT}:user/x'OR'1'='2" in parsed.entries
    assert out.startswith("# Suggested ECR push allowlist")


# --- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"--accounts": "111122223333' OR '1'='1"}, "12-digit"),
        ({"--accounts": "1234"}, "12-digit"),
        ({"--region": "us-east-1'--"}, "region"),
        ({"--output": "/tmp/results"}, "s3://"),
        ({"--start": "last tuesday"}, "ISO 8601"),
        ({"--start": "2026-11-20", "--end": "2026-11-19"}, "not after"),
        ({"--source-version": "3"}, "1 or 2"),
        ({"--topic-arn": "findings"}, "topic ARN"),
        ({"--no-security-hub": None}, "nothing to publish"),
    ],
)
def test_usage_errors_exit_2_before_any_query(world, changes, message):
    args = backfill_args(world, 2)
    for flag, value in changes.items():
        if value is None:
            args.append(flag)
        elif flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code, _, err = run(*args)
    assert code == 2, err
    assert message in err
    assert world.executions == {}


def test_allowlist_entry_with_spaces_is_a_usage_error(world):
    world.allowlist.write_text("x' OR 1=1 --\n")
    code, _, err = run(*backfill_args(world, 2, "--dry-run"))
    assert code == 2
    assert "not a printable ARN or glob" in err
    assert world.executions == {}


def test_athena_sql_prints_the_statement_backfill_runs(world):
    code, out, err = run(
        "athena-sql",
        "--allowlist",
        str(world.allowlist),
        "--region",
        REGION,
        "--source-version",
        "2",
        "--start",
        "2026-11-18",
        "--end",
        "2026-11-19",
    )
    assert code == 0, err
    assert out == statement(2) + "\n"
    assert "epoch milliseconds" in err


# --- several detections ----------------------------------------------------------------------

HOURS = "ecr-upload-outside-business-hours"


def test_athena_sql_prints_one_statement_per_detection(world):
    args = ["athena-sql", "--allowlist", str(world.allowlist), "--region", REGION]
    args += ["--source-version", "2", "--start", "2026-11-18", "--end", "2026-11-19"]
    args += ["--detection", detections.DEFAULT, "--detection", HOURS]
    args += ["--option", "BUSINESS_HOURS_TIMEZONE=Europe/Berlin"]
    code, out, err = run(*args)
    assert code == 0, err
    active = detections.activate(
        [detections.DEFAULT, HOURS], {"BUSINESS_HOURS_TIMEZONE": "Europe/Berlin"}
    )
    assert out == "\n".join(
        f"-- {a.detection.slug}: {a.detection.name}\n{statement(2, active=a)}\n" for a in active
    )
    assert "'Europe/Berlin'" in out
    # Each is one statement of its own.
    parts = out.split("\n\n-- ")
    assert len(parts) == 2
    # A detection named twice runs once.
    code, again, _ = run(*args, "--detection", HOURS)
    assert code == 0 and again == out


def test_backfill_runs_one_query_per_detection_and_publishes_them_together(world, lake):
    active = detections.activate([detections.DEFAULT, HOURS])
    sqls = [statement(2, active=a) for a in active]
    rows = [athena_rows(lake, 2, sql) for sql in sqls]
    for part in rows:
        world.queue_result(part)
    args = ["--detection", detections.DEFAULT, "--detection", HOURS]
    code, out, err = run(
        *backfill_args(world, 2, *args, "--topic-arn", world.topic, "--format", "jsonl")
    )
    assert code == 0, err
    # One query per detection, in the order given, each the statement tested on DuckDB.
    assert [e.query for e in world.executions.values()] == sqls
    assert err.count("Athena scanned") == 2 and "2 Athena queries" in err
    inside = [p for p, v, day in lake if v == 2 and day in ("20261118", "20261119")]
    expected = comparable(scan(inside, ALLOWLIST, active))
    assert records(out) == sorted(expected, key=repr)
    found = {
        a.detection.slug: athena_results.findings(r, a.detection)
        for a, r in zip(active, rows, strict=True)
    }
    assert all(found.values())  # both detections found something
    ids = {json.loads(line)["detection_id"] for line in out.splitlines()}
    assert ids == {a.detection.id for a in active}
    # One Security Hub finding per alert of either detection, one SNS message with them all.
    alerts = rollup([f for fs in found.values() for f in fs])
    assert sorted(f["Id"] for f in world.hub_findings()) == sorted(finding_id(a) for a in alerts)
    [digest] = world.digests()
    assert sorted(a["alert_id"] for a in digest["alerts"]) == sorted(a.id for a in alerts)


def test_backfill_json_names_each_query(world, lake):
    active = detections.activate([detections.DEFAULT, HOURS])
    for a in active:
        world.queue_result(athena_rows(lake, 2, statement(2, active=a)))
    set_execution(world, scanned=20 * 1024**2)
    args = ["--detection", detections.DEFAULT, "--detection", HOURS]
    code, out, err = run(*backfill_args(world, 2, *args, "--dry-run", "--format", "json"))
    assert code == 0, err
    info = json.loads(out)["inputs"]["athena"]
    assert info["query_id"] is None
    assert [q["detection"] for q in info["queries"]] == [detections.DEFAULT, HOURS]
    assert [q["query_id"] for q in info["queries"]] == list(world.executions)
    assert info["scanned_bytes"] == 40 * 1024**2
    assert info["cost_usd"] == pytest.approx(2 * athena_results.cost_usd(20 * 1024**2), abs=1e-6)


def test_backfill_with_an_unknown_detection_exits_2_before_any_query(world):
    code, _, err = run(*backfill_args(world, 2, "--detection", "nope", "--dry-run"))
    assert code == 2
    assert "'nope'" in err and detections.DEFAULT in err
    assert world.executions == {}


# --- the adapter, played with Stubber --------------------------------------------------------


def _row(*values: str | None) -> dict[str, Any]:
    return {"Data": [{} if v is None else {"VarCharValue": v} for v in values]}


def test_results_are_read_page_by_page_without_the_header():
    client = boto3.client("athena", region_name=REGION)
    info = {"ColumnInfo": [{"Name": "a", "Type": "varchar"}, {"Name": "b", "Type": "varchar"}]}
    with Stubber(client) as stub:
        stub.add_response(
            "get_query_results",
            {
                "ResultSet": {"Rows": [_row("a", "b"), _row("1", None)], "ResultSetMetadata": info},
                "NextToken": "t1",
            },
            {"QueryExecutionId": "q"},
        )
        stub.add_response(
            "get_query_results",
            {"ResultSet": {"Rows": [_row("a", "")], "ResultSetMetadata": info}},
            {"QueryExecutionId": "q", "NextToken": "t1"},
        )
        result = athena_adapter.AthenaQueries(REGION, client).results("q")
    assert result.columns == ["a", "b"]
    # Only the first page starts with the header; a later row equal to it is data.
    assert result.rows == [["1", None], ["a", ""]]


def test_api_errors_name_the_call_and_code():
    client = boto3.client("athena", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error(
            "start_query_execution", "InvalidRequestException", "WorkGroup nope is not found"
        )
        with pytest.raises(athena_adapter.AthenaUnavailable, match="StartQueryExecution: Invalid"):
            athena_adapter.AthenaQueries(REGION, client).start("SELECT 1", workgroup="nope")


def test_polling_backs_off_and_reports_each_state():
    client = boto3.client("athena", region_name=REGION)
    sleeps: list[float] = []
    seen: list[str] = []
    with Stubber(client) as stub:
        for state in ("QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"):
            stub.add_response(
                "get_query_execution",
                {
                    "QueryExecution": {
                        "Status": {"State": state},
                        "Statistics": {"DataScannedInBytes": 42},
                    }
                },
                {"QueryExecutionId": "q"},
            )
        status = athena_adapter.AthenaQueries(
            REGION, client, sleep=sleeps.append, first_poll=0.5, max_poll=1.0
        ).wait("q", lambda s: seen.append(s.state))
    assert status.state == "SUCCEEDED" and status.scanned_bytes == 42
    assert seen == ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]
    assert sleeps == [0.5, 0.75, 1.0]
