"""Aggregation into findings: counts, times, null groups, the record contract, what each finding
carries (repositories, tags, status counts, ids, objects), hostile strings, and batch/row-group
alignment of the two-pass reader."""

from __future__ import annotations

import json

import pytest

from detector.analysis import engine, findings
from detector.analysis.findings import MAX_EVENT_IDS, MAX_VALUES, Sample, ctime
from detector.core.allowlist import Allowlist
from detector.lake import reader
from tests.contract import JSONL_KEYS
from tests.lake import ACCOUNT, CI_ROLE, T0_MS, event, put_image_request, write_object
from tests.unit.helpers import NOBODY, canonical, parquet_bytes, records, run_over, scan

VERSIONS = pytest.mark.parametrize("version", [1, 2])
USER = f"arn:aws:iam::{ACCOUNT}:user/dev1"
LEADING_KEYS = JSONL_KEYS


def one(data: bytes, allowlist: Allowlist = NOBODY) -> dict:
    [finding] = scan(data, allowlist).aggregate.findings()
    return finding.to_record()


def dev(**kw) -> dict:
    kw.setdefault("arn", USER)
    kw.setdefault("session_issuer", None)
    kw.setdefault("principal_id", "AIDADEV1")
    return event(**kw)


# --- counts and times ------------------------------------------------------------------------


def test_ctime_formats_utc_seconds_flooring_milliseconds():
    assert ctime(None) is None
    assert ctime(0) == "1970-01-01T00:00:00"
    assert ctime(999) == "1970-01-01T00:00:00"
    assert ctime(1_000) == "1970-01-01T00:00:01"
    assert ctime(1_700_000_000_999) == "2023-11-14T22:13:20"
    assert ctime(-1) == "1969-12-31T23:59:59"


@VERSIONS
def test_count_first_and_last_time(version):
    times = [1_700_000_061_500, 1_700_000_000_999, 1_700_000_030_000]
    rec = one(parquet_bytes([dev(time_ms=t) for t in times], version))
    assert rec["count"] == 3
    assert rec["firstTime"] == "2023-11-14T22:13:20"
    assert rec["lastTime"] == "2023-11-14T22:14:21"


@VERSIONS
def test_other_operations_and_trusted_rows_are_not_counted(version):
    events = [
        dev(),
        dev(operation="GetObject"),
        dev(operation="BatchGetImage"),
        event(),
        dev(operation=None),
    ]
    result = scan(parquet_bytes(events, version), Allowlist.of([CI_ROLE]))
    assert [f.count for f in result.aggregate.findings()] == [1]
    assert result.stats.matched == 2
    assert result.stats.trusted == 1
    assert result.stats.rows == 5


@VERSIONS
def test_no_put_image_no_findings(version):
    result = scan(parquet_bytes([dev(operation="GetObject")], version))
    assert result.aggregate.findings() == []
    assert result.stats.matched == 0


@VERSIONS
def test_each_grouping_key_splits_groups(version):
    base = dict(time_ms=T0_MS)
    variants = [
        {},
        {"arn": USER + "x"},
        {"account": "444455556666"},
        {"user_agent": "curl/8"},
        {"src_ip": "203.0.113.9"},
        {"src_domain": "ecs.amazonaws.com"},
        {"region": "eu-west-1"},
    ]
    events = [dev(**base, **v) for v in variants] + [dev(**base)]
    recs = records(scan(parquet_bytes(events, version)).aggregate.findings())
    assert len(recs) == len(variants)
    assert sorted(r["count"] for r in recs) == [1] * (len(variants) - 1) + [2]


def test_grouping_across_objects_and_versions_with_run():
    u2 = f"arn:aws:iam::{ACCOUNT}:user/dev2"
    a = parquet_bytes([dev(time_ms=2_000), dev(time_ms=1_000)], 1)
    b = parquet_bytes([dev(time_ms=500), dev(time_ms=3_999), dev(arn=u2, time_ms=7_000)], 2)
    c = parquet_bytes([dev(operation="GetObject"), event()], 2)
    run = run_over([("a", a), ("b", b), ("c", c)], Allowlist.of([CI_ROLE]))
    assert (run.objects, run.rows, run.matched, run.trusted) == (3, 7, 6, 1)
    recs = records(run.findings())
    # Most recent activity first.
    assert [r["user"] for r in recs] == [u2, USER]
    assert recs[1]["count"] == 4
    assert recs[1]["firstTime"] == "1970-01-01T00:00:00"
    assert recs[1]["lastTime"] == "1970-01-01T00:00:03"
    assert recs[1]["source_objects"] == ["a", "b"]
    assert recs[0]["count"] == 1
    assert recs[0]["source_objects"] == ["b"]


