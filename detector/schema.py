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


_COMMON_DETAIL = {
    "time_ms": "time",
    "user_agent": "http_request.user_agent",
    "src_ip": "src_endpoint.ip",
    "src_domain": "src_endpoint.domain",
    "region": "cloud.region",
    "status": "status",
    "event_uid": "metadata.uid",
}

V1 = Layout(
    SchemaVersion.V1,
    trust={
        "user": "actor.user.uuid",
        "session_issuer": "actor.session.issuer",
        "invoked_by": "actor.invoked_by",
    },
    detail=_COMMON_DETAIL
    | {
        "principal_id": "actor.user.uid",
        "account": "actor.user.account_uid",
        "request": "unmapped",
    },
)
V2 = Layout(
    SchemaVersion.V2,
    trust={
        "user": "actor.user.uid",
        "session_issuer": "actor.session.issuer",
        "invoked_by": "actor.invoked_by",
    },
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


def _json_field(data: pa.Array, rx: str) -> pa.Array:
    # A regex over the JSON text, vectorised in Arrow, instead of json.loads per row: the request
    # carries the whole image manifest (KBs) and a push storm means many rows. The escaped
    # manifest cannot produce a false match: inside it every quote is preceded by a backslash.
    return pc.struct_field(pc.extract_regex(data, rx), [0])


def request_fields(request: pa.Array, layout: Layout) -> tuple[pa.Array, pa.Array]:
    """(repository, image tag) from the request column of either version."""
    if layout.version is SchemaVersion.V1:
        if not pa.types.is_map(request.type):
            n = len(request)
            return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
        repo = pc.map_lookup(request, "requestParameters.repositoryName", "first")
        tag = pc.map_lookup(request, "requestParameters.imageTag", "first")
        return repo.cast(pa.string()), tag.cast(pa.string())
    if not (pa.types.is_string(request.type) or pa.types.is_large_string(request.type)):
        n = len(request)
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    return _unescape(_json_field(request, _REPO_RX)), _unescape(_json_field(request, _TAG_RX))


def _unescape(arr: pa.Array) -> pa.Array:
    """Decode JSON escapes (``\\u00e9``) in values cut out of request JSON text (v2 only)."""
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
