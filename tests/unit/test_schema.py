"""Schema versions: detection, optional columns, compression, and which columns the allowlist
and the user key come from in each version."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from detector.core.allowlist import Allowlist
from detector.core.errors import AllowlistInvalid
from detector.detections._ecr import REQUEST_FIELDS
from detector.lake import schema
from detector.lake.reader import ObjectReader
from tests.lake import ACCOUNT, CI_ROLE, event, key_for
from tests.unit.helpers import drop_path, nested, parquet_bytes, scan, table_bytes

VERSIONS = pytest.mark.parametrize("version", [1, 2])
EXPECTED = {1: schema.SchemaVersion.V1, 2: schema.SchemaVersion.V2}
ATTACKER = f"arn:aws:iam::{ACCOUNT}:user/attacker"
STS = f"arn:aws:sts::{ACCOUNT}:assumed-role"

# Columns that mark a version, per version: dropping all of them leaves a tie.
MARKS = {
    1: ["actor.user.account_uid", "actor.user.uuid", "unmapped"],
    2: ["actor.user.account", "actor.user.uid_alt", "api.request.data", "unmapped"],
}


def bare_table(version: int) -> pa.Table:
    """A table of ``version`` with every version-marking column removed."""
    table = nested([event()], version)
    for path in MARKS[version]:
        table = drop_path(table, path)
    return table


# --- detect ----------------------------------------------------------------------------------


@VERSIONS
def test_detect_from_columns(version):
    table = nested([event()], version)
    assert schema.detect(table.schema).version is EXPECTED[version]


@VERSIONS
def test_detect_columns_win_over_a_contradicting_key(version):
    table = nested([event()], version)
    other = 3 - version
    assert schema.detect(table.schema, key_for(other)).version is EXPECTED[version]


@VERSIONS
def test_detect_tie_broken_by_key(version):
    bare = bare_table(version).schema
    assert schema.detect(bare, key_for(1)).version is schema.SchemaVersion.V1
    assert schema.detect(bare, key_for(2)).version is schema.SchemaVersion.V2
    # Without a key, the current version.
    assert schema.detect(bare).version is schema.SchemaVersion.V2
    assert schema.detect(bare, "some/other/key.parquet").version is schema.SchemaVersion.V2


@VERSIONS
def test_tie_broken_by_key_when_scanning(version):
    data = table_bytes(bare_table(version))
    v1 = ObjectReader(io.BytesIO(data), "o", Allowlist.of([]), key_for(1))
    v2 = ObjectReader(io.BytesIO(data), "o", Allowlist.of([]), key_for(2))
    assert v1.layout.version is schema.SchemaVersion.V1
    assert v2.layout.version is schema.SchemaVersion.V2
    # The name is used as the key when no key is given.
    by_name = ObjectReader(io.BytesIO(data), key_for(1), Allowlist.of([]))
    assert by_name.layout.version is schema.SchemaVersion.V1


@VERSIONS
def test_detect_none_without_api_operation(version):
    table = drop_path(nested([event()], version), "api.operation")
    assert schema.detect(table.schema) is None
    assert schema.detect(table.schema, key_for(version)) is None
    assert schema.detect(pa.schema([("a", pa.int64()), ("b", pa.string())])) is None


# --- optional columns ------------------------------------------------------------------------

OPTIONAL = [
    ("http_request", "user_agent"),
    ("src_endpoint.domain", "src_endpoint.domain"),
    ("src_endpoint", "src_ip"),
    ("cloud", "region"),
    ("actor.session", None),
    ("actor.invoked_by", None),
    ("metadata", None),
    ("status", None),
    ("request", None),
]


@VERSIONS
@pytest.mark.parametrize(("path", "null_key"), OPTIONAL, ids=[p for p, _ in OPTIONAL])
def test_missing_optional_column_scans_with_nulls(version, path, null_key):
    request = {1: "unmapped", 2: "api.request.data"}[version]
    real_path = request if path == "request" else path
    events = [
        event(src_domain="ecr.example", time_ms=1_000),
        event(operation="GetObject"),
        event(src_domain="ecr.example", time_ms=5_000, status="Failure"),
    ]
    table = drop_path(nested(events, version), real_path)
    result = scan(table_bytes(table))
    [finding] = result.aggregate.findings()
    rec = finding.to_record()
    assert rec["count"] == 2
    assert rec["firstTime"] == "1970-01-01T00:00:01"
    assert rec["lastTime"] == "1970-01-01T00:00:05"
    assert rec["user"] == "arn:aws:sts::111122223333:assumed-role/ci-deployer/build-1"
    if null_key is not None:
        assert rec[null_key] is None
    if path == "request":
        assert rec["repositories"] == [] and rec["image_tags"] == []
    else:
        assert rec["repositories"] == ["app"] and rec["image_tags"] == ["v1"]
    if path == "actor.session":
        assert rec["session_issuers"] == []
    if path == "metadata":
        assert rec["event_ids"] == []
    if path == "status":
        assert (rec["succeeded"], rec["failed"]) == (0, 0)
    else:
        assert (rec["succeeded"], rec["failed"]) == (1, 1)


@VERSIONS
def test_all_optional_columns_present_nothing_null(version):
    [finding] = scan(parquet_bytes([event(src_domain="ecr.example")], version)).aggregate.findings()
    rec = finding.to_record()
    keys = (
        "user",
        "actor.user.account.uid",
        "user_agent",
        "src_ip",
        "src_endpoint.domain",
        "region",
    )
    for k in keys:
        assert rec[k] is not None, k


@VERSIONS
def test_missing_request_column_keeps_version(version):
    path = {1: "unmapped", 2: "api.request.data"}[version]
    table = drop_path(nested([event()], version), path)
    assert schema.detect(table.schema).version is EXPECTED[version]


@VERSIONS
def test_missing_optional_column_dropped_allowlist_column_is_not_trusting(version):
    # Without actor.session, a role ARN on the allowlist cannot trust the session: it is reported.
    table = drop_path(nested([event()], version), "actor.session")
    result = scan(table_bytes(table), Allowlist.of([CI_ROLE]))
    assert [f.count for f in result.aggregate.findings()] == [1]
    # With it, the same allowlist trusts the session.
    result = scan(table_bytes(nested([event()], version)), Allowlist.of([CI_ROLE]))
    assert result.aggregate.findings() == []
    assert result.stats.trusted == 1


# --- compression -----------------------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize("compression", ["gzip", "zstd", "snappy", "none"])
def test_compressions_read_the_same(version, compression):
    events = [
        event(arn=f"arn:aws:iam::{ACCOUNT}:user/u{i % 3}", time_ms=1_000 * i) for i in range(10)
    ]
    events += [event(operation="GetObject")]
    result = scan(parquet_bytes(events, version, compression=compression))
    got = sorted((f.user, f.count, f.first_ms, f.last_ms) for f in result.aggregate.findings())
    assert got == [
        (f"arn:aws:iam::{ACCOUNT}:user/u0", 4, 0, 9_000),
        (f"arn:aws:iam::{ACCOUNT}:user/u1", 3, 1_000, 7_000),
        (f"arn:aws:iam::{ACCOUNT}:user/u2", 3, 2_000, 8_000),
    ]
    assert result.stats.rows == 11
    assert result.stats.matched == 10


# --- allowlist by caller, issuer, service ----------------------------------------------------


def _users(data: bytes, allowlist: Allowlist) -> list[str | None]:
    return sorted((f.user or "") for f in scan(data, allowlist).aggregate.findings())


@VERSIONS
def test_allowlist_by_caller_arn(version):
    dev = f"arn:aws:iam::{ACCOUNT}:user/dev1"
    data = parquet_bytes(
        [
            event(arn=dev, session_issuer=None, principal_id="AIDADEV1"),
            event(arn=ATTACKER, session_issuer=None, principal_id="AIDAATTACKER"),
        ],
        version,
    )
    assert _users(data, Allowlist.of([dev])) == [ATTACKER]
    assert _users(data, Allowlist.of([f"arn:aws:iam::{ACCOUNT}:user/dev?"])) == [ATTACKER]
    both = sorted([dev, ATTACKER])
    assert _users(data, Allowlist.of([f"arn:aws:iam::{ACCOUNT}:user/dev"])) == both
    assert _users(data, Allowlist.of([])) == both


@VERSIONS
def test_allowlist_role_arn_covers_its_sessions(version):
    ci = [event(arn=f"{STS}/ci-deployer/build-{i}", session_issuer=CI_ROLE) for i in range(3)]
    other_role = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer-admin"
    other = event(arn=f"{STS}/ci-deployer-admin/x", session_issuer=other_role)
    data = parquet_bytes([*ci, other], version)
    result = scan(data, Allowlist.of([CI_ROLE]))
    assert [f.user for f in result.aggregate.findings()] == [other["arn"]]
    assert result.stats.trusted == 3
    assert [f.session_issuers.sorted() for f in result.aggregate.findings()] == [[other_role]]
    # Without the role on the allowlist, every session is reported.
    assert len(scan(data, Allowlist.of([])).aggregate.findings()) == 4


@VERSIONS
def test_allowlist_by_invoking_aws_service(version):
    def svc(name: str) -> dict:
        return event(
            arn=None,
            principal_id=None,
            session_issuer=None,
            session_created_ms=None,
            invoked_by=name,
            src_ip=None,
            src_domain=name,
            user_agent=name,
        )

    data = parquet_bytes([svc("codebuild.amazonaws.com"), svc("ecs.amazonaws.com")], version)
    result = scan(data, Allowlist.of(["codebuild.amazonaws.com"]))
    [finding] = result.aggregate.findings()
    assert finding.user is None
    assert finding.field("src_domain") == "ecs.amazonaws.com"
    assert finding.invoked_by.sorted() == ["ecs.amazonaws.com"]
    assert finding.who() == "ecs.amazonaws.com"
    assert result.stats.trusted == 1
    trusted = Allowlist.of(["codebuild.amazonaws.com", "ecs.amazonaws.com"])
    assert len(scan(data, trusted).aggregate.findings()) == 0
    assert len(scan(data, Allowlist.of([])).aggregate.findings()) == 2


@VERSIONS
def test_user_key_is_the_caller_arn_not_the_principal_id(version):
    ev = event(arn=ATTACKER, principal_id="AIDAEXAMPLEATTACKER", session_issuer=None)
    data = parquet_bytes([ev], version)
    [finding] = scan(data).aggregate.findings()
    rec = finding.to_record()
    assert rec["user"] == ATTACKER
    assert rec["actor.user.account.uid"] == ACCOUNT
    assert rec["principal_ids"] == ["AIDAEXAMPLEATTACKER"]


@VERSIONS
def test_principal_id_on_the_allowlist_does_not_trust(version):
    # In v1 actor.user.uid is the principalId: it must not be what the allowlist is keyed on.
    ev = event(arn=ATTACKER, principal_id="AROAEXAMPLEID:build-1", session_issuer=None)
    data = parquet_bytes([ev], version)
    with pytest.raises(AllowlistInvalid):  # not an entry at all any more
        Allowlist.of(["AROAEXAMPLEID:build-1", "AROA*"])
    # Built directly (bypassing the entry rules), it still never matches a principal id.
    result = scan(data, Allowlist(("AROAEXAMPLEID:build-1", "AROA*")))
    assert [f.user for f in result.aggregate.findings()] == [ATTACKER]
    assert result.stats.trusted == 0
    # The caller ARN does.
    assert scan(data, Allowlist.of([ATTACKER])).aggregate.findings() == []


@VERSIONS
def test_account_is_read_from_the_version_specific_column(version):
    data = parquet_bytes([event(account="444455556666"), event(account=None)], version)
    accounts = sorted((f.field("account") or "") for f in scan(data).aggregate.findings())
    assert accounts == ["", "444455556666"]


@VERSIONS
def test_versions_agree(version):
    events = [
        event(arn=ATTACKER, session_issuer=None, time_ms=10_000),
        event(time_ms=20_000),
        event(
            arn=None, invoked_by="ecs.amazonaws.com", src_ip=None, src_domain="ecs.amazonaws.com"
        ),
    ]
    mine = {(f.key, f.count) for f in scan(parquet_bytes(events, version)).aggregate.findings()}
    other = {
        (f.key, f.count) for f in scan(parquet_bytes(events, 3 - version)).aggregate.findings()
    }
    assert mine == other
    assert len(mine) == 3


# --- request parameters: text of any Arrow type --------------------------------------------

V1_REQ = [("requestParameters.repositoryName", "app"), ("requestParameters.imageTag", "v1")]
V2_REQ = '{"repositoryName": "app", "imageTag": "v\\u00e9"}'
TEXT_TYPES = [
    pa.large_string(),
    pa.binary(),
    pa.large_binary(),
    pa.dictionary(pa.int8(), pa.string()),
    pa.string_view(),
    pa.binary_view(),
]


def _fields(request: pa.Array, layout: schema.Layout) -> tuple[list, list]:
    cut = schema.request_fields(request, layout, REQUEST_FIELDS)
    repo, tag = cut["repository"], cut["image_tag"]
    assert repo.type == tag.type == pa.string()
    return repo.to_pylist(), tag.to_pylist()


@pytest.mark.parametrize("typ", TEXT_TYPES, ids=str)
def test_v2_request_json_of_any_text_or_byte_type(typ):
    # Before: anything but string/large_string gave no repository and no tag, silently.
    request = pa.array([V2_REQ, None, "{}"]).cast(typ)
    assert _fields(request, schema.V2) == (["app", None, None], ["v\u00e9", None, None])


@pytest.mark.parametrize("typ", TEXT_TYPES, ids=str)
def test_v1_map_keys_and_values_of_any_text_or_byte_type(typ):
    plain = pa.array([V1_REQ, None, []], pa.map_(pa.string(), pa.string()))
    for cast in (pa.map_(typ, pa.string()), pa.map_(pa.string(), typ), pa.map_(typ, typ)):
        request = plain.cast(cast)
        assert _fields(request, schema.V1) == (["app", None, None], ["v1", None, None]), cast


def test_request_values_that_are_not_text_are_no_repository():
    ints = pa.array([[(1, 2)]], pa.map_(pa.int32(), pa.int32()))
    assert _fields(ints, schema.V1) == ([None], [None])
    numbers = pa.array(
        [[("requestParameters.repositoryName", 7)]], pa.map_(pa.string(), pa.int64())
    )
    assert _fields(numbers, schema.V1) == ([None], [None])
    assert _fields(pa.array([1, None], pa.int64()), schema.V2) == ([None, None], [None, None])
    assert _fields(pa.array(["{}"]), schema.V1) == ([None], [None])  # v1 request is a map


def test_invalid_utf8_in_a_v2_repository_is_named():
    request = pa.array([b'{"repositoryName": "a\xff", "imageTag": "t"}'], pa.binary())
    with pytest.raises(schema.RequestInvalid, match=r"api\.request\.data .*UTF-8"):
        schema.request_fields(request, schema.V2, REQUEST_FIELDS)
    # Bytes outside the values read are not judged: only the cut-out values must be text.
    request = pa.array([b'{"repositoryName": "a", "imageManifest": "\xff"}'], pa.binary())
    assert _fields(request, schema.V2) == (["a"], [None])


def test_v2_binary_request_column_is_read_when_scanning():
    table = nested([event()], 2)
    api = table.column("api").combine_chunks()
    request = api.field("request")
    names = [f.name for f in request.type]
    children = [request.field(i) for i in range(len(names))]
    children[names.index("data")] = children[names.index("data")].cast(pa.binary())
    new_request = pa.StructArray.from_arrays(children, names=names, mask=request.is_null())
    api_names = [f.name for f in api.type]
    api_children = [api.field(i) for i in range(len(api_names))]
    api_children[api_names.index("request")] = new_request
    new_api = pa.StructArray.from_arrays(api_children, names=api_names, mask=api.is_null())
    table = table.set_column(table.schema.get_field_index("api"), "api", new_api)
    [finding] = scan(table_bytes(table)).aggregate.findings()
    assert (finding.repositories.sorted(), finding.image_tags.sorted()) == (["app"], ["v1"])