# --- null grouping values --------------------------------------------------------------------

NULLABLE = {
    "arn": "user",
    "src_ip": "src_ip",
    "user_agent": "user_agent",
    "region": "region",
    "account": "actor.user.account.uid",
    "src_domain": "src_endpoint.domain",
}


@VERSIONS
@pytest.mark.parametrize("field", list(NULLABLE))
def test_null_grouping_value_is_its_own_group(version, field):
    value = {"src_domain": "ecs.amazonaws.com"}.get(field, "present")
    events = [dev(**{field: value}, time_ms=i) for i in range(2)]
    events += [dev(**{field: None}, time_ms=10 + i) for i in range(3)]
    recs = records(scan(parquet_bytes(events, version)).aggregate.findings())
    got = {r[NULLABLE[field]]: r["count"] for r in recs}
    assert got == {value: 2, None: 3}


@VERSIONS
def test_all_grouping_values_null_still_reported(version):
    ev = event(
        arn=None,
        principal_id=None,
        account=None,
        session_issuer=None,
        session_created_ms=None,
        user_agent=None,
        src_ip=None,
        src_domain=None,
        region=None,
    )
    rec = one(parquet_bytes([ev, ev], version))
    assert rec["count"] == 2
    assert [rec[k] for k in LEADING_KEYS[1:7]] == [None] * 6
    assert rec["message"].endswith("(no caller identity recorded)")


# --- the record contract ---------------------------------------------------------------------


@VERSIONS
def test_record_leading_keys_in_order(version):
    rec = one(parquet_bytes([dev(src_domain="d")], version))
    assert list(rec)[:10] == LEADING_KEYS
    assert rec["api.operation"] == "PutImage"
    assert rec["user"] == USER
    assert rec["actor.user.account.uid"] == ACCOUNT
    assert rec["src_endpoint.domain"] == "d"
    assert rec["region"] == "us-east-1"


# --- repositories and tags -------------------------------------------------------------------


@VERSIONS
def test_repository_and_tag_extracted(version):
    events = [
        dev(request_json=put_image_request("team/app", "v1.2")),
        dev(request_json=put_image_request("team/app", "latest")),
        dev(request_json=put_image_request("team/other", None)),
    ]
    rec = one(parquet_bytes(events, version))
    assert rec["repositories"] == ["team/app", "team/other"]
    assert rec["image_tags"] == ["latest", "v1.2"]


@VERSIONS
def test_no_request_no_repository(version):
    rec = one(parquet_bytes([dev(request_json=None)], version))
    assert rec["repositories"] == [] and rec["image_tags"] == []


@VERSIONS
@pytest.mark.parametrize(
    "value",
    ["caf\u00e9", 'we"ird', "emoji-\U0001f600", "tab\tin", "back\\slash", "a\\u0041"],
    ids=["json-escape", "quote", "astral", "tab", "backslash", "literal-backslash-u"],
)
def test_repository_and_tag_values_exact(version, value):
    # v2 reads them out of JSON text (where "café" is "caf\u00e9"); v1 from the flattened map.
    rec = one(parquet_bytes([dev(request_json=put_image_request(value, value))], version))
    assert rec["repositories"] == [value]
    assert rec["image_tags"] == [value]


@pytest.mark.parametrize("value", ["\ud800evil", "x\udfff", "\ud83d"], ids=["high", "low", "half"])
def test_escaped_lone_surrogate_in_request_json_stays_encodable(value):
    # v2 only: the caller's request JSON may hold "\ud800", an escape of no character. Decoding
    # it to a lone surrogate makes every record of the run unencodable as UTF-8 (the CLI's
    # --format json/jsonl then fails); the finding must stay printable.
    rec = one(parquet_bytes([dev(request_json=put_image_request(value, value))], 2))
    assert rec["count"] == 1
    [repository] = rec["repositories"]
    assert isinstance(repository, str) and repository
    json.dumps(rec, ensure_ascii=False).encode("utf-8")
    assert json.loads(json.dumps(rec)) == rec


