"""Single events as Security Lake objects, for detection authors (``ecr-upload-detector test``).

An event is given as flat fields (a detection's ``Example``: ``operation``, ``arn``,
``request`` …), as a raw CloudTrail record, or as an OCSF record of source version 1 or 2; it is
written as a Parquet object with the column nesting of that version (v1: ``actor.user.uuid``,
``unmapped`` map holding the request; v2: ``actor.user.uid``, ``api.request.data`` JSON), and
read back by the same reader the Lambda uses. Only the columns the reader reads are written.

The test suite builds its fixtures independently (``tests/lake.py``): this module is for
authors, so that an example or a captured record can be checked without this project's source tree.
"""

from __future__ import annotations

import io
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from detector.core.errors import DetectorError

ACCOUNT = "111122223333"
T0_MS = 1_795_168_800_000  # 2026-11-20T10:00:00Z
S = pa.string()

# The flat fields an event has, with what an example gets unless it says otherwise: a call by
# an assumed CI role that succeeded (of the detection's first operation: ``selftest``).
DEFAULTS: dict[str, Any] = {
    "time_ms": T0_MS,
    "operation": None,
    "service": None,
    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/build-1",
    "principal_id": "AROAEXAMPLEID:build-1",
    "account": ACCOUNT,
    "user_type": "AssumedRole",
    "user_name": None,
    "credential_uid": "ASIAEXAMPLEKEY",
    "session_issuer": f"arn:aws:iam::{ACCOUNT}:role/ci-deployer",
    "session_created_ms": None,
    "mfa": False,
    "invoked_by": None,
    "idp_name": None,
    "user_agent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64",
    "src_ip": "198.51.100.7",
    "src_domain": None,
    "src_uid": None,
    "region": "us-east-1",
    "status": "Success",
    "error_code": None,
    "error_message": None,
    "event_uid": None,
    "request_uid": None,
    "request_json": None,
    "response_json": None,
    "recipient_account": ACCOUNT,
    "resource_arn": None,
    "api_version": None,
}

# (dotted path, type, flat field) per version: the columns the reader reads.
_COMMON: list[tuple[str, pa.DataType, str]] = [
    ("api.operation", S, "operation"),
    ("api.service.name", S, "service"),
    ("api.response.error", S, "error_code"),
    ("actor.user.type", S, "user_type"),
    ("actor.user.credential_uid", S, "credential_uid"),
    ("actor.session.issuer", S, "session_issuer"),
    ("actor.invoked_by", S, "invoked_by"),
    ("src_endpoint.ip", S, "src_ip"),
    ("src_endpoint.domain", S, "src_domain"),
    ("http_request.user_agent", S, "user_agent"),
    ("cloud.region", S, "region"),
    ("status", S, "status"),
    ("metadata.uid", S, "event_uid"),
    ("time", pa.int64(), "time_ms"),
]
COLUMNS: dict[int, list[tuple[str, pa.DataType, str]]] = {
    1: [
        *_COMMON,
        ("actor.user.uuid", S, "arn"),
        ("actor.user.uid", S, "principal_id"),
        ("actor.user.account_uid", S, "account"),
        ("actor.session.mfa", pa.bool_(), "mfa"),
    ],
    2: [
        *_COMMON,
        ("actor.user.uid", S, "arn"),
        ("actor.user.uid_alt", S, "principal_id"),
        ("actor.user.account.uid", S, "account"),
        ("actor.session.is_mfa", pa.bool_(), "mfa"),
        ("api.request.data", S, "request_json"),
        ("api.response.data", S, "response_json"),
    ],
}
_UNMAPPED = pa.map_(S, S)


class RecordInvalid(DetectorError):
    """A record that is not a CloudTrail or OCSF event this module can write."""


def event(fields: Mapping[str, Any] | None = None, request: Any = None) -> dict[str, Any]:
    """Flat fields: ``DEFAULTS`` with ``fields`` changed; ``request`` (a dict) as the call's
    request parameters."""
    out = dict(DEFAULTS)
    unknown = set(fields or {}) - set(out)
    if unknown:
        raise RecordInvalid(f"unknown event fields: {sorted(unknown)}")
    out.update(fields or {})
    if request is not None:
        out["request_json"] = json.dumps(request)
    if out["event_uid"] is None:
        out["event_uid"] = f"evt-{abs(hash(json.dumps(out, sort_keys=True, default=str))):x}"
    return out


