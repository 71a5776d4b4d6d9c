"""The two Security Lake CloudTrail schema versions, mapped to one internal shape.

Nothing outside this module knows which OCSF version an object uses. The internal shape is a
flat Arrow table with the columns of ``NORMAL``. Columns are addressed by name (never by
position); optional columns missing from an object read as nulls.

| internal       | v1 (OCSF 1.0.0-rc.2)       | v2 (OCSF 1.1.0)            |
|----------------|----------------------------|----------------------------|
| user (ARN)     | actor.user.uuid            | actor.user.uid             |
| principal_id   | actor.user.uid             | actor.user.uid_alt         |
| account        | actor.user.account_uid     | actor.user.account.uid     |
| request        | unmapped[requestParameters.*] | api.request.data (JSON) |
|                | or unmapped[requestParameters] (JSON) |                 |
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import pyarrow as pa
import pyarrow.compute as pc

OPERATION_PATH = "api.operation"

# Internal columns, in order. Grouping keys first (as the Splunk search's `by` clause, plus the
# source domain so AWS-service callers are not lumped together under a null IP).
GROUP_KEYS: tuple[str, ...] = (
    "operation",
    "user",
    "account",
    "user_agent",
    "src_ip",
    "src_domain",
    "region",
)
NORMAL = pa.schema(
    [(k, pa.string()) for k in GROUP_KEYS]
    + [
        ("time_ms", pa.int64()),
        ("principal_id", pa.string()),
        ("session_issuer", pa.string()),
        ("invoked_by", pa.string()),
        ("status", pa.string()),
        ("event_uid", pa.string()),
        ("repository", pa.string()),
        ("image_tag", pa.string()),
    ]
)


class SchemaVersion(Enum):
    V1 = "1.0"  # OCSF 1.0.0-rc.2
    V2 = "2.0"  # OCSF 1.1.0


@dataclass(frozen=True)
class Layout:
    """Where each internal column lives in one schema version."""

    version: SchemaVersion
    # Decide whether a PutImage row is trusted: read for every row group holding a PutImage.
    trust: dict[str, str]
    # Describe an untrusted row (grouping keys, times, request JSON, ids): read only for row
    # groups where an untrusted PutImage remains. In an account where CI pushes, most never are.
    detail: dict[str, str]
    # Values unique per row: reading them dictionary-encoded would cost more than it saves.
    unique: frozenset[str] = frozenset({"event_uid", "request"})

    @property
    def columns(self) -> dict[str, str]:
        return {"operation": OPERATION_PATH} | self.trust | self.detail


# Besides the caller ARN: the source domain is a trust column because a push AWS makes itself
# (replication, pull-through cache) carries no caller identity, only ``src_endpoint.domain``
# (e.g. ``ecr.amazonaws.com``), and may be allowlisted by it. It is carried along to the finding.
_COMMON_TRUST = {
    "session_issuer": "actor.session.issuer",
    "invoked_by": "actor.invoked_by",
    "src_domain": "src_endpoint.domain",
}
_COMMON_DETAIL = {
    "time_ms": "time",
    "user_agent": "http_request.user_agent",
    "src_ip": "src_endpoint.ip",
    "region": "cloud.region",
    "status": "status",
    "event_uid": "metadata.uid",
}

V1 = Layout(
    SchemaVersion.V1,
    trust={"user": "actor.user.uuid"} | _COMMON_TRUST,
    detail=_COMMON_DETAIL
    | {
        "principal_id": "actor.user.uid",
        "account": "actor.user.account_uid",
        "request": "unmapped",
    },
)
V2 = Layout(
    SchemaVersion.V2,
    trust={"user": "actor.user.uid"} | _COMMON_TRUST,
    detail=_COMMON_DETAIL
    | {
        "principal_id": "actor.user.uid_alt",
        "account": "actor.user.account.uid",
        "request": "api.request.data",
    },
)

REQUIRED = ("operation", "time_ms")


def leaf_paths(schema: pa.Schema) -> dict[str, pa.DataType]:
    """Dotted path → type for every field, nested or not (a struct's path is listed too)."""
    out: dict[str, pa.DataType] = {}

    def walk(prefix: str, typ: pa.DataType) -> None:
        out[prefix] = typ
        if pa.types.is_struct(typ):
            for f in typ:
                walk(f"{prefix}.{f.name}", f.type)

    for f in schema:
        walk(f.name, f.type)
    return out


def detect(schema: pa.Schema, key: str | None = None) -> Layout | None:
    """The layout of an object, from its columns; the key's ``/1.0/`` or ``/2.0/`` breaks ties.

    Returns None when the object is not a CloudTrail OCSF table (no ``api.operation``).
    """
    paths = leaf_paths(schema)
    if OPERATION_PATH not in paths:
        return None
    v2_marks = sum(
        p in paths for p in ("actor.user.account.uid", "actor.user.uid_alt", "api.request.data")
    )
    v1_marks = sum(p in paths for p in ("actor.user.account_uid", "actor.user.uuid", "unmapped"))
    if v2_marks != v1_marks:
        return V2 if v2_marks > v1_marks else V1
    if key is not None and "/1.0/" in key:
        return V1
    # With nothing else to go on, the current version.
    return V2


def present(layout: Layout, schema: pa.Schema, which: Sequence[str]) -> dict[str, str]:
    """The subset of a layout's columns ``which`` that exist in ``schema``."""
    paths = leaf_paths(schema)
    cols = layout.columns
    return {name: cols[name] for name in which if cols[name] in paths}


def column(batch: pa.RecordBatch, path: str) -> pa.Array:
    """Read one dotted path out of a batch whose top-level columns are (pruned) structs.

    ``pc.struct_field`` propagates a null parent, unlike ``StructArray.field``.
    """
    top, *rest = path.split(".")
    arr = batch.column(top)
    if rest:
        arr = pc.struct_field(arr, rest)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


_REPO_RX = r'"repositoryName"\s*:\s*"(?P<v>(?:[^"\\]|\\.)*)"'
_TAG_RX = r'"imageTag"\s*:\s*"(?P<v>(?:[^"\\]|\\.)*)"'


class RequestInvalid(ValueError):
    """A request value that cannot be text (invalid UTF-8): the reader names the object."""


def _text(values: pa.Array, what: str) -> pa.Array:
    """``values`` as ``string``, whatever text or byte type the writer chose.

    Parquet writers differ: ``large_string``, ``binary`` (a BYTE_ARRAY without the UTF8
    annotation), dictionary-encoded or view types all hold the same text. Invalid UTF-8 is an
    error naming ``what``, as a non-UTF-8 value in any other column is (``v2`` included).
    Anything that is neither text nor bytes is not a repository or tag: null.
    """
    typ = values.type
    if pa.types.is_dictionary(typ):
        values = values.dictionary_decode()
        typ = values.type
    if not (_text_or_bytes(typ) or pa.types.is_string_view(typ) or pa.types.is_binary_view(typ)):
        return pa.nulls(len(values), pa.string())
    try:
        out = values if pa.types.is_string(typ) else values.cast(pa.string())
        # A ``string`` column straight from Parquet is not UTF-8-checked by the reader.
        out.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise RequestInvalid(f"{what} is not valid UTF-8 text ({typ})") from exc
    return out


def _text_or_bytes(typ: pa.DataType) -> bool:
    """(Large) string or (large) binary: the types the regex and map kernels take."""
    return bool(
        pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
    )


def _searchable(data: pa.Array) -> pa.Array:
    """``data`` in a type the regex kernels take, without decoding bytes as text."""
    typ = data.type
    if pa.types.is_dictionary(typ):
        data = data.dictionary_decode()
        typ = data.type
    if pa.types.is_string_view(typ):
        return data.cast(pa.string())
    if pa.types.is_binary_view(typ):
        return data.cast(pa.binary())
    return data


def _json_field(data: pa.Array, rx: str, what: str) -> pa.Array:
    """The string value of one key, cut out of JSON text (or bytes), JSON escapes decoded."""
    data = _searchable(data)
    typ = data.type
    if not _text_or_bytes(typ):
        return pa.nulls(len(data), pa.string())
    # A regex over the JSON text, vectorised in Arrow, instead of json.loads per row: the request
    # carries the whole image manifest (KBs) and a push storm means many rows. The escaped
    # manifest cannot produce a false match: inside it every quote is preceded by a backslash.
    # Bytes are searched as bytes, so only the value cut out has to be valid UTF-8.
    return _unescape(_text(pc.struct_field(pc.extract_regex(data, rx), [0]), what))


def _map_value(request: pa.Array, key: str) -> pa.Array:
    """``request[key]`` per row (first match, null if absent) for a map with text/byte keys.

    ``map_lookup`` wants a query key of exactly the map's key type; a dictionary key type is
    decoded first (no kernel looks up dictionary keys).
    """
    typ = request.type
    key_type = typ.key_type
    if pa.types.is_dictionary(key_type):
        key_type = key_type.value_type
        request = request.cast(pa.map_(key_type, typ.item_field))
    if pa.types.is_string_view(key_type) or pa.types.is_binary_view(key_type):
        key_type = pa.string() if pa.types.is_string_view(key_type) else pa.binary()
        request = request.cast(pa.map_(key_type, typ.item_field))
    if not _text_or_bytes(key_type):
        return pa.nulls(len(request), pa.string())
    return pc.map_lookup(request, pa.scalar(key, key_type), "first")


# v1 request parameters come in two layouts, possibly mixed within one object:
# - flattened, one map entry per leaf (AWS's published sample objects, and the record in
#   aws-samples/amazon-security-lake-custom-data): ``requestParameters.repositoryName`` → ``app``;
# - one whole JSON value (what AWS's v1 query examples read): ``requestParameters`` →
#   ``{"repositoryName": "app", "imageTag": "v1", …}``.
# A flattened value wins where both are present, as the v1 Athena statement's coalesce does.
_V1_FLAT = {"repository": "requestParameters.repositoryName", "tag": "requestParameters.imageTag"}
_V1_WHOLE = "requestParameters"


def request_fields(request: pa.Array, layout: Layout) -> tuple[pa.Array, pa.Array]:
    """(repository, image tag) from the request column of either version, as ``string``.

    Raises ``RequestInvalid`` for a repository or tag that is not valid UTF-8.
    """
    n = len(request)
    if layout.version is SchemaVersion.V1:
        if not pa.types.is_map(request.type):
            return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
        flat_repo, flat_tag = (
            _text(_map_value(request, key), f"unmapped['{key}']") for key in _V1_FLAT.values()
        )
        whole = _map_value(request, _V1_WHOLE)
        if whole.null_count == n:  # the flattened layout only: no regex work
            return flat_repo, flat_tag
        what = f"unmapped['{_V1_WHOLE}']"
        return (
            pc.coalesce(flat_repo, _json_field(whole, _REPO_RX, what)),
            pc.coalesce(flat_tag, _json_field(whole, _TAG_RX, what)),
        )
    what = "api.request.data"
    return _json_field(request, _REPO_RX, what), _json_field(request, _TAG_RX, what)


def _unescape(arr: pa.Array) -> pa.Array:
    """Decode JSON escapes (``\\u00e9``) in values cut out of request JSON text."""
    # Repository names and tags almost never hold an escape: stay vectorised unless one does.
    if not pc.any(pc.match_substring(arr, "\\")).as_py():
        return arr

    def one(v: str | None) -> str | None:
        if v is None or "\\" not in v:
            return v
        try:
            decoded = json.loads(f'"{v}"')
            decoded.encode("utf-8")  # a lone surrogate ("\\ud800") cannot go into Arrow
        except (ValueError, AttributeError):
            return v
        return decoded if isinstance(decoded, str) else v

    return pa.array([one(v) for v in arr.to_pylist()], pa.string())
