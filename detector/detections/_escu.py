"""What the ported ESCU "ASL AWS" detections share: one call (``detection``) that turns the few
facts each detection has of its own (id, version, type, operations, predicates, the resource
it acts on, examples, words) into a full ``Detection``, with the email, ASFF and "Check next"
every one of them gets.

Scores follow ESCU's 2026 findings: a TTP's finding scores 50 (medium, Splunk's 41-60 band), an
Anomaly's intermediate finding 20 (informational, 0-20); a Hunting search has no finding, and
here scores 10 (informational). None of these detections consults the shared allowlist (ESCU's
searches have none): an expected principal is muted (``MUTES_PARAMETER``, or the finding set to
SUPPRESSED in Security Hub), which is where ESCU's ``*_filter`` macro tuning goes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.requestjson import Cond
from detector.core.spec import (
    AsffSpec,
    Command,
    Context,
    Detection,
    EmailText,
    Example,
    Observable,
    RequestField,
    SampleSpec,
    Step,
    Threshold,
)
from detector.detections import _principal

ACCOUNT = "111122223333"
# When example events happen unless they say otherwise (2026-11-20T10:00:00Z, a Friday): the
# time ``tests/lake.event`` and ``detector.lake.records`` give an event.
T0_MS = 1_795_168_800_000
ARN = f"arn:aws:iam::{ACCOUNT}"
RESEARCH = "https://research.splunk.com/cloud/{id}/"
AUTHOR = "Splunk Threat Research Team (detection); this project (port)"
OBSERVABLES = (
    Observable(field="src_ip", type="IP Address", role="Attacker"),
    Observable(field="user", type="User", role="Victim"),
)
# ESCU's finding score by type -> (confidence, impact, severity): risk = confidence * impact / 100.
_SCORES = {
    "TTP": (100, 50, "medium"),
    "Anomaly": (100, 20, "informational"),
    "Hunting": (100, 10, "informational"),
}
_TACTICS = {
    "T1078": "Defense Evasion",
    "T1098": "Persistence",
    "T1110": "Credential Access",
    "T1136": "Persistence",
    "T1185": "Collection",
    "T1204": "Execution",
    "T1485": "Impact",
    "T1486": "Impact",
    "T1490": "Impact",
    "T1537": "Exfiltration",
    "T1556": "Credential Access",
    "T1580": "Discovery",
    "T1586": "Resource Development",
    "T1621": "Credential Access",
    "T1069": "Discovery",
    "T1685": "Defense Evasion",
    "T1686": "Defense Evasion",
}
_NAME = re.compile(r"[A-Za-z0-9_.:/@+=,-]{1,512}")


def every_row(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
    """The predicate of a detection that reports every call of its operations."""
    n = len(next(iter(rows.values())))
    return pa.array([True] * n, pa.bool_()) if n else pa.array([], pa.bool_())


def no_sql(cols: Mapping[str, str], ctx: Context) -> str | None:
    return None


def status_is(value: str) -> tuple[Callable[..., pa.Array], Callable[..., str | None]]:
    """(predicate, SQL predicate): the call's ``status`` is ``value`` (OCSF: Success, Failure)."""
    from detector.core.sqlparts import literal

    def predicate(rows: Mapping[str, pa.Array], ctx: Context) -> pa.Array:
        return pc.fill_null(pc.equal(rows["status"], value), False)

    def sql(cols: Mapping[str, str], ctx: Context) -> str | None:
        return f"coalesce({cols['status']} = {literal(value)}, false)"

    return predicate, sql


def mitre_url(technique: str) -> str:
    return "https://attack.mitre.org/techniques/" + technique.replace(".", "/") + "/"


def _types(mitre: Mapping[str, str]) -> tuple[str, ...]:
    out = []
    for technique, name in mitre.items():
        tactic = _TACTICS.get(technique.split(".")[0], "Defense Evasion")
        out.append(f"TTPs/{tactic}/{technique}-{name}"[:128])
    return tuple(dict.fromkeys(out))


def _lookup_step(operations: Sequence[str], region: str, window: tuple[str, str] | None) -> Step:
    region_opt = (("--region", region),) if region else ()
    commands = []
    if window:
        commands = [
            Command(
                ("aws", "cloudtrail", "lookup-events"),
                (
                    *region_opt,
                    ("--lookup-attributes", f"AttributeKey=EventName,AttributeValue={op}"),
                    ("--start-time", window[0]),
                    ("--end-time", window[1]),
                ),
            )
            for op in operations[:3]
        ]
    return Step(
        "Every such call around then, in the account the alert names:", commands=tuple(commands)
    )