def from_cloudtrail(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flat fields of a raw CloudTrail record (``eventName``, ``userIdentity`` …)."""
    if not isinstance(record.get("eventName"), str):
        raise RecordInvalid("a CloudTrail record needs eventName")
    who = record.get("userIdentity") or {}
    session = who.get("sessionContext") or {}
    issuer = (session.get("sessionIssuer") or {}).get("arn")
    mfa = (session.get("attributes") or {}).get("mfaAuthenticated")
    source = record.get("sourceIPAddress")
    try:
        ipaddress.ip_address(source or "")
        ip, domain = source, None
    except ValueError:
        ip, domain = None, source
    error = record.get("errorCode")
    when = record.get("eventTime")
    try:
        time_ms = (
            int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() * 1000)
            if isinstance(when, str)
            else T0_MS
        )
    except ValueError as exc:
        raise RecordInvalid(f"eventTime {when!r} is not an ISO 8601 time") from exc
    request = record.get("requestParameters")
    response = record.get("responseElements")
    return event(
        {
            "time_ms": time_ms,
            "operation": record["eventName"],
            "service": record.get("eventSource"),
            "arn": who.get("arn"),
            "principal_id": who.get("principalId"),
            "account": who.get("accountId"),
            "user_type": who.get("type"),
            "user_name": who.get("userName"),
            "credential_uid": who.get("accessKeyId"),
            "session_issuer": issuer,
            "mfa": None if mfa is None else str(mfa).lower() == "true",
            "invoked_by": who.get("invokedBy"),
            "user_agent": record.get("userAgent"),
            "src_ip": ip,
            "src_domain": domain,
            "region": record.get("awsRegion"),
            "status": "Failure" if error else "Success",
            "error_code": error,
            "event_uid": record.get("eventID"),
            "request_json": None if request is None else json.dumps(request),
            "response_json": None if response is None else json.dumps(response),
        }
    )


def _get(record: Mapping[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def ocsf_version(record: Mapping[str, Any]) -> int:
    """1 or 2, from the fields only one version has."""
    if "unmapped" in record or _get(record, "actor.user.uuid") is not None:
        return 1
    return 2


def from_ocsf(record: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Flat fields of an OCSF record (either version, as JSON), and its version."""
    if not isinstance(_get(record, "api.operation"), str):
        raise RecordInvalid("an OCSF record needs api.operation")
    version = ocsf_version(record)
    fields: dict[str, Any] = {}
    for path, _, name in COLUMNS[version]:
        value = _get(record, path)
        if name in ("request_json", "response_json") and value is not None:
            value = value if isinstance(value, str) else json.dumps(value)
        fields[name] = value
    if version == 1:
        unmapped = record.get("unmapped") or {}
        request = {
            k.removeprefix("requestParameters."): v
            for k, v in (unmapped.items() if isinstance(unmapped, Mapping) else ())
            if k.startswith("requestParameters.")
        }
        whole = unmapped.get("requestParameters") if isinstance(unmapped, Mapping) else None
        if whole is not None:
            fields["request_json"] = whole if isinstance(whole, str) else json.dumps(whole)
        elif request:
            fields["_v1_flat"] = request
    fields = {k: v for k, v in fields.items() if k in DEFAULTS or k == "_v1_flat"}
    flat = fields.pop("_v1_flat", None)
    out = event({k: v for k, v in fields.items()})
    if flat is not None:
        out["_v1_flat"] = flat
    return out, version


def from_any(record: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Flat fields of a CloudTrail or OCSF record; the OCSF version, None for CloudTrail."""
    if not isinstance(record, Mapping):
        raise RecordInvalid("a record is a JSON object")
    try:
        if "eventName" in record:
            fields, version = from_cloudtrail(record), None
        elif "api" in record:
            fields, version = from_ocsf(record)
        else:
            raise RecordInvalid("neither a CloudTrail record (eventName) nor OCSF (api.operation)")
    except (AttributeError, TypeError, ValueError) as exc:  # a field of the wrong shape
        if isinstance(exc, RecordInvalid):
            raise
        raise RecordInvalid(f"a field has an unexpected shape: {exc}") from None
    for name, value in fields.items():
        wanted = int if name.endswith("_ms") else bool if name == "mfa" else str
        if value is not None and not isinstance(value, wanted) and name != "_v1_flat":
            raise RecordInvalid(f"{name} is {type(value).__name__}, expected {wanted.__name__}")
    return fields, version


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif value is not None:
        out[prefix] = value if isinstance(value, str) else json.dumps(value)


def _nest(paths: Iterable[tuple[str, pa.DataType]]) -> pa.Schema:
    tree: dict[str, Any] = {}
    for path, typ in paths:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = typ

    def build(node: dict[str, Any]) -> list[pa.Field]:
        return [
            pa.field(k, pa.struct(build(v)) if isinstance(v, dict) else v) for k, v in node.items()
        ]

    return pa.schema(build(tree))


def _record(fields: Mapping[str, Any], version: int, v1_request: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, _, name in COLUMNS[version]:
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = fields.get(name)
    if version == 1:
        unmapped: dict[str, str] = {}
        flat = fields.get("_v1_flat")
        raw = fields.get("request_json")
        if flat is not None:
            _flatten("requestParameters", flat, unmapped)
        elif raw is not None and v1_request == "json":
            unmapped["requestParameters"] = raw
        elif raw is not None:
            try:
                _flatten("requestParameters", json.loads(raw), unmapped)
            except ValueError:
                unmapped["requestParameters"] = raw
        if fields.get("response_json") is not None:
            unmapped["responseElements"] = fields["response_json"]
        out["unmapped"] = list(unmapped.items())
    return out


def parquet(
    events: Sequence[Mapping[str, Any]], version: int, v1_request: str = "flattened"
) -> bytes:
    """The events as one Parquet object of source ``version`` (1 or 2); v1's request either
    ``flattened`` (``requestParameters.<key>`` entries) or ``json`` (one whole value)."""
    paths = [(p, t) for p, t, _ in COLUMNS[version]]
    schema = _nest(paths)
    if version == 1:
        schema = schema.append(pa.field("unmapped", _UNMAPPED))
    rows = [_record(e, version, v1_request) for e in events]
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def key(version: int) -> str:
    """An object key in Security Lake's layout for ``version``."""
    return (
        f"aws/CLOUD_TRAIL_MGMT/{version}.0/region=us-east-1/accountId={ACCOUNT}/"
        f"eventDay=20261120/example.gz.parquet"
    )
