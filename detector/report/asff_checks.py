"""Checks of an ASFF finding against what Security Hub accepts, before it is sent.

Pure: no AWS calls. ``validate`` raises ``ValueError`` naming the first field that breaks a
limit (moto does not enforce them, so tests rely on ``validate``); ``asff`` builds findings
within the same limits, defined here.

Limits, from the Security Hub API model and user guide:

- ``Id``/``GeneratorId`` ≤ 512, ``Title`` ≤ 256, ``Description`` ≤ 1024 characters,
  ``Remediation.Recommendation.Text`` ≤ 512, ``Resource.Type`` ≤ 256, ``Resource.Region`` ≤ 16.
- ``Resources``: 1 to 32. ``Types``: at most 50.
- ``ProductFields``: at most 50 pairs, key ≤ 128 and value ≤ 2048 characters (Security Hub adds
  its own ``aws/securityhub/*`` keys to the same map, so fewer are used here).
- ``Resource.Details.Other``: at most 50 pairs, key < 128 and value < 1024 characters.
- Every string must match ``.*\\S.*``: not empty, not only whitespace, no line breaks.
- One finding ≤ 240 KB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

SCHEMA_VERSION = "2018-10-08"

MAX_ID = 512
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_REMEDIATION_TEXT = 512
MAX_RESOURCES = 32
MAX_TYPES = 50
MAX_RESOURCE_TYPE = 256
MAX_RESOURCE_REGION = 16
MAX_RESOURCE_ID = 512  # no documented limit; IAM and resource ARNs stay far below
MAX_PRODUCT_FIELDS = 50
MAX_PRODUCT_FIELD_KEY = 128
MAX_PRODUCT_FIELD_VALUE = 2048
MAX_OTHER_FIELDS = 50
MAX_OTHER_KEY = 127  # "fewer than 128"
MAX_OTHER_VALUE = 1023  # "fewer than 1,024"
MAX_DOMAIN = 128
MAX_API_NAME = 128
MAX_FINDING_BYTES = 240 * 1024

# Fields the customer owns: BatchImportFindings must not carry them.
CUSTOMER_FIELDS = ("Workflow", "WorkflowState", "Note", "UserDefinedFields", "VerificationState")
REQUIRED = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "CreatedAt",
    "UpdatedAt",
    "Title",
    "Description",
    "Resources",
    "Severity",
)
SEVERITY_LABELS = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")
TYPE_NAMESPACES = (
    "Software and Configuration Checks",
    "TTPs",
    "Effects",
    "Unusual Behaviors",
    "Sensitive Data Identifications",
)
PARTITIONS = ("aws", "aws-cn", "aws-us-gov", "aws-us-iso", "aws-us-iso-b")

_ACCOUNT_RE = re.compile(r"\d{12}")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_PRODUCT_ARN_RE = re.compile(
    r"arn:[a-z-]+:securityhub:[a-z0-9-]+:(?:\d{12})?:product/[^/\s]+/[^/\s]+"
)
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _u16(text: str) -> int:
    """Length as Security Hub counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# --- validation -------------------------------------------------------------------------------


