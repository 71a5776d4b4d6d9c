"""Findings in the AWS Security Finding Format (ASFF), for Security Hub ``BatchImportFindings``.

Pure: no AWS calls. ``to_asff`` builds one finding within the limits Security Hub enforces
(defined in ``asff_checks``, whose ``validate`` checks a finding against them; moto does not,
so tests rely on ``validate``).

What belongs to a detection (``Types``, the API call, the description's lead and listings, the
resources besides the principal, severity, confidence, title, remediation) comes from the
alert's detection spec (``Alert.detection``, ``detector.core.spec.AsffSpec``).

Everything taken from event data (user agents, ARNs, request values) is attacker-influenced:
it passes through ``_text`` (control characters escaped, length cut in UTF-16 code units, which
is how the service counts) before it goes anywhere in the finding.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from detector.analysis.output import safe_text
from detector.core.spec import AsffSpec, Detection
from detector.report.alerts import Alert, Limits
from detector.report.asff_checks import (
    _ACCOUNT_RE,
    MAX_DESCRIPTION,
    MAX_OTHER_FIELDS,
    MAX_OTHER_VALUE,
    MAX_PRODUCT_FIELD_VALUE,
    MAX_REMEDIATION_TEXT,
    MAX_RESOURCE_ID,
    MAX_RESOURCE_REGION,
    MAX_RESOURCES,
    MAX_TITLE,
    PARTITIONS,
    SCHEMA_VERSION,
    _u16,
)

# Samples rendered into ProductFields: values are joined and cut at 2048 characters anyway.
FIELD_LIMITS = Limits(values=20, findings=0, text=256)

# Room left in ProductFields for the keys Security Hub adds itself (aws/securityhub/FindingId,
# ProductName, CompanyName, ...).
OWN_PRODUCT_FIELDS = 40

_KEY_RE = re.compile(r"[A-Za-z0-9 _./:+=@-]{1,128}")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,126}[A-Za-z0-9])?")
# An IAM role or user ARN (path and name are printable ASCII); anything else is ``Other``.
_IAM_ARN_RE = re.compile(r"arn:[a-z-]+:iam::\d{12}:(?P<kind>role|user)/[!-~]+")


# --- text -------------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` UTF-16 code units; a cut is marked with an ellipsis."""
    if len(text) <= limit // 2 or _u16(text) <= limit:
        return text
    budget = limit - 1
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > budget:
            return text[:i] + "…"
    return text  # pragma: no cover - unreachable: the text was longer than limit


def _text(value: object, limit: int) -> str:
    """A value from data as one safe, non-blank line of at most ``limit`` characters.

    Control and format characters are shown escaped
    (``detector.analysis.output.safe_text``); an empty or
    blank value is shown quoted (``""``) so it stays distinguishable from a missing one and
    matches Security Hub's ``.*\\S.*``.
    """
    raw = "-" if value is None else str(value)
    # Escaping never shortens text: a value cut to limit+1 characters still gets the ellipsis.
    clean = _clip(safe_text(raw[: limit + 1], sys.maxsize), limit)
    if not clean.strip():
        clean = _clip(json.dumps(raw[: limit + 1]), limit)
    return clean