def test_same_repository_from_both_versions_listed_once():
    events = [dev(request_json=put_image_request("caf\u00e9", "t\u00e9"))]
    run = run_over([("v1", parquet_bytes(events, 1)), ("v2", parquet_bytes(events, 2))])
    [rec] = records(run.findings())
    assert rec["count"] == 2
    assert rec["repositories"] == ["caf\u00e9"]
    assert rec["image_tags"] == ["t\u00e9"]


@VERSIONS
def test_repository_from_other_operations_never_shown(version):
    events = [dev(), dev(operation="CreateRepository", request_json=put_image_request("x", "y"))]
    rec = one(parquet_bytes(events, version))
    assert rec["repositories"] == ["app"]


# --- status, ids, objects --------------------------------------------------------------------


@VERSIONS
def test_succeeded_and_failed_case_insensitive(version):
    statuses = ["SUCCESS", "Success", "success", "failure", "Failure", None, "Unknown"]
    rec = one(parquet_bytes([dev(status=s) for s in statuses], version))
    assert rec["count"] == 7
    assert (rec["succeeded"], rec["failed"]) == (3, 2)


@VERSIONS
def test_all_successful(version):
    rec = one(parquet_bytes([dev(status="Success")] * 2, version))
    assert (rec["succeeded"], rec["failed"]) == (2, 0)


@VERSIONS
@pytest.mark.parametrize("n", [1, 3, MAX_EVENT_IDS, MAX_EVENT_IDS + 3])
def test_event_ids_sample_at_most_five(version, n):
    ids = [f"evt-{i:04d}" for i in range(n)]
    rec = one(parquet_bytes([dev(event_uid=u, time_ms=i) for i, u in enumerate(ids)], version))
    assert rec["count"] == n
    assert len(rec["event_ids"]) == min(n, MAX_EVENT_IDS)
    assert set(rec["event_ids"]) <= set(ids)
    assert rec["event_ids"] == sorted(rec["event_ids"])


def test_event_ids_capped_across_objects():
    objs = [
        (f"o{k}", parquet_bytes([dev(event_uid=f"evt-{k}-{i}") for i in range(3)], 1 + k % 2))
        for k in range(3)
    ]
    [rec] = records(run_over(objs).findings())
    assert rec["count"] == 9
    assert len(rec["event_ids"]) == MAX_EVENT_IDS
    assert rec["source_objects"] == ["o0", "o1", "o2"]


@VERSIONS
def test_source_objects_only_where_the_group_was_seen(version):
    other = f"arn:aws:iam::{ACCOUNT}:user/other"
    objs = [
        ("s3://b/k1.parquet", parquet_bytes([dev()], version)),
        ("s3://b/k2.parquet", parquet_bytes([dev(arn=other)], version)),
        ("s3://b/k3.parquet", parquet_bytes([dev(), dev()], version)),
    ]
    recs = {r["user"]: r for r in records(run_over(objs).findings())}
    assert recs[USER]["source_objects"] == ["s3://b/k1.parquet", "s3://b/k3.parquet"]
    assert recs[USER]["count"] == 3
    assert recs[other]["source_objects"] == ["s3://b/k2.parquet"]


# --- sample caps -----------------------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize(
    ("n", "truncated"),
    [(MAX_VALUES - 1, False), (MAX_VALUES, False), (MAX_VALUES + 1, True), (MAX_VALUES * 3, True)],
)
def test_samples_capped(version, n, truncated):
    events = [
        dev(request_json=put_image_request(f"repo-{i:03d}", f"tag-{i:03d}")) for i in range(n)
    ]
    rec = one(parquet_bytes(events, version))
    assert rec["count"] == n
    assert len(rec["repositories"]) == min(n, MAX_VALUES)
    assert len(rec["image_tags"]) == min(n, MAX_VALUES)
    assert rec["samples_truncated"] is truncated


def test_samples_capped_after_merge():
    half = MAX_VALUES // 2 + 5
    objs = [
        (
            f"o{k}",
            parquet_bytes(
                [dev(request_json=put_image_request(f"r{k}-{i}", "t")) for i in range(half)], k + 1
            ),
        )
        for k in range(2)
    ]
    [rec] = records(run_over(objs).findings())
    assert rec["count"] == 2 * half
    assert len(rec["repositories"]) == MAX_VALUES
    assert rec["samples_truncated"] is True
    assert rec["image_tags"] == ["t"]


def test_max_values_constant_is_what_the_cap_uses():
    assert findings.MAX_VALUES == MAX_VALUES > 0


# --- priority values (successful pushes) -----------------------------------------------------


