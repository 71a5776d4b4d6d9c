"""Differential tests: the detector's findings over random (seeded) objects of both versions equal
what DuckDB SQL, and a plain-Python reference, compute independently from the same Parquet.

The trust rule compared: a PutImage is trusted when its caller ARN, session issuer or calling
service matches the allowlist, or, for a row with none of the three, its source domain does.

And for every registered detection (``detections.registry()``), with its default options and
the options its examples use (plus a few more below): the Athena statement generated from its
spec, run on DuckDB (``tests/unit/athena_duckdb.py``) over the same objects, equals ``scan`` with
that detection. Event times span two weeks at every hour and the days around daylight-saving
changes, so time-of-day detections meet both sides of their rule; named time zones run with
DuckDB's ICU (built in, no download)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from detector import detections
from detector.analysis import athena_results, athena_sql, engine
from detector.core.allowlist import Allowlist
from detector.lake import reader
from detector.lake.schema import SchemaVersion
from tests.lake import ACCOUNT, CI_ROLE, T0_MS, event, key_for, put_image_request, write_object
from tests.unit.athena_duckdb import REGION, athena_on_duckdb, comparable, rows_of
from tests.unit.helpers import summary

OTHER_ACCOUNT = "444455556666"
EKS_ROLE = f"arn:aws:iam::{ACCOUNT}:role/eks-node"
STS = f"arn:aws:sts::{ACCOUNT}:assumed-role"
# ecr.amazonaws.com: trusted as the source domain of pushes AWS makes itself (replication).
EXACT = [
    CI_ROLE,
    f"arn:aws:iam::{ACCOUNT}:user/dev0",
    "codebuild.amazonaws.com",
    "ecr.amazonaws.com",
]
GLOBS = [f"arn:aws:sts::{ACCOUNT}:assumed-role/eks-node/*", f"arn:aws:iam::{ACCOUNT}:user/bot?"]
ALLOWLIST = Allowlist.of(EXACT + GLOBS)

# (caller ARN, session issuer, invoked_by): trusted and untrusted principals, incl. near misses.
PRINCIPALS: list[tuple[str | None, str | None, str | None]] = [
    *((f"{STS}/ci-deployer/build-{i}", CI_ROLE, None) for i in range(3)),
    *((f"{STS}/eks-node/i-{i:04x}", EKS_ROLE, None) for i in range(2)),
    (f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/eks-node/i-9", None, None),
    (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/eks-node-admin/x",
        f"arn:aws:iam::{ACCOUNT}:role/eks-node-admin",
        None,
    ),
    (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer-2/x",
        f"arn:aws:iam::{ACCOUNT}:role/ci-deployer-2",
        None,
    ),
    (f"arn:aws:iam::{ACCOUNT}:user/dev0", None, None),
    (f"arn:aws:iam::{ACCOUNT}:user/dev1", None, None),
    (f"arn:aws:iam::{ACCOUNT}:user/dev0\n", None, None),
    (f"arn:aws:iam::{ACCOUNT}:user/bot1", None, None),
    (f"arn:aws:iam::{ACCOUNT}:user/bot12", None, None),
    (f"arn:aws:iam::{ACCOUNT}:user/bot\u00e9", None, None),
    (None, None, "codebuild.amazonaws.com"),
    (None, None, "ecs.amazonaws.com"),
    (None, f"arn:aws:iam::{ACCOUNT}:role/other", None),  # an issuer alone is an identity
    # No caller identity at all: the source domain decides (drawn often, to meet every domain).
    (None, None, None),
    (None, None, None),
    (None, None, None),
    ("\x1b[31mevil\x1b[0m \U0001f600", None, None),
]
OPERATIONS = ["PutImage"] * 6 + ["GetObject", "BatchGetImage", "InitiateLayerUpload", None]
AGENTS = [
    "docker/24.0.7 go/go1.21.3 git-commit/311b9ff os/linux arch/amd64",
    "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023",
    None,
    "\x1b[31mred\x1b[0m\r\nX-Injected: 1",
    "nul\x00byte \u202ertl \U0001f680",
    "Mozilla/5.0 " * 300,
]
IPS = ["198.51.100.7", "198.51.100.8", "2001:db8::1", None]
DOMAINS = [None, None, "ecs.amazonaws.com", "ecr.amazonaws.com", "codebuild.amazonaws.com"]
REGIONS = ["us-east-1", "us-east-1", "eu-west-1", None, "\u202eus-east-1"]
ACCOUNTS = [ACCOUNT, ACCOUNT, OTHER_ACCOUNT, None]
STATUSES = ["Success", "Failure", "SUCCESS", None]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Daylight-saving changes (UTC): Europe in March and October 2026, Newfoundland (a half-hour
# zone) in March and November.
DST_CHANGES_MS = [
    int(datetime(2026, 3, 29, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 10, 25, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 3, 8, 5, 30, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 11, 1, 4, 30, tzinfo=UTC).timestamp() * 1000),
]
# The period every event falls in (for the Athena statements).
PERIOD = ("2026-03-01", "2026-12-31")


def random_time(rng: random.Random) -> int:
    """Half within three hours of T0 (many events per group), the rest at any time of two weeks
    around it (weekends included) or within three hours of a daylight-saving change."""
    draw = rng.random()
    if draw < 0.5:
        return T0_MS + rng.randrange(3 * HOUR_MS)
    if draw < 0.85:
        return T0_MS + rng.randrange(-7 * DAY_MS, 7 * DAY_MS)
    return rng.choice(DST_CHANGES_MS) + rng.randrange(-3 * HOUR_MS, 3 * HOUR_MS)


def random_events(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        arn, issuer, invoked_by = rng.choice(PRINCIPALS)
        out.append(
            event(
                time_ms=random_time(rng),
                operation=rng.choice(OPERATIONS),
                arn=arn,
                principal_id=f"AIDA{rng.randrange(5)}" if arn else None,
                session_issuer=issuer,
                session_created_ms=T0_MS if issuer else None,
                invoked_by=invoked_by,
                account=rng.choice(ACCOUNTS),
                user_agent=rng.choice(AGENTS),
                src_ip=rng.choice(IPS),
                src_domain=rng.choice(DOMAINS),
                region=rng.choice(REGIONS),
                status=rng.choice(STATUSES),
                request_json=put_image_request(f"repo-{rng.randrange(4)}", f"t{rng.randrange(9)}"),
            )
        )
    return out


def write_lake(root: Path, seed: int) -> list[tuple[Path, int]]:
    rng = random.Random(seed)
    written = []
    for i in range(6):
        version = 1 + i % 2
        path = root / key_for(version, name=f"part-{seed}-{i:04d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0 if i == 5 else rng.randint(1, 160)
        events = random_events(rng, n) if n else [event(operation="GetObject")]
        write_object(
            path,
            events,
            version,
            compression=rng.choice(["gzip", "zstd", "snappy"]),
            row_group_size=rng.choice([None, 5, 17]),
        )
        written.append((path, version))
    return written


def detector_summary(files: list[tuple[Path, int]]) -> set[tuple[Any, ...]]:
    run = engine.Run(ALLOWLIST)
    for path, _ in files:
        with path.open("rb") as f:
            run.add(engine.scan_object(f, str(path), ALLOWLIST))
    return summary(run.findings())


# --- DuckDB ----------------------------------------------------------------------------------

_COLUMNS = {
    1: {"usr": "actor['user']['uuid']", "acct": "actor['user']['account_uid']"},
    2: {"usr": "actor['user']['uid']", "acct": "actor['user']['account']['uid']"},
}


def _like(glob: str) -> str:
    out = []
    for ch in glob:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _trusted(col: str) -> str:
    exact = ", ".join(_quote(e) for e in EXACT)
    likes = " OR ".join(f"{col} LIKE {_quote(_like(g))} ESCAPE '\\'" for g in GLOBS)
    return f"coalesce({col} IN ({exact}) OR {likes}, false)"


def _trusted_row() -> str:
    by_identity = " OR ".join(_trusted(c) for c in ("usr", "iss", "inv"))
    anonymous = "usr IS NULL AND iss IS NULL AND inv IS NULL"
    return f"({by_identity} OR ({anonymous} AND {_trusted('dom')}))"


def duckdb_summary(files: list[tuple[Path, int]]) -> set[tuple[Any, ...]]:
    selects = []
    for version in (1, 2):
        paths = [str(p) for p, v in files if v == version]
        if not paths:
            continue
        cols = _COLUMNS[version]
        selects.append(
            f"""
            SELECT api['operation'] AS op, {cols["usr"]} AS usr, {cols["acct"]} AS acct,
                   http_request['user_agent'] AS ua, src_endpoint['ip'] AS ip,
                   src_endpoint['domain'] AS dom, cloud['region'] AS region, "time" AS t,
                   actor['session']['issuer'] AS iss, actor['invoked_by'] AS inv
            FROM read_parquet([{", ".join(_quote(p) for p in paths)}])
            """
        )
    sql = f"""
        WITH rows AS ({" UNION ALL ".join(selects)})
        SELECT op, usr, acct, ua, ip, dom, region, count(*), min(t), max(t)
        FROM rows
        WHERE op = 'PutImage'
          AND NOT {_trusted_row()}
        GROUP BY op, usr, acct, ua, ip, dom, region
    """
    con = duckdb.connect()
    try:
        result = con.execute(sql).fetchall()
    finally:
        con.close()
    return {(tuple(r[:7]), r[7], r[8], r[9]) for r in result}


# --- plain Python ----------------------------------------------------------------------------


def _get(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if value is None:
            return None
        value = value.get(part)
    return value


_PATHS = {
    1: {"user": "actor.user.uuid", "account": "actor.user.account_uid"},
    2: {"user": "actor.user.uid", "account": "actor.user.account.uid"},
}


def python_summary(files: list[tuple[Path, int]]) -> set[tuple[Any, ...]]:
    groups: dict[tuple[Any, ...], list[int]] = {}
    for path, version in files:
        for row in pq.read_table(path).to_pylist():
            if _get(row, "api.operation") != "PutImage":
                continue
            callers = (
                _get(row, _PATHS[version]["user"]),
                _get(row, "actor.session.issuer"),
                _get(row, "actor.invoked_by"),
            )
            domain = _get(row, "src_endpoint.domain")
            if all(v is None for v in callers):
                if ALLOWLIST.matches(domain):
                    continue
            elif any(ALLOWLIST.matches(v) for v in callers):
                continue
            key = (
                "PutImage",
                callers[0],
                _get(row, _PATHS[version]["account"]),
                _get(row, "http_request.user_agent"),
                _get(row, "src_endpoint.ip"),
                domain,
                _get(row, "cloud.region"),
            )
            groups.setdefault(key, []).append(row["time"])
    return {(k, len(ts), min(ts), max(ts)) for k, ts in groups.items()}


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[1, 2, 3, 4])
def lake(request, tmp_path_factory) -> list[tuple[Path, int]]:
    return write_lake(tmp_path_factory.mktemp(f"lake-{request.param}"), request.param)


def test_lake_is_interesting(lake):
    # Guard against a generator change making the comparison trivial.
    rows = [r for p, _ in lake for r in pq.read_table(p).to_pylist()]
    puts = [r for r in rows if _get(r, "api.operation") == "PutImage"]
    assert len(puts) > 50
    found = python_summary(lake)
    assert sum(c for _, c, _, _ in found) < len(puts)  # some rows trusted
    assert any(k[1] is None for k, *_ in found)  # null caller group
    assert any(k[3] is None for k, *_ in found)  # null user agent group
    assert any(k[6] is None for k, *_ in found)  # null region group
    # Pushes with no identity and an allowlisted domain exist (and are trusted), and a caller
    # with an ARN from an allowlisted domain is still reported.
    anonymous = [
        r
        for r in puts
        if _get(r, "actor.invoked_by") is None
        and _get(r, "actor.session.issuer") is None
        and _get(r, "actor.user.uuid") is None
        and _get(r, "actor.user.uid") is None
    ]
    assert any(_get(r, "src_endpoint.domain") == "ecr.amazonaws.com" for r in anonymous)
    assert any(_get(r, "src_endpoint.domain") == "ecs.amazonaws.com" for r in anonymous)
    assert any(k[1] is None and k[5] == "ecs.amazonaws.com" for k, *_ in found)
    assert any(k[1] is not None and k[5] == "ecr.amazonaws.com" for k, *_ in found)


@pytest.mark.parametrize("batch_rows", [None, 3])
def test_detector_equals_duckdb(lake, batch_rows, monkeypatch):
    if batch_rows is not None:
        monkeypatch.setattr(reader, "BATCH_ROWS", batch_rows)
    mine = detector_summary(lake)
    assert mine == duckdb_summary(lake)
    assert mine


def test_detector_equals_plain_python(lake):
    assert detector_summary(lake) == python_summary(lake)


def test_references_agree_with_each_other(lake):
    assert duckdb_summary(lake) == python_summary(lake)


def test_empty_allowlist_reports_every_put_image(lake):
    run = engine.Run(Allowlist.of([]))
    for path, _ in lake:
        with path.open("rb") as f:
            run.add(engine.scan_object(f, str(path), run.allowlist))
    rows = [r for p, _ in lake for r in pq.read_table(p).to_pylist()]
    assert sum(f.count for f in run.findings()) == sum(
        _get(r, "api.operation") == "PutImage" for r in rows
    )


# --- every detection's statement --------------------------------------------------------------

# Options tried besides the defaults and those of a detection's examples (for detections that
# are registered): a named zone with daylight saving and odd hours, a half-hour zone, a negative
# fixed offset covering the whole day (only weekends are outside).
MORE_OPTIONS: dict[str, list[dict[str, str]]] = {
    "ecr-upload-outside-business-hours": [
        {
            "BUSINESS_HOURS_TIMEZONE": "Europe/Berlin",
            "BUSINESS_HOURS_START": "09:30",
            "BUSINESS_HOURS_END": "17:15",
        },
        {"BUSINESS_HOURS_TIMEZONE": "America/St_Johns"},
        {
            "BUSINESS_HOURS_TIMEZONE": "-03:30",
            "BUSINESS_HOURS_START": "00:00",
            "BUSINESS_HOURS_END": "24:00",
        },
    ],
}


def _variants() -> list[tuple[str, dict[str, str]]]:
    """The detections of image pushes (this lake's calls; the rest of the catalogue is
    compared over a lake of its own, ``test_catalogue_differential``)."""
    out: list[tuple[str, dict[str, str]]] = []
    for slug, detection in detections.registry().items():
        if "PutImage" not in detection.operations:
            continue
        seen: list[dict[str, str]] = [{}]
        for options in [dict(e.options) for e in detection.examples] + MORE_OPTIONS.get(slug, []):
            if options not in seen:
                seen.append(options)
        out += [(slug, options) for options in seen]
    return out


def _variant_id(variant: tuple[str, dict[str, str]]) -> str:
    slug, options = variant
    return slug + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("variant", _variants(), ids=_variant_id)
def test_every_detection_statement_on_duckdb_equals_scan(lake, variant):
    slug, options = variant
    [active] = detections.activate([slug], options)
    detection = active.detection
    run = engine.Run(ALLOWLIST, [active])
    for path, _ in lake:
        with path.open("rb") as f:
            run.add(engine.scan_object(f, str(path), ALLOWLIST, active=[active]))
    expected = run.findings()
    con = athena_on_duckdb(lake)
    rows: list[Any] = []
    for version in (SchemaVersion.V1, SchemaVersion.V2):
        query = athena_sql.Query(REGION, version, athena_sql.Period.parse(*PERIOD))
        rows += rows_of(con, athena_sql.build(query, ALLOWLIST, active), detection)
    # The two tables' groups merged, as scan merges the objects of both versions.
    mine = athena_results.findings(rows, detection)
    assert comparable(mine) == comparable(expected)
    assert [f.key for f in mine] == [f.key for f in expected]
    assert all(f.detection is detection for f in mine)
    # Not trivially equal: some calls of the watched operations are reported, not all.
    watched = sum(
        _get(r, "api.operation") in detection.operations
        for p, _ in lake
        for r in pq.read_table(p).to_pylist()
    )
    assert 0 < sum(f.count for f in mine) < watched


def test_every_registered_detection_is_compared():
    from tests.unit.test_catalogue_differential import CATALOGUE

    assert {slug for slug, _ in _variants()} | set(CATALOGUE) == set(detections.registry())
