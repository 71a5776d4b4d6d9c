"""The generic engine runs detection specs: one read of an object serves every active detection,
each detection judges only the rows of its own operations, and each gets its own findings.

A test-only second detection (the default spec with other operations, an option and a time
predicate) stands in for any other spec: nothing here depends on what it detects.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from detector import detections
from detector.analysis import engine
from detector.analysis.aggregate import Aggregate
from detector.analysis.findings import Finding, Sample, sample_names
from detector.core.allowlist import Allowlist
from detector.core.spec import Active, Context, RequestField, SampleSpec
from detector.lake import reader, schema
from tests.lake import ACCOUNT, CI_ROLE, T0_MS, event, put_image_request
from tests.unit.helpers import canonical, parquet_bytes, records

VERSIONS = pytest.mark.parametrize("version", [1, 2])
DEFAULT = detections.get(detections.DEFAULT)
ALLOWLIST = Allowlist.of([CI_ROLE])
HOUR = 3_600_000
ATTACKER = f"arn:aws:iam::{ACCOUNT}:user/attacker"
LATE = f"arn:aws:iam::{ACCOUNT}:user/late"


def _late(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    """The default's verdict, and only at or after the ``after`` option."""
    assert rows["time_ms"].type == pa.int64()
    return pc.and_(
        DEFAULT.predicate(rows, ctx), pc.greater_equal(rows["time_ms"], ctx.options["after"])
    )


SECOND = dataclasses.replace(
    DEFAULT,
    id="00000000-test-0000-0000-000000000002",
    slug="test-second",
    message_template="Second detection: {user}",
    severity="high",
    operations=("PutImage", "BatchGetImage"),
    predicate_columns=(*DEFAULT.predicate_columns, "time_ms"),
    predicate=_late,
)
BOTH = (Active(DEFAULT), Active(SECOND, {"after": T0_MS + HOUR}))


def _scan(
    data: bytes, active: tuple[Active, ...] | None = BOTH, allowlist: Allowlist = ALLOWLIST
) -> engine.ObjectResult:
    return engine.scan_object(io.BytesIO(data), "obj.parquet", allowlist, None, active)


def _events() -> list[dict[str, Any]]:
    return [
        event(),  # PutImage by the allowlisted CI role: neither reports it
        event(arn=ATTACKER, session_issuer=None),  # early PutImage: the default only
        event(arn=LATE, session_issuer=None, time_ms=T0_MS + 2 * HOUR),  # both
        # BatchGetImage: not the default's operation; late, untrusted: the second's
        event(
            operation="BatchGetImage", arn=ATTACKER, session_issuer=None, time_ms=T0_MS + 3 * HOUR
        ),
        event(operation="GetObject", arn=ATTACKER, session_issuer=None, time_ms=T0_MS + 3 * HOUR),
    ]


# --- one read, two detections ------------------------------------------------------------------


@VERSIONS
def test_one_read_serves_two_detections_each_with_its_own_findings(version):
    data = parquet_bytes(_events(), version)
    result = _scan(data)
    assert list(result.aggregates) == [DEFAULT.id, SECOND.id]
    assert result.aggregate is result.aggregates[DEFAULT.id]
    assert result.findings() == [
        *result.aggregates[DEFAULT.id].findings(),
        *result.aggregates[SECOND.id].findings(),
    ]
    mine = {f.user: f for f in result.aggregates[DEFAULT.id].findings()}
    second = {(f.field("operation"), f.user): f for f in result.aggregates[SECOND.id].findings()}
    assert set(mine) == {ATTACKER, LATE}
    # The operation of a kept row comes from the data, not from a constant.
    assert set(second) == {("PutImage", LATE), ("BatchGetImage", ATTACKER)}
    for f in mine.values():
        assert f.detection is DEFAULT and f.to_record()["detection_id"] == DEFAULT.id
    for f in second.values():
        rec = f.to_record()
        assert f.detection is SECOND
        assert (rec["detection_id"], rec["severity"]) == (SECOND.id, "high")
        assert rec["message"] == f"Second detection: {f.user}"
    assert second[("BatchGetImage", ATTACKER)].sample("repositories").sorted() == []
    assert second[("PutImage", LATE)].repositories.sorted() == ["app"]

    # matched: rows of either operation; kept per detection; trusted: matched, kept by none.
    assert result.stats.matched == 4
    assert result.stats.kept == {DEFAULT.id: 2, SECOND.id: 2}
    assert result.stats.trusted == 4 - 3


