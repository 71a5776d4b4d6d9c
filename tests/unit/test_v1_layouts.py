"""Real v1 (OCSF 1.0.0-rc.2) objects: both request-parameter layouts, AWS's physical schema, and
the key/value types Parquet writers choose for ``unmapped``.

Real v1 data holds a PutImage call's request parameters in ``unmapped`` either flattened
(``requestParameters.repositoryName`` → ``app``) or as one whole JSON value
(``requestParameters`` → ``{"repositoryName": "app", …}``). ``scan`` and the v1 Athena statement
(run on DuckDB, helpers from ``test_athena_sql``) must read both, and agree.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.analysis import athena_sql, engine
from detector.analysis.findings import Finding
from detector.core.allowlist import Allowlist
from detector.core.errors import BadObject
from tests.lake import (
    ACCOUNT,
    columns_from_events,
    event,
    key_for,
    nest,
    put_image_request,
    write_object,
)
from tests.unit.helpers import NOBODY, table_bytes
from tests.unit.test_athena_sql import (
    ALLOWLIST,
    DAYS,
    athena_on_duckdb,
    comparable,
    events_of_day,
    query,
    run_sql,
)
from tests.unit.test_athena_sql import scan as scan_files

LAYOUTS = ["flattened", "json"]
BOTH_LAYOUTS = pytest.mark.parametrize("v1_request", LAYOUTS)
AWS_SCHEMA = pytest.mark.parametrize("aws_v1_schema", [False, True], ids=["tidy", "aws"])
ATTACKER = f"arn:aws:iam::{ACCOUNT}:user/attacker"
DICT = pa.dictionary(pa.int32(), pa.string())
STRING_MAP = pa.map_(pa.string(), pa.string())


def v1_bytes(events: Sequence[dict[str, Any]], **layout: Any) -> bytes:
    buf = io.BytesIO()
    write_object(buf, events, 1, **layout)
    return buf.getvalue()


def scan(data: bytes, name: str = "v1.gz.parquet") -> engine.ObjectResult:
    return engine.scan_object(io.BytesIO(data), name, NOBODY, key_for(1))


def pushes(result: engine.ObjectResult) -> dict[str | None, tuple[list[str], list[str]]]:
    """Caller ARN → (repositories, image tags) of each finding."""
    return {
        f.user: (f.repositories.sorted(), f.image_tags.sorted())
        for f in result.aggregate.findings()
    }


def with_unmapped(table: pa.Table, typ: pa.DataType, rows: Sequence[Any] | None = None) -> pa.Table:
    """``table`` with its ``unmapped`` column as ``typ`` (its entries replaced by ``rows``)."""
    i = table.schema.get_field_index("unmapped")
    arr = table.column(i).combine_chunks().cast(typ) if rows is None else pa.array(rows, typ)
    return table.set_column(i, pa.field("unmapped", typ), arr)


def nest_v1(events: Sequence[dict[str, Any]], **layout: Any) -> pa.Table:
    return nest(columns_from_events(events), 1, **layout)


def caller(name: str, **overrides: Any) -> dict[str, Any]:
    return event(arn=f"arn:aws:iam::{ACCOUNT}:user/{name}", session_issuer=None, **overrides)


# --- the fixtures have the layout of AWS's published v1 objects -------------------------------


def test_aws_schema_is_the_physical_layout_of_real_v1_objects():
    """As read from aws-samples/amazon-security-lake-ocsf-validation's CloudTrail samples."""
    data = v1_bytes([event()], aws_v1_schema=True)
    got = pq.read_schema(io.BytesIO(data))
    profiles = got.field("metadata").type.field("profiles").type
    resources = got.field("resources").type
    assert profiles.value_field.name == "array" and not profiles.value_field.nullable
    assert resources.value_field.name == "array" and not resources.value_field.nullable
    assert got.field("type_uid").type == pa.int32()
    assert got.field("class_uid").type == pa.int32()
    unmapped = got.field("unmapped").type
    assert pa.types.is_map(unmapped)
    assert (unmapped.key_type, unmapped.item_type) == (pa.string(), pa.string())
    assert not unmapped.item_field.nullable
    for required in ("metadata", "time", "cloud", "api", "actor", "http_request", "src_endpoint"):
        assert not got.field(required).nullable, required
    actor = got.field("actor").type
    for required in ("user", "session", "idp"):
        assert not actor.field(required).nullable, required
    assert actor.field("invoked_by").nullable
    assert got.field("api").type.field("operation").nullable
    # The Parquet list element is named ``array`` too, not the spec's ``element``.
    paths = [c.path for c in pq.ParquetFile(io.BytesIO(data)).schema]
    assert "metadata.profiles.list.array" in paths
    assert not any(p.endswith(".element") for p in paths)


