"""Differential tests for the ESCU catalogue: every detection's Athena statement, run on DuckDB
(``athena_duckdb``, with ``tests.sqljson`` for request tests), equals ``scan`` over random
(seeded) objects of both versions and both v1 request layouts, thresholds included.

The lake is made of every detection's examples (positives and negatives), each copied a few
times with a random caller, source IP, status, error and time (hours apart and minutes apart,
so thresholds meet buckets on both sides of them), and some copies given another example's
request of the same operation: so each detection meets calls it reports and calls it does not,
including the near misses its examples were written for."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from detector import detections
from detector.analysis import athena_results, athena_sql, engine
from detector.core.allowlist import Allowlist
from detector.lake.schema import SchemaVersion
from tests.lake import ACCOUNT, event, key_for, write_object
from tests.unit.athena_duckdb import REGION, athena_on_duckdb, comparable, rows_of
from tests.unit.test_detection_examples import example_events

# Every detection but those of image pushes (``test_differential`` compares those).
CATALOGUE = [s for s, d in detections.registry().items() if "PutImage" not in d.operations]
PERIOD = ("2026-11-01", "2026-12-31")
MINUTE_MS = 60_000
USERS = [
    f"arn:aws:iam::{ACCOUNT}:user/alice",
    f"arn:aws:iam::{ACCOUNT}:user/bob",
    f"arn:aws:sts::{ACCOUNT}:assumed-role/admin/s-1",
    None,
]
IPS = ["198.51.100.7", "203.0.113.9", "2001:db8::1", None]
ERRORS = [None, "AccessDenied", "accessdenied", "Client.UnauthorizedOperation", "Throttling"]


def _variants(rng: random.Random, base: dict[str, Any], requests: dict[str, list[str]]) -> list:
    out = [base]
    for _ in range(rng.randint(1, 4)):
        ev = dict(base, event_uid=None, request_uid=None)
        ev["time_ms"] = base["time_ms"] + rng.choice([0, 1, 2, 4, 7, 61, 300]) * MINUTE_MS
        if rng.random() < 0.5:
            arn = rng.choice(USERS)
            ev["arn"] = arn
            ev["user_type"] = "IAMUser" if arn and ":user/" in arn else "AssumedRole"
            ev["principal_id"] = None if arn else f"AIDA{rng.randrange(3)}"
        if rng.random() < 0.4:
            ev["src_ip"] = rng.choice(IPS)
        if rng.random() < 0.3:
            ev["status"] = rng.choice(["Success", "Failure", None])
            ev["error_code"] = rng.choice(ERRORS)
        if rng.random() < 0.3 and requests.get(ev["operation"]):
            ev["request_json"] = rng.choice(requests[ev["operation"]])
        out.append(event(**ev))
    return out


def write_lake(root: Path, seed: int) -> list[tuple[Path, int]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    requests: dict[str, list[str]] = {}
    examples = [e for d in detections.registry().values() for e in d.examples]
    for example in examples:
        for ev in example_events(example):
            if ev["request_json"] is not None:
                requests.setdefault(ev["operation"], []).append(ev["request_json"])
    for example in examples:
        for ev in example_events(example):
            events += _variants(rng, ev, requests)
    # A request that is not JSON, and one nested past any test, must not fail either side.
    events.append(event(operation="PutBucketVersioning", request_json="{not json"))
    events.append(event(operation="ModifySnapshotAttribute", request_json="[" * 200 + "]" * 200))
    rng.shuffle(events)
    written = []
    layouts = [(1, "flattened"), (1, "json"), (2, "flattened")]
    for i in range(6):
        version, v1_request = layouts[i % 3]
        part = events[i::6]
        path = root / key_for(version, name=f"part-{seed}-{i:04d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        layout = {"v1_request": v1_request} if version == 1 else {}
        write_object(path, part, version, row_group_size=rng.choice([None, 7]), **layout)
        written.append((path, version))
    return written


@pytest.fixture(scope="module", params=[11, 12])
def lake(request, tmp_path_factory) -> list[tuple[Path, int]]:
    return write_lake(tmp_path_factory.mktemp(f"catalogue-{request.param}"), request.param)


@pytest.mark.parametrize("slug", CATALOGUE)
def test_statement_on_duckdb_equals_scan(lake, slug):
    """Version by version: a statement reads one source version's table, so its thresholds
    count within that table (a backfill runs one statement per version)."""
    [active] = detections.activate([slug])
    detection = active.detection
    allowlist = Allowlist.of([])
    con = athena_on_duckdb(lake)
    reported = 0
    for version in (SchemaVersion.V1, SchemaVersion.V2):
        run = engine.Run(allowlist, [active])
        for path, v in lake:
            if v == int(float(version.value)):
                with path.open("rb") as f:
                    run.add(engine.scan_object(f, str(path), allowlist, active=[active]))
        expected = run.findings()
        query = athena_sql.Query(REGION, version, athena_sql.Period.parse(*PERIOD))
        rows = rows_of(con, athena_sql.build(query, allowlist, active), detection)
        mine = athena_results.findings(rows, detection)
        assert comparable(mine) == comparable(expected), version
        assert [(f.key, f.bucket) for f in mine] == [(f.key, f.bucket) for f in expected]
        reported += sum(f.count for f in mine)
    # Not trivial: something is reported, and, for a detection that judges more than the
    # operation, some calls of its operations are not.
    assert reported, slug
    if detection.kind == "filter" and not detection.predicate_columns:
        return
    ops = set(detection.operations)
    watched = sum(
        1
        for p, _ in lake
        for r in pq.read_table(p, columns=["api"]).to_pylist()
        if not ops or r["api"]["operation"] in ops
    )
    assert reported < watched


def test_thresholds_cut_something(lake):
    """Thresholds are met by some groups and not by others in this lake."""
    allowlist = Allowlist.of([])
    for slug in CATALOGUE:
        [active] = detections.activate([slug])
        if active.detection.threshold is None:
            continue
        run = engine.Run(allowlist, [active])
        for path, _ in lake:
            with path.open("rb") as f:
                run.add(engine.scan_object(f, str(path), allowlist, active=[active]))
        assert 0 < len(run.findings()) < len(run.all_findings()), slug


def test_request_json_in_the_lake_is_the_examples(lake):
    rows = [r for p, v in lake if v == 2 for r in pq.read_table(p, columns=["api"]).to_pylist()]
    texts = [r["api"]["request"]["data"] for r in rows if r["api"]["request"]]
    assert any(t and json.loads(t).get("policyDocument") for t in texts if t and t[0] == "{")