@VERSIONS
def test_the_default_detection_is_unchanged_by_a_second_one(version):
    data = parquet_bytes(_events(), version)
    alone = _scan(data, None)
    both = _scan(data)
    assert records(alone.aggregate.findings()) == records(both.aggregate.findings())
    assert alone.stats.kept == {DEFAULT.id: 2}
    assert (alone.stats.matched, alone.stats.trusted) == (3, 1)
    assert list(alone.aggregates) == [DEFAULT.id]


def test_run_keeps_detections_apart_and_in_active_order():
    objs = [parquet_bytes(_events(), v) for v in (1, 2)]
    run = engine.Run(ALLOWLIST, BOTH)
    for i, data in enumerate(objs):
        run.add(engine.scan_object(io.BytesIO(data), f"o{i}", ALLOWLIST, active=BOTH))
    found = run.findings()
    ids = [f.detection.id for f in found]
    assert ids == sorted(ids, key=[DEFAULT.id, SECOND.id].index)
    assert ids.count(DEFAULT.id) == 2 and ids.count(SECOND.id) == 2
    # Each detection's part in today's order (most recent first).
    for aggregate in run.aggregates.values():
        part = [f for f in found if f.detection is aggregate.detection]
        assert part == aggregate.findings()
    assert run.aggregate is run.aggregates[DEFAULT.id]
    assert run.kept == {DEFAULT.id: 4, SECOND.id: 4}
    assert (run.objects, run.matched, run.trusted) == (2, 8, 2)
    assert all(f.count == 2 for f in found)


def test_a_row_kept_by_one_detection_lands_only_in_its_findings():
    # The late PutImage is both detections'; an early one only the default's.
    data = parquet_bytes(
        [
            event(arn=ATTACKER, session_issuer=None),
            event(arn=ATTACKER, session_issuer=None, time_ms=T0_MS + 2 * HOUR),
        ],
        2,
    )
    result = _scan(data)
    [mine] = result.aggregates[DEFAULT.id].findings()
    [second] = result.aggregates[SECOND.id].findings()
    assert (mine.count, mine.first_ms) == (2, T0_MS)
    assert (second.count, second.first_ms) == (1, T0_MS + 2 * HOUR)
    assert result.stats.kept == {DEFAULT.id: 2, SECOND.id: 1}


# --- each predicate sees only its own operations -----------------------------------------------


def test_each_predicate_judges_only_the_rows_of_its_operations():
    seen: dict[str, list[Any]] = {"default": [], "second": []}

    def spy(name: str, inner: Any) -> Any:
        def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
            seen[name] += rows["operation"].to_pylist()
            assert {len(v) for v in rows.values()} == {len(rows["operation"])}
            return inner(rows, ctx)

        return predicate

    cols = (*DEFAULT.predicate_columns, "operation")
    first = dataclasses.replace(
        DEFAULT, predicate_columns=cols, predicate=spy("default", DEFAULT.predicate)
    )
    second = dataclasses.replace(
        SECOND, predicate_columns=(*cols, "time_ms"), predicate=spy("second", _late)
    )
    active = (Active(first), Active(second, {"after": T0_MS + HOUR}))
    result = _scan(parquet_bytes(_events(), 2), active)
    assert sorted(seen["default"]) == ["PutImage"] * 3
    assert sorted(seen["second"]) == ["BatchGetImage"] + ["PutImage"] * 3
    assert result.stats.kept == {DEFAULT.id: 2, SECOND.id: 2}


