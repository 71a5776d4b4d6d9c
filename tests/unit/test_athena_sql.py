"""The Athena statement (``detector.analysis.athena_sql``), run on DuckDB over generated
Security Lake objects of both versions registered under the Glue names, equals ``scan`` over the
same objects.

DuckDB lacks some Trino functions the statements use: ``tests/unit/athena_duckdb.py`` maps them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from detector import detections
from detector.analysis import athena_results, athena_sql, engine
from detector.analysis.findings import Finding
from detector.core.allowlist import Allowlist
from detector.core.errors import AllowlistInvalid
from detector.core.spec import Active, Context, Detection, RequestField, SampleSpec
from detector.lake.schema import SchemaVersion
from tests.contract import JSONL_KEYS
from tests.lake import ACCOUNT, T0_MS, event, key_for, put_image_request, write_object
from tests.unit.athena_duckdb import (
    REGION,
    athena_on_duckdb,
    comparable,
    run_sql,
    trino_on_duckdb,
)
from tests.unit.test_differential import AGENTS, DOMAINS, IPS, PRINCIPALS, STATUSES

OTHER = "444455556666"
DAY0 = datetime(2026, 11, 18, tzinfo=UTC)
DAYS = [DAY0 + timedelta(days=i) for i in range(4)]  # 18, 19, 20, 21 November

# Allowlist entries that SQL could get wrong: quotes, LIKE's own wildcards and escape character
# (in the resource of an ARN: an entry must name one account's principals).
U = f"arn:aws:iam::{ACCOUNT}:user/"
QUOTED = f"{U}o'brien"
HOSTILE_EXACT = [f"{U}x'OR'1'='1", QUOTED, f"{U}'--"]
HOSTILE_GLOBS = [f"{U}a%b_c?", f"{U}back\\slash*"]
ALLOWLIST = Allowlist.of(
    [
        f"arn:aws:iam::{ACCOUNT}:role/ci-deployer",
        f"arn:aws:iam::{ACCOUNT}:user/dev0",
        "codebuild.amazonaws.com",
        "ecr.amazonaws.com",  # the source domain of pushes AWS makes itself
        f"arn:aws:sts::{ACCOUNT}:assumed-role/eks-node/*",
        f"arn:aws:iam::{ACCOUNT}:user/bot?",
        *HOSTILE_EXACT,
        *HOSTILE_GLOBS,
    ]
)
HOSTILE_PRINCIPALS: list[tuple[str | None, str | None, str | None]] = [
    (f"{U}x'OR'1'='1", None, None),  # trusted (exact, with quotes)
    (f"{U}x'OR'1'='2", None, None),  # not trusted
    (QUOTED, None, None),  # trusted
    (f"{U}'--", None, None),  # trusted
    (f"{U}' OR ''='", None, None),  # not trusted
    (f"arn:aws:iam::{ACCOUNT}:user/a%b_c1", None, None),  # trusted: % and _ literal
    (f"arn:aws:iam::{ACCOUNT}:user/aXbYc1", None, None),  # not: % and _ are no wildcards
    (f"arn:aws:iam::{ACCOUNT}:user/a%b_c", None, None),  # not: ? needs one character
    (f"arn:aws:iam::{ACCOUNT}:user/back\\slash-1", None, None),  # trusted
    (f"arn:aws:iam::{ACCOUNT}:user/backXslash-1", None, None),  # not
    (f"ARN:AWS:IAM::{ACCOUNT}:USER/DEV0", None, None),  # not: case-sensitive
]


# --- DuckDB as Athena ------------------------------------------------------------------------


def scan(
    files: Iterable[Path],
    allowlist: Allowlist = ALLOWLIST,
    active: Sequence[Active] | None = None,
) -> list[Finding]:
    run = engine.Run(allowlist, active)
    for path in files:
        with path.open("rb") as f:
            run.add(engine.scan_object(f, str(path), allowlist, active=active))
    return run.findings()


def query(version: int, start: str, end: str, accounts: str | None = None) -> athena_sql.Query:
    return athena_sql.Query(
        REGION,
        athena_sql.parse_version(str(version)),
        athena_sql.Period.parse(start, end),
        athena_sql.parse_accounts(accounts),
    )


# --- generated lake --------------------------------------------------------------------------


def events_of_day(rng: random.Random, day: datetime, account: str, n: int) -> list[dict[str, Any]]:
    start_ms = int(day.timestamp() * 1000)
    out = []
    for _ in range(n):
        arn, issuer, invoked_by = rng.choice(PRINCIPALS + HOSTILE_PRINCIPALS)
        out.append(
            event(
                time_ms=start_ms + rng.randrange(86_400_000),
                operation=rng.choice(["PutImage"] * 5 + ["GetObject", None]),
                arn=arn,
                principal_id=rng.choice([f"AIDA{rng.randrange(4)}", None]),
                session_issuer=issuer,
                session_created_ms=start_ms if issuer else None,
                invoked_by=invoked_by,
                account=rng.choice([account, account, None]),
                recipient_account=account,
                user_agent=rng.choice(AGENTS),
                src_ip=rng.choice(IPS),
                src_domain=rng.choice(DOMAINS),
                region=rng.choice(["us-east-1", "eu-west-1", None, "o'region"]),
                status=rng.choice(STATUSES),
                request_json=rng.choice(
                    [
                        put_image_request(f"repo-{rng.randrange(3)}", f"t{rng.randrange(5)}"),
                        put_image_request('it\'s/a \u00e9"quoted" repo', None),
                        None,
                    ]
                ),
            )
        )
    return out


@pytest.fixture(scope="module", params=[11, 12])
def lake(request, tmp_path_factory) -> list[tuple[Path, int, str, str]]:
    """(path, version, account, eventday) of objects over four days, two accounts."""
    rng = random.Random(request.param)
    root = tmp_path_factory.mktemp(f"athena-lake-{request.param}")
    written = []
    for day in DAYS:
        for account in (ACCOUNT, OTHER):
            for version in (1, 2):
                for part in range(2):
                    eventday = f"{day:%Y%m%d}"
                    path = root / key_for(version, account=account, day=eventday, name=f"p{part}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_object(
                        path, events_of_day(rng, day, account, rng.randint(1, 60)), version
                    )
                    written.append((path, version, account, eventday))
    return written


def of(lake_: list[tuple[Path, int, str, str]], version: int) -> list[tuple[Path, int]]:
    return [(p, v) for p, v, _, _ in lake_ if v == version]


# --- equality with scan ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_statement_on_duckdb_equals_scan_over_the_days_asked_for(lake, version):
    con = athena_on_duckdb(of(lake, version))
    sql = athena_sql.build(query(version, "2026-11-19", "2026-11-20"), ALLOWLIST)
    mine = run_sql(con, sql)
    inside = [p for p, v, _, day in lake if v == version and day in ("20261119", "20261120")]
    expected = scan(inside)
    assert comparable(mine) == comparable(expected)
    # Not trivially equal: nulls in grouping fields, hostile values, several groups.
    assert len(mine) > 10
    assert any(f.user is None for f in mine)
    assert any(f.field("user_agent") is None for f in mine)
    assert any(f.field("region") is None for f in mine)
    assert any(f.field("account") is None for f in mine)
    assert {f.user for f in mine} >= {f"{U}x'OR'1'='2", f"{U}' OR ''='"}
    assert not {f.user for f in mine} & {f"{U}x'OR'1'='1", QUOTED, f"{U}'--"}
    # The source domain: reported without an identity from a domain not on the list, and with
    # an ARN from one on it (the domain of a caller with an ARN is never consulted).
    assert any(f.user is None and f.field("src_domain") == "ecs.amazonaws.com" for f in mine)
    assert any(f.user is not None and f.field("src_domain") == "ecr.amazonaws.com" for f in mine)
    # The order is scan's (most recent activity first).
    assert [f.key for f in mine] == [f.key for f in expected]


@pytest.mark.parametrize("version", [1, 2])
def test_accounts_restrict_the_query(lake, version):
    con = athena_on_duckdb(of(lake, version))
    sql = athena_sql.build(query(version, "2026-11-18", "2026-11-21", OTHER), ALLOWLIST)
    inside = [p for p, v, account, _ in lake if v == version and account == OTHER]
    assert comparable(run_sql(con, sql)) == comparable(scan(inside))


@pytest.mark.parametrize("version", [1, 2])
def test_empty_allowlist_reports_every_put_image(lake, version):
    con = athena_on_duckdb(of(lake, version))
    sql = athena_sql.build(query(version, "2026-11-18", "2026-11-21"), Allowlist.of([]))
    everything = [p for p, v, _, _ in lake if v == version]
    nobody = Allowlist.of([])
    assert comparable(run_sql(con, sql)) == comparable(scan(everything, nobody))
    assert "NOT (" not in sql


@pytest.mark.parametrize("version", [1, 2])
def test_period_boundaries_are_exact_to_the_millisecond(tmp_path, version):
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    t1 = t0 + timedelta(hours=2)
    ms = [int(t.timestamp() * 1000) for t in (t0, t1)]
    times = [ms[0] - 1, ms[0], ms[1] - 1, ms[1]]
    path = tmp_path / key_for(version, day="20261120")
    path.parent.mkdir(parents=True)
    write_object(path, [event(time_ms=t, session_issuer=None) for t in times], version)
    con = athena_on_duckdb([(path, version)])
    sql = athena_sql.build(
        query(version, "2026-11-20T10:00:00Z", "2026-11-20T12:00:00Z"), Allowlist.of([])
    )
    [found] = run_sql(con, sql)
    assert (found.count, found.first_ms, found.last_ms) == (2, ms[0], ms[1] - 1)
    assert found.to_record()["firstTime"] == "2026-11-20T10:00:00"
    assert found.to_record()["lastTime"] == "2026-11-20T11:59:59"


def test_v1_reads_only_the_partitions_asked_for(tmp_path):
    """Objects of other days and accounts are never opened: here they are not even Parquet."""
    good = tmp_path / key_for(1, account=ACCOUNT, day="20261120")
    good.parent.mkdir(parents=True)
    write_object(good, [event(session_issuer=None)], 1)
    files = [(good, 1)]
    for account, day in ((ACCOUNT, "20261119"), (ACCOUNT, "20261121"), (OTHER, "20261120")):
        bad = tmp_path / key_for(1, account=account, day=day)
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"not parquet")
        files.append((bad, 1))
    con = athena_on_duckdb(files)
    sql = athena_sql.build(query(1, "2026-11-20", "2026-11-20", ACCOUNT), Allowlist.of([]))
    [found] = run_sql(con, sql)
    assert found.count == 1
    # Without the account restriction the other account's (broken) object is read.
    with pytest.raises(duckdb.Error):
        run_sql(con, athena_sql.build(query(1, "2026-11-20", "2026-11-20"), Allowlist.of([])))


def test_v2_restricts_the_time_partition():
    sql = athena_sql.build(query(2, "2026-11-19", "2026-11-20T06:30:00Z"), Allowlist.of([]))
    assert "\"time_dt\" >= TIMESTAMP '2026-11-19 00:00:00.000000'" in sql
    assert "\"time_dt\" < TIMESTAMP '2026-11-20 06:30:00.000000'" in sql
    assert "eventday" not in sql


def test_v1_restricts_eventday_with_whole_days():
    sql = athena_sql.build(query(1, "2026-11-19T23:00:00Z", "2026-11-21"), Allowlist.of([]))
    assert "\"eventday\" BETWEEN '20261119' AND '20261121'" in sql
    sql = athena_sql.build(query(1, "2026-11-19", "2026-11-20T00:00:00Z"), Allowlist.of([]))
    assert "\"eventday\" BETWEEN '20261119' AND '20261119'" in sql


def test_table_names_follow_the_region():
    q = athena_sql.Query(
        "eu-west-2", SchemaVersion.V2, athena_sql.Period.parse("2026-01-01", "2026-01-02")
    )
    sql = athena_sql.build(q, Allowlist.of([]))
    assert (
        'FROM "amazon_security_lake_glue_db_eu_west_2".'
        '"amazon_security_lake_table_eu_west_2_cloud_trail_mgmt_2_0"'
    ) in sql


def test_result_columns_carry_the_scan_jsonl_names():
    assert list(athena_results.RESULT_COLUMNS[:10]) == JSONL_KEYS
    # Athena lowercases result column names: accepted.
    athena_results.check_columns([c.lower() for c in athena_results.RESULT_COLUMNS])
    with pytest.raises(athena_results.ResultInvalid):
        athena_results.check_columns(["a", "b"])


# --- the statement from the spec --------------------------------------------------------------

OTHER_IP = "198.51.100.7"


def _not_other_ip(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    return pc.fill_null(pc.not_equal(rows["src_ip"], OTHER_IP), False)


def _not_other_ip_sql(cols: Mapping[str, str], ctx: Context) -> str | None:
    return f"coalesce({cols['src_ip']} <> {athena_sql.literal(OTHER_IP)}, false)"


def custom_detection() -> Detection:
    """A detection unlike the default: two operations, no allowlist, other request fields and
    samples (one of a grouping key, one under a name SQL reserves)."""
    return dataclasses.replace(
        detections.get(detections.DEFAULT),
        id="00000000-0000-4000-8000-000000000001",
        slug="test-calls-from-other-ips",
        name="Test: calls from other IPs",
        operations=("PutImage", "GetObject"),
        predicate_columns=("src_ip",),
        predicate=_not_other_ip,
        sql_predicate=_not_other_ip_sql,
        request_fields=(
            RequestField("registry", "registryId"),
            RequestField("order", "imageTag"),
        ),
        samples=(
            SampleSpec("registries", "registry", "Registries", "succeeded_registries"),
            SampleSpec("orders", "order", "Orders", "succeeded_orders"),
            SampleSpec("agents", "user_agent", "User agents", "succeeded_agents"),
        ),
        extra_samples=(),
        escalate_on="registries",
        options=(),
        examples=(),
    )


def test_default_result_columns_come_from_the_spec():
    default = detections.get(detections.DEFAULT)
    assert athena_results.result_columns() == athena_results.result_columns(default)
    assert athena_results.result_columns(default) == athena_results.RESULT_COLUMNS
    assert athena_results.result_columns(custom_detection())[12:] == (
        "registries",
        "orders",
        "agents",
        "session_issuers",
        "principal_ids",
        "invoked_by",
        "succeeded_registries",
        "succeeded_orders",
        "succeeded_agents",
    )


@pytest.mark.parametrize("version", [1, 2])
def test_a_statement_from_another_spec_equals_scan_with_it(lake, version):
    detection = custom_detection()
    active = Active(detection)
    sql = athena_sql.build(query(version, "2026-11-19", "2026-11-20"), ALLOWLIST, active)
    assert "\"api\".\"operation\" IN ('PutImage', 'GetObject')" in sql
    assert 'AS "order"' in sql and 'e."order"' in sql  # a reserved word is quoted
    assert "e.k_user_agent ORDER BY e.k_user_agent" in sql  # a grouping key is sampled as one
    assert "NOT (" not in sql  # no allowlist in this spec
    mine = run_sql(athena_on_duckdb(of(lake, version)), sql, detection)
    inside = [p for p, v, _, day in lake if v == version and day in ("20261119", "20261120")]
    expected = scan(inside, ALLOWLIST, [active])
    assert comparable(mine) == comparable(expected)
    assert len(mine) > 10
    assert {f.field("operation") for f in mine} == {"PutImage", "GetObject"}
    assert all(f.detection is detection for f in mine)
    assert any(f.sample("registries").sorted() for f in mine)
    assert any(f.sample("orders").succeeded() for f in mine)
    assert all(f.field("src_ip") != OTHER_IP for f in mine)


def test_one_operation_is_compared_with_equals():
    sql = athena_sql.build(query(2, "2026-11-20", "2026-11-20"), Allowlist.of([]))
    assert '"api"."operation" = \'PutImage\'' in sql


@pytest.mark.parametrize(
    "change",
    [
        {"request_fields": (RequestField("registry", "registry'Id"),)},
        {"request_fields": (RequestField("registry", "a.b"),)},
        {"request_fields": (RequestField("src_ip", "registryId"),)},  # shadows a column
        {"samples": (SampleSpec("xs", "no_such_column", "X", "succeeded_xs"),)},
    ],
)
def test_a_spec_that_cannot_become_sql_is_refused(change):
    detection = dataclasses.replace(custom_detection(), **change)
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.build(query(1, "2026-11-20", "2026-11-20"), ALLOWLIST, Active(detection))


def test_only_an_empty_allowlist_makes_the_default_report_every_call():
    [default] = detections.default()
    assert athena_sql.reports_every_call(default, Allowlist.of([]))
    assert not athena_sql.reports_every_call(default, ALLOWLIST)
    assert not athena_sql.reports_every_call(Active(custom_detection()), Allowlist.of([]))


def test_result_rows_become_findings_of_their_detection():
    detection = custom_detection()
    names = athena_results.result_columns(detection)
    row: list[str | None] = [None] * len(names)
    row[:8] = ["GetObject", U + "x", ACCOUNT, None, "10.0.0.1", None, REGION, "2"]
    row[names.index("registries")] = '["111122223333","444455556666"]'
    row[names.index("succeeded_registries")] = '["444455556666"]'
    [f] = athena_results.findings([row], detection)
    assert f.detection is detection
    assert f.sample("registries").succeeded() == ["444455556666"]
    assert f.sample("registries").sorted() == ["111122223333", "444455556666"]
    athena_results.check_columns(names, detection)
    with pytest.raises(athena_results.ResultInvalid):
        athena_results.check_columns(athena_results.RESULT_COLUMNS, detection)
    with pytest.raises(athena_results.ResultInvalid):
        athena_results.findings([[*row, None]])  # a row of another statement's length
    [default] = athena_results.findings(
        [[*row[:8], *[None] * (len(athena_results.RESULT_COLUMNS) - 8)]]
    )
    assert default.detection is detections.get(detections.DEFAULT)


# --- injection -------------------------------------------------------------------------------


def one_statement(sql: str) -> None:
    assert len(duckdb.extract_statements(trino_on_duckdb(sql))) == 1


@pytest.mark.parametrize(
    "accounts",
    [
        "111122223333' OR '1'='1",
        "111122223333,1",
        "11112222333a",
        "111122223333;DROP",
        "\uff11" * 12,  # full-width digits are not ASCII digits
        " , ",
    ],
)
def test_accounts_other_than_12_digits_are_rejected(accounts):
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.parse_accounts(accounts)


def test_accounts_are_checked_again_when_building():
    q = athena_sql.Query(
        REGION,
        SchemaVersion.V1,
        athena_sql.Period.parse("2026-11-20", "2026-11-20"),
        ("111122223333') OR ('1'='1",),
    )
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.build(q, Allowlist.of([]))


@pytest.mark.parametrize(
    "region", ["us-east-1'", 'us-east-1"', "us_east_1", "US-EAST-1", "us-east-1;", "useast1", ""]
)
def test_regions_are_validated(region):
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.check_region(region)
    q = athena_sql.Query(
        region, SchemaVersion.V2, athena_sql.Period.parse("2026-11-20", "2026-11-20")
    )
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.build(q, Allowlist.of([]))


@pytest.mark.parametrize(
    "region", ["us-east-1", "us-gov-west-1", "cn-northwest-1", "ap-southeast-5"]
)
def test_real_regions_are_accepted(region):
    assert athena_sql.check_region(region) == region


def test_allowlist_entries_with_quotes_are_escaped_into_one_statement():
    sql = athena_sql.build(query(2, "2026-11-20", "2026-11-20"), ALLOWLIST)
    one_statement(sql)
    assert f"'{U}x''OR''1''=''1'" in sql
    assert "'arn:aws:iam::111122223333:user/o''brien'" in sql
    assert f"'{U}a\\%b\\_c_' ESCAPE '\\'" in sql
    assert f"'{U}back\\\\slash%' ESCAPE '\\'" in sql


def test_sql_comment_and_statement_breaks_in_entries_stay_inside_literals(tmp_path):
    hostile = [U + e for e in ("x'--", "x';DROP/**/TABLE/**/t;--", "*'/*", "a'||'b")]
    allowlist = Allowlist.of(hostile)
    sql = athena_sql.build(query(2, "2026-11-20", "2026-11-20"), allowlist)
    one_statement(sql)
    path = tmp_path / key_for(2, day="20261120")
    path.parent.mkdir(parents=True)
    callers = [U + c for c in ("x'--", "x';DROP/**/TABLE/**/t;--", "*'/* anything", "a'||'b")]
    callers += [U + "ab", U + "x'"]
    write_object(path, [event(arn=a, session_issuer=None) for a in callers], 2)
    found = run_sql(athena_on_duckdb([(path, 2)]), sql)
    assert sorted(f.user or "" for f in found) == [U + "ab", U + "x'"]


def test_an_entry_with_spaces_never_reaches_the_query():
    with pytest.raises(AllowlistInvalid):
        Allowlist.parse("x' OR 1=1 --\n")


def test_control_characters_are_refused_even_past_allowlist_validation():
    # Allowlist.of rejects them; a directly built Allowlist must not smuggle them in either.
    for bad in ("a\nb", "a\x00", "caf\u00e9", "a\u202eb", f"{U}a\nb"):
        with pytest.raises(athena_sql.QueryInputInvalid):
            athena_sql.build(query(2, "2026-11-20", "2026-11-20"), Allowlist((bad,)))


@pytest.mark.parametrize("entry", ["*", "arn:aws:*", "arn:aws:iam::*:role/*", "*.amazonaws.com"])
def test_catch_alls_are_refused_even_past_allowlist_validation(entry):
    with pytest.raises(AllowlistInvalid):
        Allowlist.of([entry])
    with pytest.raises(athena_sql.QueryInputInvalid, match="any account") as info:
        athena_sql.build(query(2, "2026-11-20", "2026-11-20"), Allowlist((entry,)))
    assert repr(entry) in str(info.value)


@pytest.mark.parametrize("version", [1, 2])
def test_the_source_domain_trusts_only_pushes_without_identity(tmp_path, version):
    def aws_push(domain: str | None, **kw: Any) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            arn=None,
            principal_id=None,
            session_issuer=None,
            session_created_ms=None,
            invoked_by=None,
            src_ip=None,
            src_domain=domain,
        )
        return event(**(fields | kw))

    events = [
        aws_push("ecr.amazonaws.com"),  # trusted by its domain
        aws_push("ecr.amazonaws.com", time_ms=T0_MS + 1),
        aws_push("ecr-public.amazonaws.com"),
        aws_push(None),
        aws_push("ecr.amazonaws.com", arn=f"{U}dev9"),
        aws_push(
            "ecr.amazonaws.com",
            session_issuer=f"arn:aws:iam::{ACCOUNT}:role/x",
            session_created_ms=T0_MS,
        ),
        aws_push("ecr.amazonaws.com", invoked_by="ecs.amazonaws.com"),
    ]
    path = tmp_path / key_for(version, day="20261120")
    path.parent.mkdir(parents=True)
    write_object(path, events, version)
    allow = Allowlist.of(["ecr.amazonaws.com"])
    sql = athena_sql.build(query(version, "2026-11-20", "2026-11-20"), allow)
    found = run_sql(athena_on_duckdb([(path, version)]), sql)
    assert comparable(found) == comparable(scan([path], allow))
    assert sum(f.count for f in found) == 5
    assert {(f.user, f.field("src_domain")) for f in found} == {
        (None, "ecr-public.amazonaws.com"),
        (None, None),
        (f"{U}dev9", "ecr.amazonaws.com"),
        (None, "ecr.amazonaws.com"),  # the issuer-only and invoked_by-only pushes
    }


def test_an_allowlist_too_long_for_athena_is_a_usage_error():
    many = Allowlist.of(f"arn:aws:iam::{ACCOUNT}:role/role-number-{i:05d}" for i in range(2000))
    with pytest.raises(athena_sql.QueryInputInvalid, match="too long"):
        athena_sql.build(query(2, "2026-11-20", "2026-11-20"), many)


# --- times, results, cost --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "first", "after"),
    [
        ("2026-11-20", "2026-11-20", "2026-11-20T00:00:00", "2026-11-21T00:00:00"),
        ("2026-11-20", "2026-11-22", "2026-11-20T00:00:00", "2026-11-23T00:00:00"),
        (
            "2026-11-20T10:00:00Z",
            "2026-11-20T11:30:00Z",
            "2026-11-20T10:00:00",
            "2026-11-20T11:30:00",
        ),
        ("2026-11-20T10:00:00", "2026-11-20 11:00", "2026-11-20T10:00:00", "2026-11-20T11:00:00"),
        (
            "2026-11-20T12:00:00+02:00",
            "2026-11-20T12:00:00+00:00",
            "2026-11-20T10:00:00",
            "2026-11-20T12:00:00",
        ),
    ],
)
def test_period_parsing(start, end, first, after):
    period = athena_sql.Period.parse(start, end)
    assert period.start == datetime.fromisoformat(first).replace(tzinfo=UTC)
    assert period.end == datetime.fromisoformat(after).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("yesterday", "2026-11-20"),
        ("2026-11-20", "2026-13-01"),
        ("2026-11-21", "2026-11-20"),
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z"),
        ("1969-12-31", "2026-11-20"),
        ("2026-11-20", "9999-12-31"),
    ],
)
def test_bad_periods_are_usage_errors(start, end):
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.Period.parse(start, end)


def test_source_version():
    assert athena_sql.parse_version("1") is SchemaVersion.V1
    assert athena_sql.parse_version("2.0") is SchemaVersion.V2
    with pytest.raises(athena_sql.QueryInputInvalid):
        athena_sql.parse_version("3")


def test_result_rows_become_findings_like_scan_records():
    row = [
        "PutImage",
        "arn:aws:iam::111122223333:user/intruder",
        "111122223333",
        None,
        "198.51.100.7",
        None,
        "us-east-1",
        "3",
        str(int(datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp() * 1000)),
        str(int(datetime(2026, 11, 20, 11, tzinfo=UTC).timestamp() * 1000)),
        "2",
        "1",
        '["app","web"]',
        '["v1"]',
        None,
        '["AIDAX"]',
        "[]",
        '["web"]',
        "[]",
        "[]",  # image_digests
        "[]",  # succeeded_image_digests
    ]
    [f] = athena_results.findings([row])
    rec = f.to_record()
    assert rec["succeeded_repositories"] == ["web"]
    assert rec["user"] == "arn:aws:iam::111122223333:user/intruder"
    assert rec["user_agent"] is None
    assert (rec["count"], rec["succeeded"], rec["failed"]) == (3, 2, 1)
    assert (rec["firstTime"], rec["lastTime"]) == ("2026-11-20T10:00:00", "2026-11-20T11:00:00")
    assert rec["repositories"] == ["app", "web"]
    assert rec["session_issuers"] == []
    assert rec["samples_truncated"] is False
    many = [*row[:12], str([f"r{i:02d}" for i in range(51)]).replace("'", '"'), *row[13:]]
    [f] = athena_results.findings([many])
    assert len(f.repositories.values) == 50
    assert "web" in f.repositories.values  # a successful push is never evicted by the others
    assert f.to_record()["samples_truncated"] is True
    with pytest.raises(athena_results.ResultInvalid):
        athena_results.findings([row[:5]])
    with pytest.raises(athena_results.ResultInvalid):
        athena_results.findings([[*row[:7], "three", *row[8:]]])
    with pytest.raises(athena_results.ResultInvalid):
        athena_results.findings([[*row[:12], '{"a": 1}', *row[13:]]])


def test_cost_is_five_dollars_per_tb_with_a_10_mb_minimum():
    mb = 1024**2
    assert athena_results.billed_bytes(0) == 10 * mb
    assert athena_results.billed_bytes(10 * mb + 1) == 11 * mb
    assert athena_results.cost_usd(1024**4) == pytest.approx(5.0)
    assert athena_results.cost_usd(0) == pytest.approx(10 * mb / 1024**4 * 5)
    assert "1.00 TB" in athena_results.cost_line(1024**4)
    assert "$5.0000" in athena_results.cost_line(1024**4)