def _timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# Years 1000-9999, so every timestamp keeps the four-digit ISO 8601 form.
_MIN_MS = int(datetime(1000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)


def _ms_timestamp(ms: int | None) -> str | None:
    """Epoch milliseconds as a timestamp; ``None`` when missing or out of range."""
    if ms is None or not _MIN_MS <= ms <= _MAX_MS:
        return None
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
    return _timestamp(moment)


# --- identity ---------------------------------------------------------------------------------


def finding_id(alert: Alert) -> str:
    """Stable per alert key (detection, account, principal): a re-import updates the finding
    in place (GuardDuty's model: one finding per actor and type, with a count)."""
    return f"{alert.key.detection_id}/principal/{alert.id}"


def product_arn(*, account_id: str, region: str, partition: str = "aws") -> str:
    """The ``default`` product every account has for its own findings."""
    return f"arn:{partition}:securityhub:{region}:{account_id}:product/{account_id}/default"


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, or None. An IPv6 zone id (``fe80::1%eth0``) is data the caller chose and
    may hold anything (of any length): it is dropped, the address kept. IPv4 has no zone id."""
    if not value:
        return None
    address, zoned, _ = value.partition("%")
    if len(address) > 64:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if zoned and not isinstance(ip, ipaddress.IPv6Address):
        return None
    return ip


def _domain(value: str | None) -> str | None:
    if value and _DOMAIN_RE.fullmatch(value):
        return value
    return None


# --- resources --------------------------------------------------------------------------------


def _other(pairs: Iterable[tuple[str, object]]) -> dict[str, str]:
    """A ``Details.Other`` map: values safe and short, nulls and empty lists left out."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if isinstance(value, list | tuple):
            value = ", ".join(_text(v, MAX_OTHER_VALUE) for v in value[:20])
        out[key] = _text(value, MAX_OTHER_VALUE)
    return dict(list(out.items())[:MAX_OTHER_FIELDS])


def _principal(alert: Alert, partition: str, region: str) -> dict[str, Any]:
    """The principal as a resource: ``AwsIamRole`` for a role (assumed-role sessions are rolled
    up to their role), ``AwsIamUser`` for a user, ``Other`` for anything else (root, federated
    user, an AWS service, a source domain, the unknown principal, an ARN that is not a
    well-formed IAM role or user ARN)."""
    who = alert.who()
    iam = _IAM_ARN_RE.fullmatch(who) if len(who) <= MAX_RESOURCE_ID else None
    kind = "Other"
    if iam is not None:
        kind = "AwsIamRole" if iam["kind"] == "role" else "AwsIamUser"
    resource: dict[str, Any] = {"Type": kind, "Id": _text(who, MAX_RESOURCE_ID)}
    if partition in PARTITIONS:
        resource["Partition"] = partition
    resource["Region"] = region
    sessions, _, _ = alert.sample("sessions")
    ids, _, _ = alert.sample("principal_ids")
    types, _, _ = alert.sample("caller_types")
    other = _other(
        [
            ("Principal", who),
            ("AccountId", alert.key.account),
            ("CallerArns", sessions),
            ("PrincipalIds", ids),
            ("CallerTypes", types),
        ]
    )
    if other:
        resource["Details"] = {"Other": other}
    return resource


_ACCESS_KEY_RE = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{12,124}")
# Access keys, and resources a spec adds from the whole alert (images), listed at the most.
MAX_ACCESS_KEYS = 3
MAX_IMAGES = 3


def _access_keys(alert: Alert, partition: str, region: str) -> list[dict[str, Any]]:
    """The access keys the calls were signed with, as ``AwsIamAccessKey`` resources (what a
    responder disables); a value that is not an access key id stays out (it is shown, escaped,
    in ``ProductFields``)."""
    keys, _, _ = alert.sample("access_keys")
    out = []
    for key in [k for k in keys if _ACCESS_KEY_RE.fullmatch(k)][:MAX_ACCESS_KEYS]:
        details: dict[str, Any] = {"AccessKeyId": key}
        account = alert.key.account
        if account and _ACCOUNT_RE.fullmatch(account):
            details["AccountId"] = account
        resource: dict[str, Any] = {"Type": "AwsIamAccessKey", "Id": key}
        if partition in PARTITIONS:
            resource["Partition"] = partition
        resource["Region"] = region
        resource["Details"] = {"AwsIamAccessKey": details}
        out.append(resource)
    return out


def _spec_resources(
    alert: Alert, spec: AsffSpec, partition: str, region: str, account: str, limit: int
) -> list[dict[str, Any]]:
    """The resources the detection declares besides the principal (``AsffSpec.resources``),
    from the values of its ``resource_sample``, those of successful calls first. The spec
    decides which values make a valid resource; a value it refuses is still shown, escaped,
    in ``Description`` and ``ProductFields``."""
    ok = alert.succeeded_values(spec.resource_sample)
    values, _, _ = alert.sample(spec.resource_sample)  # successful ones first
    names = list(dict.fromkeys([*ok, *values]))
    return spec.resources(names, partition, region, account, limit)[:limit]


# --- product fields ---------------------------------------------------------------------------


def _field_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping) and "values" in value:  # an alert sample
        value = value["values"]
    if isinstance(value, Mapping):  # flags: the names set
        value = [str(k) for k, v in value.items() if v]
    if isinstance(value, list | tuple):
        if not value:
            return None
        items = [_text(v, MAX_PRODUCT_FIELD_VALUE) for v in value[:200] if not isinstance(v, dict)]
        if not items:
            return None
        return _clip(", ".join(items), MAX_PRODUCT_FIELD_VALUE)
    return _text(value, MAX_PRODUCT_FIELD_VALUE)