def test_sample_priority_value_evicts_an_ordinary_one_when_full():
    s = Sample(limit=3)
    s.add(["a", "b", "c"])
    assert not s.more
    s.add(["p"], priority=True)
    assert len(s.values) == 3 and s.more
    assert s.succeeded() == ["p"]
    assert len(set(s.values) & {"a", "b", "c"}) == 2
    assert s.prioritised()[0] == "p"


def test_sample_ordinary_value_never_evicts_when_full():
    s = Sample(limit=2)
    s.add(["p"], priority=True)
    s.add(["a", "b", "c"])
    assert set(s.values) == {"p", "a"} and s.more
    assert s.succeeded() == ["p"]


def test_sample_priority_value_never_evicts_another_priority_value():
    s = Sample(limit=2)
    s.add(["p1", "p2"], priority=True)
    s.add(["p3", "p4"], priority=True)
    assert s.succeeded() == ["p1", "p2"] and s.more
    s.add(["a"])
    assert s.sorted() == ["p1", "p2"]


def test_sample_priority_evicts_only_as_many_as_needed():
    s = Sample(limit=4)
    s.add(["a", "b"])
    s.add(["p1"], priority=True)
    s.add(["c"])
    s.add(["p2", "p3", "p4", "p5"], priority=True)
    # Full of priority values: every ordinary value gone, one priority value did not fit.
    assert len(s.values) == 4 and s.more
    assert s.succeeded() == s.sorted()
    assert "p1" in s.values


def test_sample_value_seen_again_with_priority_is_upgraded_in_place():
    s = Sample(limit=2)
    s.add(["a", "b"])
    s.add(["b"], priority=True)
    assert s.sorted() == ["a", "b"] and s.succeeded() == ["b"]
    assert not s.more  # nothing was dropped
    s.add(["b"])  # seen again without priority: stays a priority value
    assert s.succeeded() == ["b"]


def test_sample_merge_keeps_priorities():
    full = Sample(limit=3)
    full.add([f"decoy-{i}" for i in range(10)])
    other = Sample(limit=3)
    other.add(["prod"], priority=True)
    other.add(["x", "y"])
    full.merge(other)
    assert full.succeeded() == ["prod"]
    assert len(full.values) == 3 and full.more

    # The other way round: an ordinary-only sample merged in evicts no priority value.
    mine = Sample(limit=2)
    mine.add(["prod", "stage"], priority=True)
    decoys = Sample(limit=2)
    decoys.add(["d1", "d2"])
    mine.merge(decoys)
    assert mine.succeeded() == ["prod", "stage"] == mine.sorted()
    assert mine.more


def test_sample_merge_carries_more_and_priority_of_a_shared_value():
    a = Sample(limit=5)
    a.add(["shared"])
    b = Sample(limit=1)
    b.add(["shared"], priority=True)
    b.add(["lost"])
    assert b.more
    a.merge(b)
    assert a.succeeded() == ["shared"] and a.more


def test_finding_copy_keeps_priorities_independent():
    f = findings.Finding(key=("PutImage",) + (None,) * 6)
    f.repositories.add(["prod"], priority=True)
    g = f.copy()
    g.repositories.add(["other"], priority=True)
    assert f.repositories.succeeded() == ["prod"]
    assert g.repositories.succeeded() == ["other", "prod"]


def _decoys_then_push(caller: str, n: int = 60) -> list[dict]:
    decoys = [
        event(
            arn=caller,
            session_issuer=None,
            status="Failure",
            request_json=put_image_request(f"decoy/repo-{i:03d}", f"d{i}"),
            time_ms=T0_MS + i * 1000,
        )
        for i in range(n)
    ]
    push = event(
        arn=caller,
        session_issuer=None,
        status="Success",
        request_json=put_image_request("prod/payments-api", "v9"),
        time_ms=T0_MS + n * 1000,
    )
    return [*decoys, push]


@VERSIONS
def test_decoy_failed_pushes_cannot_hide_the_successful_one(version):
    rec = one(parquet_bytes(_decoys_then_push(USER), version))
    assert (rec["count"], rec["succeeded"], rec["failed"]) == (61, 1, 60)
    assert len(rec["repositories"]) == MAX_VALUES
    assert "prod/payments-api" in rec["repositories"]
    assert rec["succeeded_repositories"] == ["prod/payments-api"]
    assert "v9" in rec["image_tags"]
    assert rec["succeeded_image_tags"] == ["v9"]
    assert rec["samples_truncated"] is True