@dataclass(frozen=True)
class Remedy:
    """A command a responder runs on the resource a call acted on (re-enable, inspect, undo):
    ``words`` then ``option`` with the resource, then ``extra`` options. Only a resource value
    matching ``pattern`` (the shape AWS gives it) goes into the command; the renderer quotes
    every value anyway."""

    text: str
    words: tuple[str, ...]
    option: str
    pattern: str
    extra: tuple[tuple[str, str], ...] = ()


def _remedy_step(alert: Any, remedy: Remedy, sample: str, region: str) -> Step | None:
    """The remedy for the first resource a successful call acted on (else any), if its value
    has the right shape."""
    values = alert.succeeded_values(sample) or alert.sample(sample)[0]
    shape = re.compile(remedy.pattern)
    usable = [v for v in values if len(v) <= 512 and shape.fullmatch(v)]
    if not usable:
        return None
    region_opt = (("--region", region),) if region else ()
    command = Command(remedy.words, (*region_opt, (remedy.option, usable[0]), *remedy.extra))
    notes = (f"({len(usable)} resources: change {remedy.option} for the others)",)
    return Step(remedy.text, commands=(command,), notes=notes if len(usable) > 1 else ())


def _resource_step(alert: Any, label: str, sample: str) -> Step | None:
    values, total, more = alert.sample(sample)
    if not values:
        return None
    shown = [v for v in values if _NAME.fullmatch(v)][:5]
    notes = (
        ()
        if len(shown) == len(values)
        else ("(values of another shape are shown, escaped, in the alert above)",)
    )
    return Step(f"{label} acted on ({total}{'+' if more else ''}):", notes=notes, data=tuple(shown))


def _utc(ms: int) -> str:
    from datetime import UTC, datetime

    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):  # a time outside years 1-9999
        return f"{ms} ms since 1970"


def _shown(value: str, limit: int = 64) -> str:
    """A data value for a line of our own: control characters and non-ASCII escaped (as
    repr does), cut to ``limit`` characters."""
    text = value if value.isascii() and value.isprintable() else repr(value)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def threshold_reason(alert: Any, options: Mapping[str, Any]) -> list[str]:
    """Why a threshold alert fired: the bucket, and what was counted in it (every object)."""
    rule = alert.detection.threshold
    bucket = alert.key.bucket
    if rule is None or bucket is None:
        return []
    seen = sorted(alert.contribution().distinct | alert.totals_distinct)
    value = len(seen) if rule.distinct else alert.count
    lines = [
        f"{value} {rule.label} between {_utc(bucket)} and {_utc(bucket + rule.bucket_ms)} UTC "
        f"(the threshold is {rule.minimum})"
    ]
    if rule.distinct and seen:
        shown = ", ".join(_shown(v) for v in seen[:10])
        more = f" (+{len(seen) - 10} more)" if len(seen) > 10 else ""
        lines.append(f"{rule.label[:1].upper()}{rule.label[1:]}: {shown}{more}")
    return lines