def test_defaults_are_unchanged():
    tidy = pq.read_schema(io.BytesIO(v1_bytes([event()])))
    assert tidy.field("type_uid").type == pa.int64()
    assert tidy.field("resources").type.value_field.name == "element"
    assert tidy.field("actor").nullable
    keys = [k for k, _ in nest_v1([event()]).column("unmapped").to_pylist()[0]]
    assert "requestParameters.repositoryName" in keys and "requestParameters" not in keys


def test_v1_layout_options_are_refused_for_v2():
    for layout in ({"v1_request": "json"}, {"aws_v1_schema": True}):
        with pytest.raises(ValueError, match="version 1"):
            write_object(io.BytesIO(), [event()], 2, **layout)
    with pytest.raises(ValueError, match="v1_request"):
        nest_v1([event()], v1_request="nested")


def test_json_layout_holds_whole_values():
    [entries] = nest_v1([event()], v1_request="json").column("unmapped").to_pylist()
    entries = dict(entries)
    assert set(entries) == {"requestParameters", "responseElements"}
    assert json.loads(entries["requestParameters"])["repositoryName"] == "app"


def test_aws_schema_with_a_null_parent_struct_writes_null_fields():
    # An AWS service has no user; AWS writes a user struct of nulls, never a null struct.
    svc = event(
        arn=None,
        principal_id=None,
        account=None,
        session_issuer=None,
        session_created_ms=None,
        invoked_by="ecs.amazonaws.com",
    )
    table = pq.read_table(io.BytesIO(v1_bytes([svc], aws_v1_schema=True)))
    [actor] = table.column("actor").to_pylist()
    assert actor["user"]["uuid"] is None and actor["session"]["issuer"] is None
    [found] = scan(table_bytes(table)).aggregate.findings()
    assert found.user is None and found.invoked_by.sorted() == ["ecs.amazonaws.com"]


# --- scan reads both layouts -------------------------------------------------------------------


@BOTH_LAYOUTS
@AWS_SCHEMA
def test_scan_reads_repository_and_tag_in_either_layout(v1_request, aws_v1_schema):
    events = [
        caller("a", request_json=put_image_request("team/app", "v1.2")),
        caller("b", request_json=put_image_request('it\'s "quoted" \u00e9\\', None)),
        caller("c", request_json=put_image_request("web", "latest"), status="Failure"),
        caller("d", request_json=None),
        event(operation="GetObject", request_json=json.dumps({"bucketName": "b"})),
    ]
    data = v1_bytes(events, v1_request=v1_request, aws_v1_schema=aws_v1_schema)
    got = pushes(scan(data))
    user = f"arn:aws:iam::{ACCOUNT}:user/"
    assert got == {
        f"{user}a": (["team/app"], ["v1.2"]),
        f"{user}b": (['it\'s "quoted" \u00e9\\'], []),
        f"{user}c": (["web"], ["latest"]),
        f"{user}d": ([], []),
    }


@AWS_SCHEMA
def test_layouts_mixed_in_one_object(aws_v1_schema):
    flat = nest_v1(
        [caller("a", request_json=put_image_request("flat", "f1"))], aws_v1_schema=aws_v1_schema
    )
    whole = nest_v1(
        [caller("b", request_json=put_image_request("whole", "w1"))],
        v1_request="json",
        aws_v1_schema=aws_v1_schema,
    )
    data = table_bytes(pa.concat_tables([flat, whole, flat]), row_group_size=1)
    got = pushes(scan(data))
    assert got[f"arn:aws:iam::{ACCOUNT}:user/a"] == (["flat"], ["f1"])
    assert got[f"arn:aws:iam::{ACCOUNT}:user/b"] == (["whole"], ["w1"])


def both_in_one_row(typ: pa.DataType = STRING_MAP) -> pa.Table:
    """One row holding flattened keys and a whole JSON value that disagree, one with a flattened
    tag only and a whole repository, one with the whole value only."""
    events = [caller(n) for n in ("dual", "parts", "whole")]
    rows = [
        [
            ("requestParameters.repositoryName", "flat-repo"),
            ("requestParameters.imageTag", "flat-tag"),
            ("requestParameters", put_image_request("json-repo", "json-tag")),
        ],
        [
            ("requestParameters.imageTag", "flat-tag"),
            ("requestParameters", put_image_request("json-repo", "json-tag")),
        ],
        [("eventType", "AwsApiCall"), ("requestParameters", put_image_request("only", "t"))],
    ]
    return with_unmapped(nest_v1(events), typ, rows)


def test_flattened_keys_win_over_the_whole_value():
    got = pushes(scan(table_bytes(both_in_one_row())))
    user = f"arn:aws:iam::{ACCOUNT}:user/"
    assert got == {
        f"{user}dual": (["flat-repo"], ["flat-tag"]),
        f"{user}parts": (["json-repo"], ["flat-tag"]),
        f"{user}whole": (["only"], ["t"]),
    }