def test_a_predicate_returning_nulls_keeps_nothing_and_a_bad_one_is_a_bug():
    def nulls(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
        return pa.nulls(len(rows["user"]), pa.bool_())

    silent = dataclasses.replace(SECOND, predicate=nulls)
    result = _scan(parquet_bytes(_events(), 2), (Active(silent),))
    assert result.aggregate.findings() == [] and result.stats.trusted == result.stats.matched

    def short(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
        return pa.array([True])

    broken = dataclasses.replace(SECOND, predicate=short)
    with pytest.raises(TypeError, match="test-second"):
        _scan(parquet_bytes(_events(), 2), (Active(broken),))


# --- the cost model over the union of operations -----------------------------------------------


class _Spy:
    """Wraps ``pq.ParquetFile``: records which columns of which row groups are read."""

    reads: ClassVar[list[tuple[str, int, tuple[str, ...]]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pf = _REAL_PARQUET_FILE(*args, **kwargs)

    def read_row_group(self, i: int, columns: list[str], **kw: Any) -> pa.Table:
        _Spy.reads.append(("op", i, tuple(columns)))
        return self._pf.read_row_group(i, columns=columns, **kw)

    def iter_batches(self, *, row_groups: list[int], columns: list[str], **kw: Any) -> Any:
        [i] = row_groups
        _Spy.reads.append(("batches", i, tuple(columns)))
        return self._pf.iter_batches(row_groups=row_groups, columns=columns, **kw)


_REAL_PARQUET_FILE = pq.ParquetFile


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, tuple[str, ...]]]:
    _Spy.reads = []
    monkeypatch.setattr(reader.pq, "ParquetFile", _Spy)
    return _Spy.reads


def _grouped(version: int) -> bytes:
    """Four row groups of two rows: trusted PutImage; GetObject; early untrusted PutImage;
    late untrusted BatchGetImage. Statistics name each group's only operation."""
    late = T0_MS + 3 * HOUR
    return parquet_bytes(
        [
            event(),
            event(),
            event(operation="GetObject"),
            event(operation="GetObject"),
            event(arn=ATTACKER, session_issuer=None),
            event(arn=ATTACKER, session_issuer=None),
            event(operation="BatchGetImage", arn=ATTACKER, session_issuer=None, time_ms=late),
            event(operation="BatchGetImage", arn=ATTACKER, session_issuer=None, time_ms=late),
        ],
        version,
        row_group_size=2,
    )


def _reads(reads: list[tuple[str, int, tuple[str, ...]]]) -> dict:
    """(kind, columns) -> row groups read with exactly those columns."""
    out: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for kind, i, cols in reads:
        out.setdefault((kind, cols), []).append(i)
    return out


@VERSIONS
def test_predicate_columns_only_for_watched_row_groups_detail_only_for_kept(version, spy):
    data = _grouped(version)
    r = reader.ObjectReader(io.BytesIO(data), "o", ALLOWLIST, None, BOTH)
    # The union of the predicate columns, in layout order; the rest only for kept rows.
    assert list(r.predicate_columns) == [
        "user",
        "session_issuer",
        "invoked_by",
        "src_domain",
        "time_ms",
    ]
    assert "time_ms" not in r.detail_columns and "request" in r.detail_columns
    assert "operation" not in r.detail_columns
    kept = list(r)
    assert sum(k.batch.num_rows for k in kept) == 4
    by = _reads(spy)
    op = (schema.OPERATION_PATH,)
    first = tuple(r.predicate_columns.values())
    rest = tuple(r.detail_columns.values())
    # Row group 1 (GetObject only) is ruled out by its statistics: nothing of it is read.
    assert by[("op", op)] == [0, 2, 3]
    assert by[("batches", first)] == [0, 2, 3]
    # Row group 0 is all trusted: no detail read for it.
    assert by[("batches", rest)] == [2, 3]
    assert set(by) == {("op", op), ("batches", first), ("batches", rest)}
    assert (r.stats.row_groups, r.stats.row_groups_read) == (4, 3)
    assert r.stats.kept == {DEFAULT.id: 2, SECOND.id: 2}
    assert (r.stats.matched, r.stats.trusted) == (6, 2)
    # Per batch, which detection keeps each row.
    masks = {
        d: pa.concat_arrays([k.masks[d] for k in kept]).to_pylist() for d in (DEFAULT.id, SECOND.id)
    }
    ops = pa.concat_arrays([k.batch.column("operation") for k in kept]).to_pylist()
    assert ops == ["PutImage"] * 2 + ["BatchGetImage"] * 2
    assert masks == {DEFAULT.id: [True, True, False, False], SECOND.id: [False, False, True, True]}


@VERSIONS
def test_the_default_alone_skips_row_groups_of_the_second_operation(version, spy):
    data = _grouped(version)
    r = reader.ObjectReader(io.BytesIO(data), "o", ALLOWLIST)
    assert list(r.predicate_columns) == ["user", "session_issuer", "invoked_by", "src_domain"]
    assert "time_ms" in r.detail_columns
    kept = list(r)
    assert sum(k.batch.num_rows for k in kept) == 2
    assert (r.stats.row_groups_read, r.stats.matched, r.stats.trusted) == (2, 4, 2)
    op_reads = [i for kind, i, _ in spy if kind == "op"]
    assert op_reads == [0, 2]


@VERSIONS
def test_a_row_group_of_only_the_second_operation_is_read(version, spy):
    late = T0_MS + 3 * HOUR
    only = [event(operation="BatchGetImage", arn=ATTACKER, session_issuer=None, time_ms=late)] * 3
    data = parquet_bytes(only, version)
    assert _scan(data, None).stats.row_groups_read == 0
    result = _scan(data)
    assert result.stats.row_groups_read == 1
    assert result.aggregates[DEFAULT.id].findings() == []
    [found] = result.aggregates[SECOND.id].findings()
    assert (found.count, found.field("operation")) == (3, "BatchGetImage")


@VERSIONS
def test_row_group_statistics_skip_when_neither_operation_is_present(version, spy):
    data = parquet_bytes([event(operation="GetObject"), event(operation="ListImages")], version)
    result = _scan(data)
    assert (result.stats.row_groups_read, result.stats.matched) == (0, 0)
    assert result.stats.kept == {DEFAULT.id: 0, SECOND.id: 0}
    assert spy == []  # not even the operation column
    assert all(a.findings() == [] for a in result.aggregates.values())


# --- request fields: the union, and as predicate columns ---------------------------------------


REGISTRY = dataclasses.replace(
    SECOND,
    id="00000000-test-0000-0000-000000000003",
    slug="test-registry",
    operations=("PutImage",),
    extra_samples=(),
    request_fields=(
        RequestField("registry", "registryId"),
        RequestField("repository", "repositoryName"),
    ),
    samples=(SampleSpec("registries", "registry", "Registries", "succeeded_registries"),),
    escalate_on="registries",
    # Judges a request field: the request column becomes a predicate column.
    predicate_columns=("repository",),
    predicate=lambda rows, ctx: pc.fill_null(pc.equal(rows["repository"], "payments/api"), False),
)


@VERSIONS
def test_request_fields_are_the_union_and_can_be_judged(version):
    events = [
        event(
            arn=ATTACKER,
            session_issuer=None,
            request_json=put_image_request("payments/api", "v1", "444455556666"),
        ),
        event(arn=ATTACKER, session_issuer=None, request_json=put_image_request("other", "v2")),
    ]
    data = parquet_bytes(events, version)
    active = (Active(DEFAULT), Active(REGISTRY))
    r = reader.ObjectReader(io.BytesIO(data), "o", ALLOWLIST, None, active)
    assert r.normal.names == [
        *schema.GENERIC.names,
        "repository",
        "image_tag",
        "image_digest",
        "registry",
    ]
    assert "request" in r.predicate_columns and "request" not in r.detail_columns
    result = _scan(data, active)
    [mine] = result.aggregates[DEFAULT.id].findings()
    assert mine.repositories.sorted() == ["other", "payments/api"]
    [theirs] = result.aggregates[REGISTRY.id].findings()
    rec = theirs.to_record()
    assert rec["registries"] == rec["succeeded_registries"] == ["444455556666"]
    assert "repositories" not in rec and "image_tags" not in rec
    assert list(rec)[-9:] == [
        "failed",
        "registries",
        "session_issuers",
        "principal_ids",
        "invoked_by",
        "event_ids",
        "source_objects",
        "succeeded_registries",
        "samples_truncated",
    ]
    assert result.stats.kept == {DEFAULT.id: 2, REGISTRY.id: 1}
    # The default's records are the same as when it runs alone.
    assert canonical(_scan(data, None).aggregate.findings()) == canonical([mine])


def test_conflicting_request_fields_and_unknown_columns_are_refused():
    clash = dataclasses.replace(REGISTRY, request_fields=(RequestField("repository", "name"),))
    data = parquet_bytes([event()], 2)
    with pytest.raises(ValueError, match="repository"):
        _scan(data, (Active(DEFAULT), Active(clash)))
    typo = dataclasses.replace(SECOND, predicate_columns=("usr",))
    with pytest.raises(ValueError, match="usr"):
        _scan(data, (Active(typo),))


def test_request_field_keys_are_matched_literally():
    fields = (RequestField("dotted", "a.b"), RequestField("plain", "aXb"))
    request = pa.array(['{"aXb": "no", "a.b": "yes"}', '{"aXb": "only"}'])
    out = schema.request_fields(request, schema.V2, fields)
    assert out["dotted"].to_pylist() == ["yes", None]
    assert out["plain"].to_pylist() == ["no", "only"]
    v1 = pa.array(
        [[("requestParameters.a.b", "flat")], [("requestParameters", '{"a.b": "whole"}')]],
        pa.map_(pa.string(), pa.string()),
    )
    assert schema.request_fields(v1, schema.V1, fields)["dotted"].to_pylist() == ["flat", "whole"]


def test_normal_schema_is_generic_plus_request_fields():
    assert schema.normal().names == schema.GENERIC.names
    fields = (RequestField("x", "X"), RequestField("y", "Y"), RequestField("x", "X"))
    normal = schema.normal(fields)
    assert normal.names == [*schema.GENERIC.names, "x", "y"]
    assert normal.field("x").type == pa.string()


# --- findings built from the spec --------------------------------------------------------------


def test_a_finding_without_a_detection_is_the_default_one():
    f = Finding(key=("PutImage",) + (None,) * 6, count=1)
    assert f.detection is DEFAULT
    assert f.samples == {}  # made on first use
    assert sample_names(f.detection) == (
        "repositories",
        "image_tags",
        "session_issuers",
        "principal_ids",
        "invoked_by",
        "user_types",
        "access_keys",
        "mfa",
        "event_ids",
        "objects",
        "recorded_accounts",
        "image_digests",
    )
    assert f.repositories is f.sample("repositories")
    assert list(f.samples) == ["repositories"]
    assert isinstance(f.objects, Sample) and f.event_ids.limit == 5 and f.objects.limit == 20
    with pytest.raises(AttributeError):
        _ = f.nothing_of_that_name
    with pytest.raises(KeyError):
        f.sample("nothing")
    rec = f.to_record()
    assert list(rec)[-14:] == [
        "succeeded",
        "failed",
        "repositories",
        "image_tags",
        "session_issuers",
        "principal_ids",
        "invoked_by",
        "event_ids",
        "source_objects",
        "succeeded_repositories",
        "succeeded_image_tags",
        "samples_truncated",
        "image_digests",  # the extra samples, after the contract's keys
        "succeeded_image_digests",
    ]


def test_a_finding_of_another_detection_has_its_samples_and_merges():
    f = Finding(key=("PutImage",) + (None,) * 6, count=1, detection=REGISTRY)
    assert sample_names(f.detection)[0] == "registries"
    f.registries.add(["1"], priority=True)
    g = f.copy()
    g.registries.add(["2"])
    g.merge(f)
    assert f.registries.sorted() == ["1"] and g.registries.sorted() == ["1", "2"]
    assert g.registries.succeeded() == ["1"] and g.count == 2
    rec = g.to_record()
    assert rec["registries"] == ["1", "2"] and rec["succeeded_registries"] == ["1"]
    assert rec["message"] == "Second detection: (no caller identity recorded)"
    assert Aggregate(REGISTRY).detection is REGISTRY and Aggregate().detection is DEFAULT


# --- the engine names nothing a detection owns ---------------------------------------------------


ENGINE = (
    "lake/reader.py",
    "lake/schema.py",
    "analysis/findings.py",
    "analysis/aggregate.py",
    "analysis/engine.py",
)


@pytest.mark.parametrize("module", ENGINE)
def test_engine_modules_name_no_operation_or_service_field(module):
    text = (Path(schema.__file__).parents[1] / module).read_text()
    for word in ("PutImage", "repositor", "imageTag", "image_tag", "DETECTION"):
        assert word not in text, word
    assert not re.search(r"\becr\b", text, re.IGNORECASE)