# Alert record keys not worth a ProductFields entry (nested findings; repeated metadata).
_SKIPPED_FIELDS = frozenset({"findings", "message", "first_ms", "last_ms"})


def product_fields(record: Mapping[str, Any]) -> dict[str, str]:
    """The alert's JSON record under the same names, as strings (samples as their values,
    ``truncated`` as the names of the samples cut); nulls and empty lists left out."""
    out: dict[str, str] = {}
    for key, value in record.items():
        if key in _SKIPPED_FIELDS or not _KEY_RE.fullmatch(key) or key.startswith("aws/"):
            continue
        text = _field_value(value)
        if text is not None:
            out[key] = text
        if len(out) >= OWN_PRODUCT_FIELDS:
            break
    return out


# --- the finding ------------------------------------------------------------------------------


def _listing(label: str, values: Sequence[str], total: int, more: bool, width: int) -> list[str]:
    """``Label: a, b, c (+N more).`` for the first five values; nothing when there are none."""
    if not values:
        return []
    shown = ", ".join(_text(v, width) for v in values[:5])
    extra = total - min(len(values), 5)
    if more:
        return [f"{label}: {shown} (+{max(extra, 0)} more and others not recorded)."]
    return [f"{label}: {shown}" + (f" (+{extra} more)." if extra > 0 else ".")]


