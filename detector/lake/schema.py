"""The two Security Lake CloudTrail schema versions, mapped to one internal shape.

Nothing outside this module knows which OCSF version an object uses. The internal shape is a
flat Arrow table with the columns of ``normal(fields)``: ``GENERIC`` and the request fields the
running detections cut out. Columns are addressed by name (never by position); optional
columns missing from an object read as nulls.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.spec import RequestField

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
# The columns every normalised batch has, whatever the detections: the grouping keys, then
# what describes a call. A detection's request fields follow (``normal``).
GENERIC = pa.schema(
    [(k, pa.string()) for k in GROUP_KEYS]
    + [
        ("time_ms", pa.int64()),
        ("principal_id", pa.string()),
        ("user_type", pa.string()),
        ("session_issuer", pa.string()),
        ("invoked_by", pa.string()),
        ("status", pa.string()),
        ("event_uid", pa.string()),
        # Who exactly, and why a call failed: what a responder acts on (the key to disable,
        # whether MFA was used, AccessDenied versus a pipeline's retry).
        ("credential_uid", pa.string()),
        ("mfa", pa.string()),
        ("error_code", pa.string()),
    ]
)


def normal(fields: Sequence[RequestField] = ()) -> pa.Schema:
    """The normalised shape for detections cutting ``fields`` out of the request: ``GENERIC``
    and one ``string`` column per request field, in the order given (each column once)."""
    names = set(GENERIC.names)
    extra = []
    for f in fields:
        if f.column in names:
            continue
        names.add(f.column)
        extra.append(pa.field(f.column, pa.string()))
    return pa.schema(list(GENERIC) + extra)


class SchemaVersion(Enum):
    V1 = "1.0"  # OCSF 1.0.0-rc.2
    V2 = "2.0"  # OCSF 1.1.0


@dataclass(frozen=True)
class Layout:
    """Where each internal column lives in one schema version.

    Which columns a read needs first (the detections' predicate columns, read for every row
    group holding a watched operation) and which only for reported rows is decided by the
    reader from the detections it runs, not here.
    """

    version: SchemaVersion
    # internal name -> dotted path, ``operation`` first; the order columns are read in.
    columns: dict[str, str]
    # Values unique per row: reading them dictionary-encoded would cost more than it saves.
    unique: frozenset[str] = frozenset({"event_uid", "request", "response"})


# ``src_domain``: a call AWS makes itself (replication, a cache filling) carries no caller
# identity, only ``src_endpoint.domain``, and may be judged by it.
_COMMON_IDENTITY = {
    "user_type": "actor.user.type",  # CloudTrail's userIdentity.type (AssumedRole, IAMUser, ...)
    "session_issuer": "actor.session.issuer",
    "invoked_by": "actor.invoked_by",
    "src_domain": "src_endpoint.domain",
}
_COMMON = {
    "credential_uid": "actor.user.credential_uid",
    "error_code": "api.response.error",
    "time_ms": "time",
    "user_agent": "http_request.user_agent",
    "src_ip": "src_endpoint.ip",
    "region": "cloud.region",
    "status": "status",
    "event_uid": "metadata.uid",
}

V1 = Layout(
    SchemaVersion.V1,
    columns={"operation": OPERATION_PATH, "user": "actor.user.uuid"}
    | _COMMON_IDENTITY
    | _COMMON
    | {
        "principal_id": "actor.user.uid",
        "account": "actor.user.account_uid",
        "mfa": "actor.session.mfa",
        "request": "unmapped",
    },
)
V2 = Layout(
    SchemaVersion.V2,
    columns={"operation": OPERATION_PATH, "user": "actor.user.uid"}
    | _COMMON_IDENTITY
    | _COMMON
    | {
        "principal_id": "actor.user.uid_alt",
        "account": "actor.user.account.uid",
        "mfa": "actor.session.is_mfa",
        "request": "api.request.data",
        # v1 keeps the response in ``unmapped`` too, beside the request.
        "response": "api.response.data",
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


def _value_rx(key: str) -> str:
    """A regex cutting the string value of the top-level key ``key`` out of JSON text.

    The key is matched as JSON writes it (escapes included), every character literally.
    """
    written = json.dumps(key, ensure_ascii=False)[1:-1]
    return '"' + re.escape(written) + r'"\s*:\s*"(?P<v>(?:[^"\\]|\\.)*)"'


class RequestInvalid(ValueError):
    """A request value that cannot be text (invalid UTF-8): the reader names the object."""


def _text(values: pa.Array, what: str) -> pa.Array:
    """``values`` as ``string``, whatever text or byte type the writer chose.

    Parquet writers differ: ``large_string``, ``binary`` (a BYTE_ARRAY without the UTF8
    annotation), dictionary-encoded or view types all hold the same text. Invalid UTF-8 is an
    error naming ``what``, as a non-UTF-8 value in any other column is (``v2`` included).
    Anything that is neither text nor bytes is no request value: null.
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
    # A regex over the JSON text, vectorised in Arrow, instead of json.loads per row: a request
    # can carry large documents as string values (KBs) and a burst of calls means many rows.
    # Such an escaped document cannot produce a false match: inside it every quote is preceded
    # by a backslash.
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
#   aws-samples/amazon-security-lake-custom-data): ``requestParameters.<key>`` -> value;
# - one whole JSON value (what AWS's v1 query examples read): ``requestParameters`` ->
#   ``{"<key>": "value", ...}``.
# A flattened value wins where both are present, as the v1 Athena statement's coalesce does.