def _fail(path: str, problem: str) -> NoReturn:
    raise ValueError(f"ASFF {path}: {problem}")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _sub(value: object, *keys: str) -> Mapping[str, Any]:
    """``value[k1][k2]...`` when each level is an object, else an empty mapping."""
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _check_text(path: str, value: object, limit: int | None = None) -> None:
    if not isinstance(value, str):
        _fail(path, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        _fail(path, "must not be empty or blank")
    if limit is not None and _u16(value) > limit:
        _fail(path, f"longer than {limit} characters ({_u16(value)})")


def _walk_strings(value: object, path: str) -> None:
    """Every string anywhere (keys too): not blank, no control characters or line breaks."""
    if isinstance(value, str):
        if not value.strip():
            _fail(path, "must not be empty or blank")
        if _BAD_CHARS.search(value):
            _fail(path, "contains control characters, line breaks or lone surrogates")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk_strings(key, f"{_join(path, repr(key)[:40])} (key)")
            _walk_strings(item, _join(path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk_strings(item, f"{path}[{i}]")


def _check_map(path: str, value: object, *, pairs: int, key_limit: int, value_limit: int) -> None:
    if not isinstance(value, Mapping):
        _fail(path, "must be a map of strings")
    if len(value) > pairs:
        _fail(path, f"more than {pairs} pairs ({len(value)})")
    for key, item in value.items():
        _check_text(f"{path} key {str(key)[:40]!r}", key, key_limit)
        _check_text(_join(path, key), item, value_limit)


def _check_timestamp(path: str, value: object) -> None:
    if not isinstance(value, str) or not _TIMESTAMP_RE.fullmatch(value):
        _fail(path, f"not an ISO 8601 timestamp: {str(value)[:40]!r}")


def _check_score(path: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        _fail(path, "must be an integer from 0 to 100")


def _check_severity(path: str, value: object) -> None:
    if not isinstance(value, Mapping) or value.get("Label") not in SEVERITY_LABELS:
        _fail(f"{path}.Label", f"must be one of {', '.join(SEVERITY_LABELS)}")
    if "Original" in value:
        _check_text(f"{path}.Original", value["Original"], 64)


def _check_types(path: str, value: object) -> None:
    if not isinstance(value, list) or not value:
        _fail(path, "must be a non-empty list")
    if len(value) > MAX_TYPES:
        _fail(path, f"more than {MAX_TYPES} types ({len(value)})")
    for i, item in enumerate(value):
        _check_text(f"{path}[{i}]", item)
        if str(item).split("/", 1)[0] not in TYPE_NAMESPACES:
            _fail(f"{path}[{i}]", f"namespace must be one of {', '.join(TYPE_NAMESPACES)}")


def _check_resources(value: object) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RESOURCES:
        count = len(value) if isinstance(value, list) else "not a list"
        _fail("Resources", f"must hold 1 to {MAX_RESOURCES} resources (has {count})")
    for i, res in enumerate(value):
        path = f"Resources[{i}]"
        if not isinstance(res, Mapping):
            _fail(path, "must be an object")
        _check_text(f"{path}.Type", res.get("Type"), MAX_RESOURCE_TYPE)
        _check_text(f"{path}.Id", res.get("Id"), MAX_RESOURCE_ID)
        if "Region" in res:
            _check_text(f"{path}.Region", res["Region"], MAX_RESOURCE_REGION)
        if "Partition" in res and res["Partition"] not in PARTITIONS:
            _fail(f"{path}.Partition", f"must be one of {', '.join(PARTITIONS)}")
        if "Other" in _sub(res, "Details"):
            _check_map(
                f"{path}.Details.Other",
                _sub(res, "Details")["Other"],
                pairs=MAX_OTHER_FIELDS,
                key_limit=MAX_OTHER_KEY,
                value_limit=MAX_OTHER_VALUE,
            )


def validate(asff: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that breaks a Security Hub limit.

    Our own check, because moto accepts anything and Security Hub reports a broken finding only
    as a ``FailedFindings`` entry.
    """
    for name in REQUIRED:
        if asff.get(name) in (None, "", [], {}):
            _fail(name, "required field missing")
    for name in CUSTOMER_FIELDS:
        if name in asff:
            _fail(name, "customer-owned field must not be sent by the finding provider")
    if asff["SchemaVersion"] != SCHEMA_VERSION:
        _fail("SchemaVersion", f"must be {SCHEMA_VERSION}")
    _check_text("Id", asff["Id"], MAX_ID)
    _check_text("GeneratorId", asff["GeneratorId"], MAX_ID)
    _check_text("ProductArn", asff["ProductArn"])
    if not _PRODUCT_ARN_RE.fullmatch(asff["ProductArn"]):
        _fail("ProductArn", "not a Security Hub product ARN")
    account = asff["AwsAccountId"]
    if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account):
        _fail("AwsAccountId", "must be a 12-digit account id")
    for name in ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt"):
        if name in asff:
            _check_timestamp(name, asff[name])
    _check_text("Title", asff["Title"], MAX_TITLE)
    _check_text("Description", asff["Description"], MAX_DESCRIPTION)
    _check_severity("Severity", asff["Severity"])
    for name in ("Confidence", "Criticality"):
        if name in asff:
            _check_score(name, asff[name])
    if "Types" in asff:
        _check_types("Types", asff["Types"])
    fpf = _sub(asff, "FindingProviderFields")
    for name in ("Confidence", "Criticality"):
        if name in fpf:
            _check_score(f"FindingProviderFields.{name}", fpf[name])
    if "Severity" in fpf:
        _check_severity("FindingProviderFields.Severity", fpf["Severity"])
    if "Types" in fpf:
        _check_types("FindingProviderFields.Types", fpf["Types"])
    _check_resources(asff["Resources"])
    if "ProductFields" in asff:
        _check_map(
            "ProductFields",
            asff["ProductFields"],
            pairs=MAX_PRODUCT_FIELDS,
            key_limit=MAX_PRODUCT_FIELD_KEY,
            value_limit=MAX_PRODUCT_FIELD_VALUE,
        )
    recommendation = _sub(asff, "Remediation", "Recommendation")
    if "Text" in recommendation:
        text = recommendation["Text"]
        _check_text("Remediation.Recommendation.Text", text, MAX_REMEDIATION_TEXT)
    network = _sub(asff, "Network")
    if network.get("Direction", "IN") not in ("IN", "OUT"):
        _fail("Network.Direction", "must be IN or OUT")
    if "SourceDomain" in network:
        _check_text("Network.SourceDomain", network["SourceDomain"], MAX_DOMAIN)
    call = _sub(asff, "Action", "AwsApiCallAction")
    for name in ("Api", "ServiceName"):
        if name in call:
            _check_text(f"Action.AwsApiCallAction.{name}", call[name], MAX_API_NAME)
    domain = _sub(call, "DomainDetails").get("Domain")
    if domain is not None:
        _check_text("Action.AwsApiCallAction.DomainDetails.Domain", domain, MAX_DOMAIN)
    for name in ("FirstSeen", "LastSeen"):
        if name in call:
            _check_timestamp(f"Action.AwsApiCallAction.{name}", call[name])
    _walk_strings(asff, "")
    try:
        size = len(json.dumps(asff, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        _fail("finding", f"not JSON: {type(exc).__name__}")
    if size > MAX_FINDING_BYTES:
        _fail("finding", f"{size} bytes, more than {MAX_FINDING_BYTES}")