@VERSIONS
def test_decoys_in_small_batches_cannot_hide_the_successful_one(version, monkeypatch):
    # Aggregated a few rows at a time: the push arrives in a later step, into a full sample.
    monkeypatch.setattr(reader, "BATCH_ROWS", 7)
    monkeypatch.setattr(engine, "AGGREGATE_ROWS", 7)
    data = parquet_bytes(_decoys_then_push(USER), version, row_group_size=9)
    rec = one(data)
    assert rec["count"] == 61
    assert rec["succeeded_repositories"] == ["prod/payments-api"]
    assert "prod/payments-api" in rec["repositories"]


def test_decoys_and_push_in_separate_objects_merge_with_priority():
    events = _decoys_then_push(USER)
    for objs in (
        [("decoys", parquet_bytes(events[:-1], 2)), ("push", parquet_bytes(events[-1:], 1))],
        [("push", parquet_bytes(events[-1:], 1)), ("decoys", parquet_bytes(events[:-1], 2))],
    ):
        [rec] = records(run_over(objs).findings())
        assert rec["count"] == 61
        assert rec["succeeded_repositories"] == ["prod/payments-api"]
        assert "prod/payments-api" in rec["repositories"]
        assert len(rec["repositories"]) == MAX_VALUES


def test_no_successful_push_no_succeeded_repositories():
    rec = one(parquet_bytes(_decoys_then_push(USER)[:-1], 2))
    assert rec["succeeded_repositories"] == [] and rec["succeeded_image_tags"] == []
    assert rec["succeeded"] == 0


# --- hostile strings -------------------------------------------------------------------------

HOSTILE = {
    "ansi": "\x1b[31mred\x1b[0m",
    "nul": "nul\x00byte",
    "crlf": "line1\r\nline2",
    "emoji": "emoji \U0001f600\U0001f680",
    "rtl": "rtl \u202eevil\u202c \u05e2\u05d1\u05e8\u05d9\u05ea",
    "long": ("Mozilla/5.0 " * 900)[:10_240],
    "quotes": "\"'\\<>&",
}


@VERSIONS
@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_strings_preserved_exactly(version, value):
    ev = dev(arn=value, user_agent=value, region=value, src_ip=value)
    rec = one(parquet_bytes([ev, ev], version))
    assert rec["count"] == 2
    for k in ("user", "user_agent", "region", "src_ip"):
        assert rec[k] == value
    assert json.loads(json.dumps(rec)) == rec
    assert json.loads(json.dumps(rec, ensure_ascii=False)) == rec


def test_ten_kb_user_agent_kept_whole():
    ua = "x" * 10_000 + "\U0001f600" * 100
    rec = one(parquet_bytes([dev(user_agent=ua)], 2))
    assert rec["user_agent"] == ua
    assert len(rec["user_agent"]) == 10_100


@VERSIONS
def test_hostile_strings_distinguish_groups(version):
    events = [
        dev(user_agent="a\r\nb"),
        dev(user_agent="a\nb"),
        dev(user_agent="a\x00b"),
        dev(user_agent="ab"),
    ]
    recs = records(scan(parquet_bytes(events, version)).aggregate.findings())
    assert sorted(r["user_agent"] for r in recs) == sorted(["a\r\nb", "a\nb", "a\x00b", "ab"])


@VERSIONS
@pytest.mark.parametrize("ms", [10**15, 2**62, -(10**15)], ids=["year-33658", "huge", "negative"])
def test_out_of_range_time_does_not_break_the_record(version, ms):
    # One event with a corrupt timestamp must not make every finding of the run unprintable.
    rec = one(parquet_bytes([dev(time_ms=ms)], version))
    assert rec["count"] == 1
    assert rec["firstTime"] is None or isinstance(rec["firstTime"], str)
    json.dumps(rec)


# --- row groups and batches: the two-pass alignment ------------------------------------------


def _alignment_events(n: int = 120) -> list[dict]:
    events = []
    for i in range(n):
        k = i % 4
        if i % 7 == 3:
            ev = event(time_ms=T0_MS + i, event_uid=f"e{i:04d}")  # trusted CI role session
        elif i % 5 == 2:
            ev = dev(
                operation="GetObject",
                arn=f"arn:aws:iam::{ACCOUNT}:user/u{k}",
                event_uid=f"e{i:04d}",
            )
        else:
            ev = dev(
                arn=f"arn:aws:iam::{ACCOUNT}:user/u{k}",
                time_ms=T0_MS + i * 1_000 + (i * 37) % 1_000,
                request_json=put_image_request(f"repo-{k}", f"t{i:04d}"),
                event_uid=f"e{i:04d}",
                status="Success" if i % 3 else "Failure",
            )
        events.append(ev)
    return events