def detection(
    *,
    id: str,
    slug: str,
    name: str,
    version: int,
    escu_type: str,
    mitre: Mapping[str, str],
    description: str,
    operations: tuple[str, ...],
    service: str,
    message: str,
    resource: tuple[str, str, str],
    examples: tuple[Example, ...],
    headline: str,
    verdict: str,
    known_false_positives: str,
    how_to_respond: str,
    analytic_story: tuple[str, ...] = (),
    references: tuple[str, ...] = (),
    predicate: Callable[..., pa.Array] = every_row,
    sql_predicate: Callable[..., str | None] = no_sql,
    predicate_columns: tuple[str, ...] = (),
    request_test: Cond | None = None,
    threshold: Threshold | None = None,
    deviations: tuple[str, ...] = (),
    request_fields: tuple[RequestField, ...] = (),
    remedy: Remedy | None = None,
    date: str = "2026-05-13",
    metric: str = "",
) -> Detection:
    """A ported ESCU detection.

    ``resource``: (column, request key, label) of what the call acts on (the trail, the
    bucket); it is sampled, listed in the email and ASFF, and a successful call on a new one
    sends the alert again within its window. ``request_fields``: more values cut out of the
    request (for ``predicate``). ``operations`` empty: every operation (the predicate then
    decides alone). ``verdict``: the heading of a principal whose call succeeded ("TRAIL
    DELETED"); a failed one reads "ATTEMPTED".
    """
    if escu_type not in _SCORES:
        raise ValueError(f"{slug}: unknown ESCU type {escu_type!r}")
    confidence, impact, severity = _SCORES[escu_type]
    column, key, label = resource
    plural = label[0].upper() + label[1:]
    sample = SampleSpec(f"{column}s", column, plural, f"succeeded_{column}s")
    fields = (RequestField(column, key), *request_fields) if key else request_fields
    ops = " / ".join(operations) if operations else "API"
    first_technique = next(iter(mitre))

    def check_next(alert: Any, region: str, window: tuple[str, str] | None) -> list[Step]:
        steps = []
        found = _resource_step(alert, plural, sample.name)
        if found is not None:
            steps.append(found)
        fix = _remedy_step(alert, remedy, sample.name, region) if remedy is not None else None
        if fix is not None:
            steps.append(fix)
        if operations:
            steps.append(_lookup_step(operations, region, window))
        steps += _principal.steps(alert, "call")
        return steps

    def trust_steps(context: Mapping[str, str]) -> list[Step]:
        name = context.get("mutes_parameter", "") or "<mute list parameter>"
        return [
            Step(
                "Set the finding to SUPPRESSED in Security Hub (escalations still email), or "
                "add a line to the mute list, which expires on its own (at most 90 days):",
                data=("<principal ARN> until=<YYYY-MM-DD> why=<reason>",),
                notes=(f"(the mute list is the SSM parameter {name})",),
            )
        ]

    return Detection(
        id=id,
        slug=slug,
        name=name,
        version=version,
        date=date,
        author=AUTHOR,
        description=description,
        mitre_attack_ids=tuple(mitre),
        mitre_names=dict(mitre),
        analytic_story=analytic_story,
        confidence=confidence,
        impact=impact,
        severity=severity,
        message_template=message,
        references=(mitre_url(first_technique), RESEARCH.format(id=id), *references),
        observables=OBSERVABLES,
        known_false_positives=known_false_positives,
        how_to_respond=how_to_respond,
        operations=operations,
        predicate_columns=predicate_columns,
        predicate=predicate,
        sql_predicate=sql_predicate,
        request_fields=fields,
        samples=(sample,),
        escalate_on=sample.name,
        new_value_reason=f"new_{column}",
        metric=metric,
        uses_allowlist=False,
        escu_type=escu_type,
        request_test=request_test,
        threshold=threshold,
        deviations=deviations,
        email=EmailText(
            headline=headline,
            subject=f"{name.removeprefix('ASL AWS ')}: ",
            summary=(
                f"{{calls}} {ops} call(s) by {{principals}} principal(s); {{succeeded}} succeeded."
            ),
            pushed="{count} principal(s) succeeded: they are listed first.",
            verdict_success=verdict,
            verdict_attempt="ATTEMPTED",
            calls=f"{ops} calls",
            calls_noun=f"{ops} call(s)",
            rest_success=", {count} succeeded",
            all_failed="No call succeeded: nothing was changed, but the credentials were used.",
            outcome_unknown=(
                "No call is known to have succeeded: the outcome of some was not recorded."
            ),
            first_success="Again within the alert window: the first success after failures.",
            new_value=f"Again within the alert window: a successful call on a new {label}.",
            check_next=check_next,
            trust_title="How to silence an expected principal",
            trust_steps=trust_steps,
            none_found=f"No findings for {name}.",
            reason=threshold_reason if threshold is not None else None,
            found=f"{{findings}} finding(s), {{calls}} {ops} call(s).",
        ),
        asff=AsffSpec(
            types=_types(mitre),
            api=operations[0] if operations else "*",
            service=service,
            lead=(
                f"{{count}} {ops} call(s) ({{succeeded}} succeeded, {{failed}} failed) by {{who}}."
            ),
            listings=((plural, sample.name, 80),),
            resources=lambda names, partition, region, account, limit: [],
            resource_sample=sample.name,
        ),
        examples=examples,
    )


def user(name: str) -> dict[str, Any]:
    """Example event fields: a call by the IAM user ``name``."""
    return {
        "arn": f"{ARN}:user/{name}",
        "principal_id": "AIDAEXAMPLEUSER",
        "user_type": "IAMUser",
        "user_name": name,
        "credential_uid": "AKIAEXAMPLEKEY000001",
        "session_issuer": None,
        "session_created_ms": None,
    }


def call(operation: str, service: str, **fields: Any) -> dict[str, Any]:
    """Example event fields: ``operation`` of ``service`` (by the default assumed CI role)."""
    return {
        "operation": operation,
        "service": service,
        "user_agent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64",
        "response_json": None,
    } | fields
