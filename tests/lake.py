"""Builds Amazon Security Lake CloudTrail-management Parquet objects for tests, demo and benchmarks.

Both source versions are produced with the real column nesting:
- v1: OCSF 1.0.0-rc.2 (``aws/CLOUD_TRAIL_MGMT/1.0/…``): caller ARN in ``actor.user.uuid``,
  principalId in ``actor.user.uid``, account in ``actor.user.account_uid``, request
  parameters in the ``unmapped`` map, in either of the two layouts real v1 data has
  (``v1_request``): flattened (``requestParameters.repositoryName`` → ``app``, as in AWS's
  published sample objects) or whole JSON values (``requestParameters`` → ``{"repositoryName":
  …}``, as AWS's own v1 query examples read ``unmapped['responseElements']``).
  ``aws_v1_schema=True`` also writes the physical schema of AWS's published v1 objects
  (aws-samples/amazon-security-lake-ocsf-validation): list elements named ``array``, the struct
  fields AWS marks required written non-null, ``int32`` ``type_uid``, non-null map values.
- v2: OCSF 1.1.0 (``aws/CLOUD_TRAIL_MGMT/2.0/…``): caller ARN in ``actor.user.uid``, principalId
  in ``actor.user.uid_alt``, account in ``actor.user.account.uid``, request parameters as a JSON
  string in ``api.request.data``.

Events are described by a flat dict of CloudTrail-like fields (see ``FIELDS``); ``nest`` turns
columns of those fields into the nested table of one version. Tests build a few events with
``event(...)``; the benchmark builds millions column-wise with ``synthetic_columns``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

S = pa.string()

# Flat, CloudTrail-like description of one event, and the Arrow type of each field.
FIELDS: dict[str, pa.DataType] = {
    "time_ms": pa.int64(),
    "operation": S,
    "service": S,
    "api_version": S,
    "arn": S,
    "principal_id": S,
    "account": S,
    "user_type": S,
    "user_name": S,
    "credential_uid": S,
    "session_issuer": S,
    "session_created_ms": pa.int64(),
    "mfa": pa.bool_(),
    "invoked_by": S,
    "idp_name": S,
    "user_agent": S,
    "src_ip": S,
    "src_domain": S,
    "src_uid": S,
    "region": S,
    "status": S,
    "error_code": S,
    "error_message": S,
    "event_uid": S,
    "request_uid": S,
    "request_json": S,
    "response_json": S,
    "recipient_account": S,
    "resource_arn": S,
}

ACCOUNT = "111122223333"
CI_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"
T0_MS = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp() * 1000)

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:" + "b" * 64,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 32654 + i,
                "digest": "sha256:" + f"{i:064x}",
            }
            for i in range(12)
        ],
    }
)


def put_image_request(repository: str, tag: str | None, registry: str = ACCOUNT) -> str:
    """The requestParameters of a PutImage call, as CloudTrail records them."""
    body: dict[str, Any] = {"repositoryName": repository, "registryId": registry}
    if tag is not None:
        body["imageTag"] = tag
    body["imageManifest"] = MANIFEST
    return json.dumps(body)


def event(**overrides: Any) -> dict[str, Any]:
    """One PutImage event by an assumed CI role; keyword arguments override fields."""
    ev: dict[str, Any] = {
        "time_ms": T0_MS,
        "operation": "PutImage",
        "service": "ecr.amazonaws.com",
        "api_version": None,
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/build-1",
        "principal_id": "AROAEXAMPLEID:build-1",
        "account": ACCOUNT,
        "user_type": "AssumedRole",
        "user_name": None,
        "credential_uid": "ASIAEXAMPLEKEY",
        "session_issuer": CI_ROLE,
        "session_created_ms": T0_MS - 60_000,
        "mfa": False,
        "invoked_by": None,
        "idp_name": None,
        "user_agent": "docker/24.0.7 go/go1.21.3 git-commit/311b9ff os/linux arch/amd64",
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
        "response_json": json.dumps({"image": {"imageId": {"imageDigest": "sha256:" + "a" * 64}}}),
        "recipient_account": ACCOUNT,
        "resource_arn": None,
    }
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown event fields: {sorted(unknown)}")
    ev.update(overrides)
    if "request_json" not in overrides and ev["operation"] == "PutImage":
        ev["request_json"] = put_image_request("app", "v1")
    if ev["event_uid"] is None:
        ev["event_uid"] = f"evt-{random.Random(repr(sorted(ev.items()))).getrandbits(64):016x}"
    if ev["request_uid"] is None:
        ev["request_uid"] = ev["event_uid"].replace("evt-", "req-")
    return ev


def columns_from_events(events: Sequence[Mapping[str, Any]]) -> dict[str, pa.Array]:
    """Flat columns from a list of event dicts (see ``event``)."""
    return {name: pa.array([e.get(name) for e in events], type=typ) for name, typ in FIELDS.items()}


def _struct(fields: dict[str, pa.Array], mask: pa.Array | None = None) -> pa.StructArray:
    return pa.StructArray.from_arrays(list(fields.values()), names=list(fields), mask=mask)


def _all_null(arrays: Iterable[pa.Array]) -> pa.Array:
    """True where every array is null: the parent struct is then written as null, as Security
    Lake does for e.g. ``actor.session`` of an IAM user."""
    out: pa.Array | None = None
    for a in arrays:
        isn = pc.is_null(a)
        out = isn if out is None else pc.and_(out, isn)
    assert out is not None
    return out


def _const(value: Any, n: int, typ: pa.DataType = S) -> pa.Array:
    return pa.array([value] * n, type=typ) if n < 1024 else pa.repeat(pa.scalar(value, typ), n)


# How v1 puts request parameters and response elements into ``unmapped`` (see the docstring).
V1_REQUEST_LAYOUTS = ("flattened", "json")


def _flatten_request(
    request_json: str | None, response_json: str | None, layout: str = "flattened"
) -> list[tuple[str, str]]:
    """v1's ``unmapped`` entries for one event's request parameters and response elements."""
    items: list[tuple[str, str]] = []
    for prefix, raw in (("requestParameters", request_json), ("responseElements", response_json)):
        if raw is None:
            continue
        if layout == "json":
            items.append((prefix, raw))
            continue
        try:
            body = json.loads(raw)
        except ValueError:
            items.append((prefix, raw))
            continue
        _flatten_into(prefix, body, items)
    return items


def _flatten_into(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(f"{prefix}.{k}", v, out)
    elif isinstance(value, list):
        out.append((prefix, json.dumps(value)))
    elif value is not None:
        out.append((prefix, value if isinstance(value, str) else json.dumps(value)))


def nest(
    cols: Mapping[str, pa.Array],
    version: int,
    *,
    v1_request: str = "flattened",
    aws_v1_schema: bool = False,
) -> pa.Table:
    """The Security Lake table of ``version`` (1 or 2) holding the flat event columns ``cols``.

    ``v1_request`` and ``aws_v1_schema`` choose among the layouts of real v1 objects (see the
    module docstring); they must keep their defaults for version 2.
    """
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, not {version!r}")
    if v1_request not in V1_REQUEST_LAYOUTS:
        raise ValueError(f"v1_request must be one of {V1_REQUEST_LAYOUTS}, not {v1_request!r}")
    if version == 2 and (v1_request != "flattened" or aws_v1_schema):
        raise ValueError("v1_request and aws_v1_schema describe version 1 objects only")
    c = dict(cols)
    n = len(c["time_ms"])
    for name, typ in FIELDS.items():
        if name not in c:
            c[name] = pa.nulls(n, typ)
    ok = pc.equal(pc.utf8_lower(c["status"]), "success")
    status_id = pc.if_else(ok, 1, 2).cast(pa.int32())
    product = _struct(
        {
            "version": _const("1.09", n),
            "name": _const("CloudTrail", n),
            "vendor_name": _const("AWS", n),
            "feature": _struct({"name": _const("Management", n)}),
        }
    )
    ocsf_version = "1.0.0-rc.2" if version == 1 else "1.1.0"
    meta_fields: dict[str, pa.Array] = {"product": product}
    if version == 2:
        meta_fields["event_code"] = _const(None, n)
    meta_fields["uid"] = c["event_uid"]
    meta_fields["profiles"] = (
        pa.array([["cloud", "datetime"]] * n, pa.list_(S))
        if n < 1024
        else (pa.repeat(pa.scalar(["cloud", "datetime"], pa.list_(S)), n))
    )
    meta_fields["version"] = _const(ocsf_version, n)
    response: dict[str, pa.Array] = {"error": c["error_code"], "message": c["error_message"]}
    request: dict[str, pa.Array] = {"uid": c["request_uid"]}
    if version == 2:
        response["data"] = c["response_json"]
        request = {"data": c["request_json"], "uid": c["request_uid"]}
    api = _struct(
        {
            "response": _struct(response),
            "operation": c["operation"],
            "version": c["api_version"],
            "service": _struct({"name": c["service"]}),
            "request": _struct(request),
        }
    )
    if version == 1:
        user = {
            "type": c["user_type"],
            "name": c["user_name"],
            "uid": c["principal_id"],
            "uuid": c["arn"],
            "account_uid": c["account"],
            "credential_uid": c["credential_uid"],
        }
        session_fields = {
            "created_time": c["session_created_ms"],
            "mfa": c["mfa"],
            "issuer": c["session_issuer"],
        }
        resource = _struct(
            {
                "uid": c["resource_arn"],
                "account_uid": c["recipient_account"],
                "type": _const(None, n),
            }
        )
    else:
        user = {
            "type": c["user_type"],
            "name": c["user_name"],
            "uid": c["arn"],
            "uid_alt": c["principal_id"],
            "account": _struct({"uid": c["account"]}, mask=pc.is_null(c["account"])),
            "credential_uid": c["credential_uid"],
        }
        session_fields = {
            "created_time": c["session_created_ms"],
            "created_time_dt": c["session_created_ms"].cast(pa.timestamp("ms", tz="UTC")),
            "is_mfa": c["mfa"],
            "issuer": c["session_issuer"],
        }
        resource = _struct(
            {
                "uid": c["resource_arn"],
                "owner": _struct({"account": _struct({"uid": c["recipient_account"]})}),
                "type": _const(None, n),
            }
        )
    session = _struct(
        session_fields, mask=_all_null([c["session_issuer"], c["session_created_ms"]])
    )
    actor = _struct(
        {
            "user": _struct(user, mask=_all_null([c["arn"], c["principal_id"], c["account"]])),
            "session": session,
            "invoked_by": c["invoked_by"],
            "idp": _struct({"name": c["idp_name"]}),
        }
    )
    # One resource per event (the repository), as a one-element list.
    resources = pa.ListArray.from_arrays(pa.array(range(0, n + 1), pa.int32()), resource)
    src = _struct({"uid": c["src_uid"], "ip": c["src_ip"], "domain": c["src_domain"]})
    out: dict[str, pa.Array] = {
        "metadata": _struct(meta_fields),
        "time": c["time_ms"],
    }
    if version == 2:
        out["time_dt"] = c["time_ms"].cast(pa.timestamp("ms", tz="UTC"))
    out |= {
        "cloud": _struct({"region": c["region"], "provider": _const("AWS", n)}),
        "api": api,
        "resources": resources,
        "actor": actor,
        "http_request": _struct({"user_agent": c["user_agent"]}),
        "src_endpoint": src,
        "class_name": _const("API Activity", n),
        "class_uid": _const(3005 if version == 1 else 6003, n, pa.int32()),
        "category_name": _const("Audit Activity" if version == 1 else "Application Activity", n),
        "category_uid": _const(3 if version == 1 else 6, n, pa.int32()),
        "severity_id": _const(1, n, pa.int32()),
        "severity": _const("Informational", n),
        "status": c["status"],
        "status_id": status_id,
        "activity_name": _const("Update", n),
        "activity_id": _const(3, n, pa.int32()),
        "type_uid": _const(300503 if version == 1 else 600303, n, pa.int64()),
        "type_name": _const("API Activity: Update", n),
    }
    if version == 1:
        unmapped = [
            _flatten_request(rq, rs, v1_request)
            for rq, rs in zip(
                c["request_json"].to_pylist(), c["response_json"].to_pylist(), strict=True
            )
        ]
        out["unmapped"] = pa.array(unmapped, pa.map_(S, S))
    else:
        out["unmapped"] = _const(None, n)
        out["observables"] = pa.ListArray.from_arrays(
            pa.array(range(0, n + 1), pa.int32()),
            _struct(
                {
                    "name": _const("src_endpoint.ip", n),
                    "value": c["src_ip"],
                    "type": _const("IP Address", n),
                    "type_id": _const(2, n, pa.int32()),
                }
            ),
        )
        out["accountid"] = c["recipient_account"]
        out["region"] = c["region"]
        out["asl_version"] = _const("2.0", n)
    table = pa.table(out)
    return _as_aws_v1(table) if aws_v1_schema else table


# The fields AWS's published v1 objects mark required (Parquet ``required``), read from their
# schema. Everything else there is optional, as in the tidy layout.
_AWS_V1_REQUIRED = frozenset(
    {
        "metadata",
        "metadata.product",
        "metadata.product.version",
        "metadata.product.name",
        "metadata.product.vendor_name",
        "metadata.product.feature",
        "metadata.product.feature.name",
        "metadata.version",
        "time",
        "cloud",
        "cloud.provider",
        "api",
        "api.response",
        "api.service",
        "api.request",
        "actor",
        "actor.user",
        "actor.session",
        "actor.idp",
        "http_request",
        "src_endpoint",
        "class_name",
        "class_uid",
        "category_name",
        "category_uid",
        "severity_id",
        "severity",
        "activity_name",
        "activity_id",
        "type_uid",
        "type_name",
    }
)


def _aws_v1_array(arr: pa.Array, path: str) -> pa.Array:
    """``arr`` (the column or field at ``path``) with the physical typing of AWS's v1 objects.

    A required struct is written without a validity bitmap: where the tidy layout has a null
    parent (``actor.session`` of an IAM user), AWS has a struct whose fields are all null.
    """
    typ = arr.type
    required = path in _AWS_V1_REQUIRED
    if pa.types.is_struct(typ):
        children = [_aws_v1_array(arr.field(i), f"{path}.{f.name}") for i, f in enumerate(typ)]
        fields = [
            pa.field(f.name, child.type, nullable=f"{path}.{f.name}" not in _AWS_V1_REQUIRED)
            for f, child in zip(typ, children, strict=True)
        ]
        mask = None if required or arr.null_count == 0 else arr.is_null()
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    if pa.types.is_list(typ):
        assert isinstance(arr, pa.ListArray)
        values = _aws_v1_array(arr.values, f"{path}[]")
        # parquet-avro names list elements ``array`` and writes them required.
        element = pa.field("array", values.type, nullable=False)
        mask = arr.is_null() if arr.null_count else None
        return pa.ListArray.from_arrays(arr.offsets, values, type=pa.list_(element), mask=mask)
    if pa.types.is_map(typ):
        assert isinstance(arr, pa.MapArray)
        entries = pa.map_(pa.field("key", S, nullable=False), pa.field("value", S, nullable=False))
        mask = arr.is_null() if arr.null_count else None
        return pa.MapArray.from_arrays(arr.offsets, arr.keys, arr.items, type=entries, mask=mask)
    if path == "type_uid":
        return arr.cast(pa.int32())
    return arr


def _as_aws_v1(table: pa.Table) -> pa.Table:
    arrays = [_aws_v1_array(table.column(f.name).combine_chunks(), f.name) for f in table.schema]
    fields = [
        pa.field(f.name, a.type, nullable=f.name not in _AWS_V1_REQUIRED)
        for f, a in zip(table.schema, arrays, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def key_for(
    version: int,
    region: str = "us-east-1",
    account: str = ACCOUNT,
    day: str = "20261120",
    name: str = "part-0000",
) -> str:
    """An object key laid out as Security Lake lays out CloudTrail-management data."""
    return (
        f"aws/CLOUD_TRAIL_MGMT/{version}.0/region={region}/accountId={account}/"
        f"eventDay={day}/{name}.gz.parquet"
    )


def write_object(
    where: str | Path | BinaryIO,
    events: Sequence[Mapping[str, Any]] | Mapping[str, pa.Array],
    version: int,
    compression: str = "gzip",
    row_group_size: int | None = None,
    *,
    v1_request: str = "flattened",
    aws_v1_schema: bool = False,
) -> pa.Table:
    """Write events (dicts or flat columns) as one Security Lake Parquet object of ``version``.

    ``v1_request`` and ``aws_v1_schema``: the layouts of real v1 objects (see ``nest``).
    """
    cols = columns_from_events(events) if isinstance(events, Sequence) else events
    table = nest(cols, version, v1_request=v1_request, aws_v1_schema=aws_v1_schema)
    pq.write_table(
        table,
        where,
        compression=compression,
        row_group_size=row_group_size,
        # The Parquet spec's list element name is ``element``; AWS's objects (parquet-avro)
        # carry ``array``, which pyarrow keeps only when not made "compliant".
        use_compliant_nested_type=not aws_v1_schema,
    )
    return table


def synthetic_columns(
    n: int, put_image_fraction: float = 0.005, seed: int = 7, uid_start: int = 0
) -> dict[str, pa.Array]:
    """``n`` events of a busy account, built column-wise (fast enough for millions of rows).

    Operations follow a skewed mix of common management calls; a ``put_image_fraction`` of rows
    are PutImage calls carrying a real-size request (with the image manifest). Principals,
    agents, IPs and regions are drawn from small pools, as in a real account.
    """
    rng = random.Random(seed)

    def pick(pool: Sequence[Any], typ: pa.DataType = S) -> pa.Array:
        idx = pc.floor(pc.multiply(pc.random(n, initializer=rng.getrandbits(32)), len(pool)))
        return pc.take(pa.array(pool, typ), idx.cast(pa.int32()))

    common_ops = [
        "GetObject",
        "AssumeRole",
        "DescribeInstances",
        "GetCallerIdentity",
        "Decrypt",
        "ListBuckets",
        "GetAuthorizationToken",
        "BatchGetImage",
        "DescribeRepositories",
        "PutObject",
        "CreateLogStream",
        "GetParameter",
        "InitiateLayerUpload",
        "UploadLayerPart",
        "CompleteLayerUpload",
        "BatchCheckLayerAvailability",
        "UpdateItem",
        "Query",
    ]
    is_put = pc.less(pc.random(n, initializer=rng.getrandbits(32)), put_image_fraction)
    operation = pc.if_else(is_put, "PutImage", pick(common_ops))
    roles = [
        f"arn:aws:iam::{ACCOUNT}:role/{r}" for r in ("ci-deployer", "eks-node", "admin", "etl")
    ]
    arns = [
        f"arn:aws:sts::{ACCOUNT}:assumed-role/{r.rsplit('/', 1)[1]}/s{i}"
        for r in roles
        for i in range(5)
    ] + [f"arn:aws:iam::{ACCOUNT}:user/dev{i}" for i in range(8)]
    arn = pick(arns)
    issuer = pc.if_else(
        pc.match_substring(arn, ":assumed-role/"),
        pc.binary_join_element_wise(
            f"arn:aws:iam::{ACCOUNT}:role/",
            pc.replace_substring_regex(arn, r"^.*:assumed-role/([^/]+)/.*$", r"\1"),
            "",
        ),
        pa.scalar(None, S),
    )
    requests = [put_image_request(f"team-{i}/service", f"build-{i}") for i in range(40)]
    other_requests = [
        json.dumps({"bucketName": f"bucket-{i}", "key": f"logs/{i:08d}/part-{i}.json.gz"})
        for i in range(50)
    ]
    # One take over both pools (taking full PutImage requests for every row and then choosing
    # would overflow a string array at ~1M rows).
    put_i = pc.floor(
        pc.multiply(pc.random(n, initializer=rng.getrandbits(32)), len(requests))
    ).cast(pa.int32())
    other_i = pc.add(
        pc.floor(
            pc.multiply(pc.random(n, initializer=rng.getrandbits(32)), len(other_requests))
        ).cast(pa.int32()),
        len(requests),
    )
    pooled = pc.take(pa.array(requests + other_requests, S), pc.if_else(is_put, put_i, other_i))
    # Real request parameters differ per call (object keys, tokens): a per-row id keeps the
    # column from being a handful of repeated strings, while the object stays near the
    # ~32 bytes per row of a real Security Lake object (4M rows ~ 128 MB).
    uid = pc.binary_join_element_wise(
        "e", pc.cast(pa.array(range(uid_start, uid_start + n), pa.int64()), S), ""
    )
    request_json = pc.binary_join_element_wise(
        '{"clientToken":"', uid, '",', pc.utf8_slice_codeunits(pooled, 1), ""
    )
    time_ms = pc.add(
        pc.floor(pc.multiply(pc.random(n, initializer=rng.getrandbits(32)), 3_600_000)).cast(
            pa.int64()
        ),
        T0_MS,
    )
    return {
        "time_ms": time_ms,
        "operation": operation,
        "service": pick(
            ["ecr.amazonaws.com", "s3.amazonaws.com", "sts.amazonaws.com", "ec2.amazonaws.com"]
        ),
        "arn": arn,
        "principal_id": pick([f"AROAEXAMPLE{i}:s{i}" for i in range(20)]),
        "account": _const(ACCOUNT, n),
        "user_type": pick(["AssumedRole", "AssumedRole", "IAMUser"]),
        "credential_uid": pick([f"ASIAKEY{i:08d}" for i in range(64)]),
        "session_issuer": issuer,
        "session_created_ms": time_ms,
        "mfa": pick([False, True], pa.bool_()),
        "user_agent": pick(
            [
                "docker/24.0.7 go/go1.21.3 git-commit/311b9ff os/linux arch/amd64",
                "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023",
                "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1 md/arch#x86_64 "
                "lang/python#3.11",
                "aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21 md/GOOS#linux md/GOARCH#amd64",
            ]
        ),
        "src_ip": pick([f"198.51.100.{i}" for i in range(32)] + ["2001:db8::1"]),
        "region": pick(["us-east-1", "us-east-1", "eu-west-1"]),
        "status": pick(["Success"] * 19 + ["Failure"]),
        "event_uid": uid,
        "request_uid": uid,
        "request_json": request_json,
        "response_json": pick([json.dumps({"requestId": f"r{i}"}) for i in range(16)]),
        "recipient_account": _const(ACCOUNT, n),
    }