def _expected(events: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for ev in events:
        if ev["operation"] != "PutImage" or ev["session_issuer"] == CI_ROLE:
            continue
        g = out.setdefault(ev["arn"], {"count": 0, "times": [], "tags": set(), "ok": 0, "bad": 0})
        g["count"] += 1
        g["times"].append(ev["time_ms"])
        g["tags"].add(json.loads(ev["request_json"])["imageTag"])
        g["ok"] += ev["status"] == "Success"
        g["bad"] += ev["status"] == "Failure"
    return out


@VERSIONS
@pytest.mark.parametrize("row_group_size", [3, 25, None])
@pytest.mark.parametrize("batch_rows", [1, 4, 7])
def test_many_row_groups_and_batches_keep_rows_aligned(
    version, row_group_size, batch_rows, monkeypatch
):
    events = _alignment_events()
    data = parquet_bytes(events, version, row_group_size=row_group_size)
    allowlist = Allowlist.of([CI_ROLE])
    unpatched = scan(data, allowlist)
    monkeypatch.setattr(reader, "BATCH_ROWS", batch_rows)
    patched = scan(data, allowlist)
    assert canonical(patched.aggregate.findings()) == canonical(unpatched.aggregate.findings())
    assert patched.stats == unpatched.stats

    expected = _expected(events)
    got = {f.user: f for f in patched.aggregate.findings()}
    assert set(got) == set(expected)
    for user, finding in got.items():
        exp = expected[user]
        k = user.rsplit("u", 1)[1]
        rec = finding.to_record()
        assert rec["count"] == exp["count"]
        assert (finding.first_ms, finding.last_ms) == (min(exp["times"]), max(exp["times"]))
        # Heavy columns (request, ids, status) read in the second pass belong to the same rows.
        assert rec["repositories"] == [f"repo-{k}"]
        assert set(rec["image_tags"]) == exp["tags"]
        assert (rec["succeeded"], rec["failed"]) == (exp["ok"], exp["bad"])
        assert all(int(e[1:]) % 4 == int(k) for e in rec["event_ids"])
        assert all(int(t[1:]) % 4 == int(k) for t in rec["image_tags"])


@VERSIONS
def test_batch_boundary_splits_a_group(version, monkeypatch):
    # Rows of one group spread over many batches and row groups still make one finding.
    events = [
        dev(time_ms=i, event_uid=f"e{i}", request_json=put_image_request("r", f"t{i}"))
        for i in range(23)
    ]
    data = parquet_bytes(events, version, row_group_size=10)
    monkeypatch.setattr(reader, "BATCH_ROWS", 4)
    result = scan(data)
    [rec] = records(result.aggregate.findings())
    assert rec["count"] == 23
    assert rec["image_tags"] == sorted(f"t{i}" for i in range(23))
    assert result.stats.row_groups == 3 and result.stats.row_groups_read == 3


def test_run_is_the_sum_of_its_objects():
    objs = [
        (f"o{i}", parquet_bytes(_alignment_events(30 + i), 1 + i % 2, row_group_size=7))
        for i in range(4)
    ]
    allowlist = Allowlist.of([CI_ROLE])
    run = run_over(objs, allowlist)
    manual = engine.Run(allowlist)
    for name, data in reversed(objs):
        manual.add(scan(data, allowlist, name))
    assert canonical(run.findings()) == canonical(manual.findings())
    assert sum(f.count for f in run.findings()) == sum(
        e["count"] for i in range(4) for e in _expected(_alignment_events(30 + i)).values()
    )


def test_merging_into_a_run_leaves_each_object_result_unchanged():
    """A per-object result must keep its own counts after the run merged it (exactly-once
    counting adds each object's contribution separately)."""
    import io

    from detector.analysis.engine import Run, scan_object

    results = []
    for version in (1, 2):
        buf = io.BytesIO()
        write_object(buf, [event(session_issuer=None)], version)
        results.append(scan_object(buf, f"o{version}", Allowlist.parse("")))
    run = Run(Allowlist.parse(""))
    for r in results:
        run.add(r)
    assert [f.count for f in run.findings()] == [2]
    assert [[f.count for f in r.aggregate.findings()] for r in results] == [[1], [1]]