def _description(
    alert: Alert, spec: AsffSpec, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> str:
    who = _text(alert.who(), 300)
    parts = [
        spec.lead.format(count=alert.count, succeeded=alert.succeeded, failed=alert.failed, who=who)
    ]
    for label, source, width in spec.listings:
        kind, _, name = source.partition(":")
        if kind == "succeeded" and name:
            ok = alert.succeeded_values(name)
            parts += _listing(label, ok, len(ok), False, width)
        else:
            values, total, more = alert.sample(source)
            parts += _listing(label, values, total, more, width)
    source = f"From {ip}" if ip is not None else "From an unrecorded source"
    regions, _, _ = alert.sample("regions")
    if regions:
        source += f" in {_text(regions[0], 32)}"
    if alert.key.account is not None:
        source += f", account {_text(alert.key.account, 32)}"
    parts.append(source + ".")
    first, last = _ms_timestamp(alert.first_ms), _ms_timestamp(alert.last_ms)
    if first and last:
        parts.append(f"First seen {first}, last seen {last}.")
    agents, total, _ = alert.sample("user_agents")
    parts += _listing("User agents", agents, total, False, 120)
    return _clip(" ".join(parts), MAX_DESCRIPTION)


def _first_ip(alert: Alert) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    values, _, _ = alert.sample("src_ips")
    for value in values:
        if (ip := _ip(value)) is not None:
            return ip
    return None


def _first_domain(alert: Alert) -> str | None:
    for f in alert.ordered():
        if (domain := _domain(f.field("src_domain"))) is not None:
            return domain
    return None


def _asff_spec(detection: Detection) -> AsffSpec:
    if detection.asff is None:
        raise ValueError(f"detection {detection.slug} declares no ASFF fields")
    return detection.asff


def to_asff(
    alert: Alert,
    *,
    account_id: str,
    region: str,
    partition: str = "aws",
    now: datetime,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """One ASFF finding for ``alert``, from the account and region the detector runs in.

    ``now`` becomes ``UpdatedAt`` and, unless ``created_at`` is given (the key was seen before:
    keep ``CreatedAt`` stable across re-imports), ``CreatedAt``. The customer-owned fields
    (``Workflow``, ``Note``, ``UserDefinedFields``, ``VerificationState``) are never set.
    Every value from the data goes through ``_text``, ``_ip`` or ``_domain`` first.
    """
    detection = alert.detection
    spec = _asff_spec(detection)
    record = alert.to_record(FIELD_LIMITS)
    # No finding of the alert is rendered here (``groups`` counts them): their flag would
    # always be set.
    record["truncated"] = {k: v for k, v in record["truncated"].items() if k != "findings"}
    regions, _, _ = alert.sample("regions")
    # A region-shaped value can still be longer than ASFF's Resource.Region allows.
    event_region = next(
        (r for r in regions if len(r) <= MAX_RESOURCE_REGION and _REGION_RE.fullmatch(r)), None
    )
    res_region = event_region or region
    # The resource (what the call touched) belongs to the account the call was recorded in, not
    # necessarily the caller's: a push from 999988887777 into 111122223333 is a resource of
    # 111122223333. Without a recorded account, the caller's, else the detector's own.
    actor_account = alert.key.account
    recorded, _, _ = alert.sample("resource_accounts")
    owners = [a for a in recorded if _ACCOUNT_RE.fullmatch(a)]
    if owners:
        res_account = owners[0]
    else:
        valid_actor = actor_account and _ACCOUNT_RE.fullmatch(actor_account)
        res_account = actor_account if valid_actor and actor_account else account_id
    ip = _first_ip(alert)
    domain = _first_domain(alert)
    first, last = _ms_timestamp(alert.first_ms), _ms_timestamp(alert.last_ms)
    created = _timestamp(now)
    # By outcome (``Alert.severity``): e.g. LOW when every call failed and nothing landed.
    severity = {"Label": alert.severity.upper(), "Original": str(detection.risk_score)}
    types = list(spec.types)

    resources = [_principal(alert, partition, res_region)]
    resources += _access_keys(alert, partition, res_region)
    # The room left after the principal and its access keys.
    # The container images first (what was pushed), then the other resources of the spec, in
    # the room left after the principal and its access keys.
    if spec.more_resources is not None:
        room = min(MAX_IMAGES, MAX_RESOURCES - len(resources) - 1)
        resources += spec.more_resources(alert, partition, res_region, res_account, room)
    room = MAX_RESOURCES - len(resources)
    resources += _spec_resources(alert, spec, partition, res_region, res_account, room)
    fields = product_fields(record)

    asff: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": finding_id(alert),
        "ProductArn": product_arn(account_id=account_id, region=region, partition=partition),
        "GeneratorId": alert.key.detection_id,
        "AwsAccountId": account_id,
        "Types": types,
        "CreatedAt": _timestamp(created_at) if created_at is not None else created,
        "UpdatedAt": created,
    }
    if first:
        asff["FirstObservedAt"] = first
    if last:
        asff["LastObservedAt"] = last
    asff |= {
        "Severity": dict(severity),
        "Confidence": detection.confidence,
        "Criticality": detection.impact,
        "FindingProviderFields": {
            "Confidence": detection.confidence,
            "Criticality": detection.impact,
            "Severity": dict(severity),
            "Types": list(types),
        },
        "Title": _clip(detection.message(_text(alert.who(), 200)), MAX_TITLE),
        "Description": _description(alert, spec, ip),
    }
    recommendation = {"Text": _clip(detection.how_to_respond, MAX_REMEDIATION_TEXT)}
    if detection.references:
        recommendation["Url"] = detection.references[0]
    asff["Remediation"] = {"Recommendation": recommendation}
    # The first reference is the technique (remediation); the second, the detection's page.
    if len(detection.references) > 1:
        asff["SourceUrl"] = detection.references[1]
    asff |= {"ProductFields": fields, "Resources": resources}

    network: dict[str, Any] = {}
    if isinstance(ip, ipaddress.IPv4Address):
        network["SourceIpV4"] = str(ip)
    elif ip is not None:
        network["SourceIpV6"] = str(ip)
    if domain is not None:
        network["SourceDomain"] = domain
    if network:
        asff["Network"] = {"Direction": "IN", **network}

    call: dict[str, Any] = {"Api": spec.api, "ServiceName": spec.service}
    if ip is not None:
        call["CallerType"] = "remoteip"
        if isinstance(ip, ipaddress.IPv4Address):
            call["RemoteIpDetails"] = {"IpAddressV4": str(ip)}
    elif domain is not None:
        call["CallerType"] = "domain"
    if domain is not None:
        call["DomainDetails"] = {"Domain": domain}
    if first:
        call["FirstSeen"] = first
    if last:
        call["LastSeen"] = last
    asff["Action"] = {"ActionType": "AWS_API_CALL", "AwsApiCallAction": call}
    asff["RecordState"] = "ACTIVE"
    return asff