# --- key and value types of ``unmapped`` -------------------------------------------------------

MAP_TYPES = [
    (pa.large_string(), pa.large_string()),
    (pa.binary(), pa.binary()),
    (pa.large_binary(), pa.large_binary()),
    (pa.string(), pa.binary()),
    (pa.string(), DICT),
    (DICT, pa.string()),
    (pa.large_string(), DICT),
]


@BOTH_LAYOUTS
@pytest.mark.parametrize(("key_type", "item_type"), MAP_TYPES, ids=str)
def test_unmapped_of_any_text_or_byte_type_is_read(v1_request, key_type, item_type):
    events = [caller("a", request_json=put_image_request("team/app", "v\u00e9"))]
    table = with_unmapped(nest_v1(events, v1_request=v1_request), pa.map_(key_type, item_type))
    data = table_bytes(table)
    assert pq.read_schema(io.BytesIO(data)).field("unmapped").type == pa.map_(key_type, item_type)
    assert pushes(scan(data)) == {f"arn:aws:iam::{ACCOUNT}:user/a": (["team/app"], ["v\u00e9"])}


@pytest.mark.parametrize(("key_type", "item_type"), MAP_TYPES, ids=str)
def test_flattened_wins_whatever_the_types(key_type, item_type):
    got = pushes(scan(table_bytes(both_in_one_row(pa.map_(key_type, item_type)))))
    assert got[f"arn:aws:iam::{ACCOUNT}:user/dual"] == (["flat-repo"], ["flat-tag"])
    assert got[f"arn:aws:iam::{ACCOUNT}:user/whole"] == (["only"], ["t"])


def _bad_utf8(rows: list[list[tuple[bytes, bytes]]]) -> bytes:
    table = nest_v1([caller("a")])
    return table_bytes(with_unmapped(table, pa.map_(pa.binary(), pa.binary()), rows))


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([(b"requestParameters.repositoryName", b"app\xff")], "requestParameters.repositoryName"),
        ([(b"requestParameters.imageTag", b"\xc3")], "requestParameters.imageTag"),
        ([(b"requestParameters", b'{"repositoryName": "a\xfe"}')], "requestParameters"),
    ],
)
def test_invalid_utf8_in_a_value_read_is_a_named_bad_object(entries, named):
    data = _bad_utf8([entries])
    with pytest.raises(BadObject) as err:
        scan(data, name="s3://lake/bad.gz.parquet")
    assert err.value.name == "s3://lake/bad.gz.parquet"
    assert f"unmapped['{named}']" in err.value.reason
    assert "UTF-8" in err.value.reason


def test_invalid_utf8_in_values_not_read_does_not_fail_the_object():
    # Only the repository and tag are read out of unmapped; bytes elsewhere are not judged
    # (as in v2, where only the values cut out of api.request.data are).
    entries = [
        (b"eventType", b"\xff\xfe"),
        (b"requestParameters.repositoryName", b"app"),
        (b"requestParameters", b'{"imageTag": "t1", "imageManifest": "\xff"}'),
    ]
    assert pushes(scan(_bad_utf8([entries]))) == {
        f"arn:aws:iam::{ACCOUNT}:user/a": (["app"], ["t1"])
    }


# --- the v1 Athena statement reads both layouts, and agrees with scan --------------------------


@pytest.fixture(scope="module", params=[21, 22])
def v1_lake(request, tmp_path_factory) -> list[tuple[Path, str]]:
    """(path, layout) of v1 objects over two days: each request layout with the tidy and the AWS
    schema, an object mixing both layouts, one with rows where the two disagree."""
    rng = random.Random(request.param)
    root = tmp_path_factory.mktemp(f"v1-layouts-{request.param}")
    written = []
    for day in DAYS[1:3]:
        eventday = f"{day:%Y%m%d}"
        for part in range(4):
            path = root / key_for(1, day=eventday, name=f"p{part}")
            path.parent.mkdir(parents=True, exist_ok=True)
            layout = {"v1_request": LAYOUTS[part % 2], "aws_v1_schema": part >= 2}
            write_object(path, events_of_day(rng, day, ACCOUNT, rng.randint(5, 40)), 1, **layout)
            written.append((path, f"{layout['v1_request']}/{layout['aws_v1_schema']}"))
        mixed = root / key_for(1, day=eventday, name="mixed")
        tables = [
            nest_v1(events_of_day(rng, day, ACCOUNT, 10), v1_request=layout, aws_v1_schema=True)
            for layout in ("json", "flattened", "json")
        ]
        pq.write_table(
            pa.concat_tables(tables), mixed, row_group_size=7, use_compliant_nested_type=False
        )
        written.append((mixed, "mixed"))
        disagree = root / key_for(1, day=eventday, name="disagree")
        table = both_in_one_row()
        start = int(day.timestamp() * 1000) + 3_600_000
        times = pa.array([start, start + 1, start + 2], pa.int64())
        pq.write_table(
            table.set_column(table.schema.get_field_index("time"), "time", times), disagree
        )
        written.append((disagree, "disagree"))
    return written