def request_fields(
    request: pa.Array | None,
    layout: Layout,
    fields: Sequence[RequestField],
    response: pa.Array | None = None,
) -> dict[str, pa.Array]:
    """Each field's column -> its values cut out of the request (or, for a field whose
    ``source`` is ``response``, the response) of either version, as ``string`` (null where
    there is no such key, or no string value for it). v1 keeps both in ``request`` (the
    ``unmapped`` map); v2's response is its own column.

    Raises ``RequestInvalid`` for a value that is not valid UTF-8.
    """
    if not fields:
        return {}
    out: dict[str, pa.Array] = {}
    for source, prefix in (("request", "requestParameters"), ("response", "responseElements")):
        chosen = [f for f in fields if f.source == source]
        if not chosen:
            continue
        data = request if layout.version is SchemaVersion.V1 or source == "request" else response
        if data is None:
            # Not read in this pass (the request may be a predicate column, the response a
            # detail one): its fields come from the pass that reads it, or stay null.
            continue
        if layout.version is SchemaVersion.V1:
            out |= _v1_fields(data, chosen, prefix)
        else:
            what = "api.request.data" if source == "request" else "api.response.data"
            out |= {f.column: _json_field(data, _value_rx(f.key), what) for f in chosen}
    return out


def _v1_fields(
    unmapped: pa.Array, fields: Sequence[RequestField], prefix: str
) -> dict[str, pa.Array]:
    n = len(unmapped)
    if not pa.types.is_map(unmapped.type):
        return {f.column: pa.nulls(n, pa.string()) for f in fields}
    flat = {
        f.column: _text(
            _map_value(unmapped, f"{prefix}.{f.path or f.key}"),
            f"unmapped['{prefix}.{f.path or f.key}']",
        )
        for f in fields
    }
    whole = _map_value(unmapped, prefix)
    if whole.null_count == n:  # the flattened layout only: no regex work
        return flat
    what = f"unmapped['{prefix}']"
    return {
        f.column: pc.coalesce(flat[f.column], _json_field(whole, _value_rx(f.key), what))
        for f in fields
    }


def _unescape(arr: pa.Array) -> pa.Array:
    """Decode JSON escapes (``\\u00e9``) in values cut out of request JSON text."""
    # Values cut out (names, tags, ids) almost never hold an escape: stay vectorised unless
    # one does.
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