def _repos(findings: Sequence[Finding]) -> set[str]:
    return {r for f in findings for r in f.repositories.sorted()}


@pytest.mark.parametrize("allowlist", [ALLOWLIST, NOBODY], ids=["allowlist", "nobody"])
def test_v1_statement_on_duckdb_equals_scan_over_both_layouts(v1_lake, allowlist):
    con = athena_on_duckdb([(p, 1) for p, _ in v1_lake])
    days = f"{DAYS[1]:%Y-%m-%d}", f"{DAYS[2]:%Y-%m-%d}"
    mine = run_sql(con, athena_sql.build(query(1, *days), allowlist))
    expected = scan_files([p for p, _ in v1_lake], allowlist)
    assert comparable(mine) == comparable(expected)
    # Not trivially equal: both layouts present, repositories and tags found in each, and the
    # JSON-escaped name decoded the same way by both.
    assert len(mine) > 5
    repos = _repos(mine)
    assert {"repo-0", "repo-1", 'it\'s/a \u00e9"quoted" repo'} <= repos
    assert {"flat-repo", "json-repo", "only"} <= repos
    assert sum(len(f.image_tags.sorted()) for f in mine) > 5


@pytest.mark.parametrize("v1_request", LAYOUTS)
def test_v1_statement_reads_each_layout_alone(tmp_path, v1_request):
    """Each layout alone, so neither can hide behind the other in the comparison above."""
    path = tmp_path / key_for(1, day="20261120")
    path.parent.mkdir(parents=True)
    events = [
        caller("a", request_json=put_image_request("team/app", "v1")),
        caller("b", request_json=put_image_request('q"uo\\te \u00e9', None)),
    ]
    write_object(path, events, 1, v1_request=v1_request, aws_v1_schema=True)
    found = run_sql(
        athena_on_duckdb([(path, 1)]),
        athena_sql.build(query(1, "2026-11-20", "2026-11-20"), Allowlist.of([])),
    )
    got = {f.user: (f.repositories.sorted(), f.image_tags.sorted()) for f in found}
    assert got == pushes(scan(path.read_bytes()))
    assert got[f"arn:aws:iam::{ACCOUNT}:user/a"] == (["team/app"], ["v1"])
    assert got[f"arn:aws:iam::{ACCOUNT}:user/b"] == (['q"uo\\te \u00e9'], [])


def test_v1_statement_looks_in_both_places():
    sql = athena_sql.build(query(1, "2026-11-20", "2026-11-20"), Allowlist.of([]))
    assert "element_at(\"unmapped\", 'requestParameters.repositoryName')" in sql
    assert (
        "json_extract_scalar(element_at(\"unmapped\", 'requestParameters'), '$.repositoryName')"
        in sql
    )
    assert "json_extract_scalar(element_at(\"unmapped\", 'requestParameters'), '$.imageTag')" in sql


# --- plain-Python reference for repositories and tags ------------------------------------------


def _reference(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """(caller, repository, tag) of every PutImage row, read with json.loads.

    Nothing is trusted here: which rows the allowlist keeps is compared with the Athena
    statement above; this checks only what is read out of ``unmapped``.
    """
    out = set()
    for row in rows:
        if (row["api"] or {}).get("operation") != "PutImage":
            continue
        user = ((row["actor"] or {}).get("user") or {}).get("uuid")
        entries = dict(row["unmapped"] or [])
        try:
            whole = json.loads(entries.get("requestParameters") or "{}")
        except ValueError:
            whole = {}
        repo = entries.get("requestParameters.repositoryName", whole.get("repositoryName"))
        tag = entries.get("requestParameters.imageTag", whole.get("imageTag"))
        out.add((user, repo, tag))
    return out


def test_scan_equals_plain_python_per_layout(v1_lake):
    for path, layout in v1_lake:
        want = _reference(pq.read_table(path).to_pylist())
        found = scan_files([path], NOBODY)
        # Small groups: every repository and tag is kept in the samples.
        users = {u for u, _, _ in want}
        assert {f.user for f in found} == users, layout
        for user in users:
            mine = [f for f in found if f.user == user]
            assert {r for f in mine for r in f.repositories.sorted()} == {
                r for u, r, _ in want if u == user and r is not None
            }, layout
            assert {t for f in mine for t in f.image_tags.sorted()} == {
                t for u, _, t in want if u == user and t is not None
            }, layout
